-- snapshot_write.lua: restore a verified snapshot into an empty namespace, all or nothing.
-- KEYS[1] fence counter  KEYS[2] run id  KEYS[3] audit stream
-- ARGV[1] key prefix "{raysys:<ns>}:"  ARGV[2] SCAN pattern matching the prefix (glob-escaped)
-- ARGV[3] SCAN count hint  ARGV[4] the snapshot's fence counter  ARGV[5] snapshot id
-- ARGV[6] audit on ("1"/"0")  ARGV[7] audit max length
-- ARGV[8..] per key, 3 values: suffix after the prefix, ttl ms (0 = none), DUMP payload
-- Touches: every <prefix><suffix> key named, and the KEYS above.
-- Returns: {1, keys restored, fence counter now}; or {0, task keys, other keys, sample, ...}
--   when the namespace is not empty (nothing written); or {-1, suffix, error} when Redis
--   refused a payload (e.g. a DUMP from a newer server): the keys restored so far are deleted
--   again before the script returns, so nobody sees a partial restore.
-- "Empty" ignores the snapshot keys ("snaps", "snap:*"), the fence counter, the run id and the
-- wake-up list ("wake": a hint for the Distributor, not state).
-- The fence counter becomes max(current, the snapshot's). The run id is deleted, never
-- restored: the next acquire then raises fences to the server-clock floor (acquire.lua), above
-- any fence granted after the snapshot was taken.
local prefix, pattern, count = ARGV[1], ARGV[2], ARGV[3]
local snap_fence, snap_id, audit, maxlen = tonumber(ARGV[4]), ARGV[5], ARGV[6] == "1", ARGV[7]
local plen = #prefix
local function ignored(key)
  local suffix = string.sub(key, plen + 1)
  return key == KEYS[1] or key == KEYS[2] or suffix == "snaps" or suffix == "wake"
    or string.sub(suffix, 1, 5) == "snap:"
end
local seen, tasks, others, sample = {}, 0, 0, {}
local cursor = "0"
repeat
  local page = redis.call("SCAN", cursor, "MATCH", pattern, "COUNT", count)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    if not seen[key] and string.sub(key, 1, plen) == prefix and not ignored(key) then
      seen[key] = true
      if string.sub(key, plen + 1, plen + 2) == "t:" then tasks = tasks + 1 else others = others + 1 end
      if #sample < 3 then sample[#sample + 1] = string.sub(key, plen + 1) end
    end
  end
until cursor == "0"
if tasks + others > 0 then
  local out = {0, tasks, others}
  for _, s in ipairs(sample) do out[#out + 1] = s end
  return out
end
local restored = {}
for i = 8, #ARGV, 3 do
  local key = prefix .. ARGV[i]
  if not ignored(key) then
    local reply = redis.pcall("RESTORE", key, ARGV[i + 1], ARGV[i + 2])
    if type(reply) == "table" and reply.err then
      for j = 1, #restored, 1000 do
        redis.call("DEL", unpack(restored, j, math.min(j + 999, #restored)))
      end
      return {-1, ARGV[i], reply.err}
    end
    restored[#restored + 1] = key
  end
end
local fence = math.max(tonumber(redis.call("GET", KEYS[1]) or "0"), snap_fence)
redis.call("SET", KEYS[1], string.format("%d", fence))
redis.call("DEL", KEYS[2])
if audit then
  redis.call("XADD", KEYS[3], "MAXLEN", "~", maxlen, "*", "ev", "snapshot_restored",
    "snapshot", snap_id, "keys", #restored, "fence", string.format("%d", fence))
end
return {1, #restored, string.format("%d", fence)}
