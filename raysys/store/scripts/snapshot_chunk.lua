-- snapshot_chunk.lua: copy one page of keys for a chunked snapshot (read only, but for the
-- barrier's expiry, refreshed here).
-- KEYS[1] barrier key  KEYS[2..] the keys of this page
-- ARGV[1] the snapshot id holding the barrier  ARGV[2] barrier expiry ms
-- ARGV[3] a sorted set with more members than this is not dumped here (it would take long):
--   its pair is -3 and its PTTL, and snapshot_zpart.lua copies it in parts
-- Returns: {1, pttl, dump, pttl, dump, ...} one pair per key (a key gone meanwhile: pttl -2 and
--   an empty dump; it cannot happen while the barrier holds), or {0} when the barrier is no
--   longer this snapshot's (it expired: writes may have happened, so the copy is not one
--   instant: the save is abandoned).
local current = redis.call("GET", KEYS[1])
if not current or string.sub(current, 1, #ARGV[1] + 1) ~= ARGV[1] .. "|" then return {0} end
redis.call("PEXPIRE", KEYS[1], tonumber(ARGV[2]))
local out = {1}
local big = tonumber(ARGV[3])
for i = 2, #KEYS do
  local key = KEYS[i]
  if redis.call("TYPE", key).ok == "zset" and redis.call("ZCARD", key) > big then
    out[#out + 1] = -3
    out[#out + 1] = tostring(redis.call("PTTL", key))
  else
    local dump = redis.call("DUMP", key)
    if dump then
      out[#out + 1] = redis.call("PTTL", key)
      out[#out + 1] = dump
    else
      out[#out + 1] = -2
      out[#out + 1] = ""
    end
  end
end
return out
