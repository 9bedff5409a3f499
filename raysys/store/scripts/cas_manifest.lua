-- cas_manifest.lua: replace a stored snapshot's signed manifest if it is still exactly as read
-- (re-signing under a new key during rotation; the data and its digest do not change).
-- KEYS[1] the snapshot hash (<prefix>snap:<id>)
-- ARGV[1] expected manifest bytes  ARGV[2] new manifest bytes
-- Touches: KEYS[1] field m.
-- Returns: 1 replaced (also when it holds the new bytes already, freshly signed: this call
--   resent; nothing is written again), 0 conflict (changed or deleted meanwhile).
local m = redis.call("HGET", KEYS[1], "m")
if m == ARGV[2] then return 1 end
if m ~= ARGV[1] then return 0 end
redis.call("HSET", KEYS[1], "m", ARGV[2])
return 1
