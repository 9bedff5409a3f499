-- restore_chunk.lua: restore one page of keys of a verified snapshot, under the restoring marker.
-- KEYS[1] restoring marker ("<snapshot id>|<token>|<server ms of the last page>")
-- ARGV[1] key prefix  ARGV[2] owner "<snapshot id>|<token>" (must hold the marker)
-- ARGV[3..] per key, 3 values: name after the prefix, ttl ms (0 = none), DUMP payload
-- Returns: {1, keys restored} (the marker's time moves on: this restore is alive) or {0} (the
--   marker is not this restore's: stop) or {-1, name, error} when Redis refused a payload (the
--   keys of this page restored before it are deleted again here; the caller deletes the
--   earlier pages' with restore_undo.lua).
local current, owner = redis.call("GET", KEYS[1]), ARGV[2]
if not current or string.sub(current, 1, #owner + 1) ~= owner .. "|" then return {0} end
local done = {}
for i = 3, #ARGV, 3 do
  local key = ARGV[1] .. ARGV[i]
  local reply = redis.pcall("RESTORE", key, ARGV[i + 1], ARGV[i + 2], "REPLACE")
  if type(reply) == "table" and reply.err then
    for j = 1, #done, 1000 do redis.call("DEL", unpack(done, j, math.min(j + 999, #done))) end
    return {-1, ARGV[i], reply.err}
  end
  done[#done + 1] = key
end
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call("SET", KEYS[1], owner .. "|" .. now)
return {1, #done}
