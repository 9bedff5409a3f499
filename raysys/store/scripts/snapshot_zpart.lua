-- snapshot_zpart.lua: copy one part of a large sorted set for a chunked snapshot (read only,
-- but for the barrier's expiry, refreshed here). A set too large to DUMP within a few ms (an
-- index of a million tasks) is copied as parts, and restored part by part with ZADD.
-- KEYS[1] barrier key  KEYS[2] the sorted set
-- ARGV[1] the snapshot id holding the barrier  ARGV[2] barrier expiry ms
-- ARGV[3] first rank  ARGV[4] members per part
-- Returns: {1, member, score, ...} (scores as Redis prints them: exact), or {0} when the
--   barrier is no longer this snapshot's (the save is abandoned).
local current = redis.call("GET", KEYS[1])
if not current or string.sub(current, 1, #ARGV[1] + 1) ~= ARGV[1] .. "|" then return {0} end
redis.call("PEXPIRE", KEYS[1], tonumber(ARGV[2]))
local first = tonumber(ARGV[3])
local part = redis.call("ZRANGE", KEYS[2], first, first + tonumber(ARGV[4]) - 1, "WITHSCORES")
table.insert(part, 1, 1)
return part
