-- restore_chunk.lua: restore one page of keys of a verified snapshot, under the restoring marker.
-- KEYS[1] restoring marker ("<snapshot id>|<token>|<server ms of the last page>")
-- ARGV[1] key prefix  ARGV[2] owner "<snapshot id>|<token>" (must hold the marker)
-- ARGV[3..] per key, 3 values: name after the prefix, ttl ms (0 = none), DUMP payload; or, for
--   a part of a large sorted set (raysys/snapshots/format.py), "\0RSZ" and a msgpack array
--   member, score, member, score, ... added with ZADD (the parts of one set add up)
-- Returns: {1, keys restored} (the marker's time moves on: this restore is alive) or {0} (the
--   marker is not this restore's: stop) or {-1, name, error} when Redis refused a payload (the
--   keys of this page restored before it are deleted again here; the caller deletes the
--   earlier pages' with restore_undo.lua).
local current, owner = redis.call("GET", KEYS[1]), ARGV[2]
if not current or string.sub(current, 1, #owner + 1) ~= owner .. "|" then return {0} end
local done = {}
for i = 3, #ARGV, 3 do
  local key, ttl, payload = ARGV[1] .. ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local reply
  if string.sub(payload, 1, 4) == "\0RSZ" then
    local ok, items = pcall(cmsgpack.unpack, string.sub(payload, 5))
    if not ok or type(items) ~= "table" or #items % 2 ~= 0 then
      reply = {err = "malformed sorted set part"}
    else
      local args = {}
      for j = 1, #items, 2 do
        args[#args + 1] = items[j + 1]
        args[#args + 1] = items[j]
        if #args >= 2000 or j + 1 >= #items then
          reply = redis.pcall("ZADD", key, unpack(args))
          if type(reply) == "table" and reply.err then break end
          args = {}
        end
      end
      if reply == nil then reply = 0 end
      if not (type(reply) == "table" and reply.err) and ttl > 0 then
        redis.call("PEXPIRE", key, ttl)
      end
    end
  else
    reply = redis.pcall("RESTORE", key, ttl, payload, "REPLACE")
  end
  if type(reply) == "table" and reply.err then
    redis.call("DEL", key)
    for j = 1, #done, 1000 do redis.call("DEL", unpack(done, j, math.min(j + 999, #done))) end
    return {-1, ARGV[i], reply.err}
  end
  done[#done + 1] = key
end
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call("SET", KEYS[1], owner .. "|" .. now)
return {1, #done}
