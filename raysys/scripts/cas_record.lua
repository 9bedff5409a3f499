-- cas_record.lua: replace a task's signed record if it is still exactly the bytes read.
-- (The optimistic path behind re-signing queued records; the caller retries on conflict.)
-- KEYS[1] stats hash
-- ARGV[1] key prefix  ARGV[2] id  ARGV[3] expected record bytes  ARGV[4] new record bytes
-- Touches: <prefix>t:<id> (field rec).
-- Returns: 1 replaced, 0 conflict (record changed, task gone, or no longer queued).
local tk = ARGV[1] .. "t:" .. ARGV[2]
local h = redis.call("HMGET", tk, "rec", "state")
if h[1] ~= ARGV[3] or (h[2] ~= "pending" and h[2] ~= "failed") then return 0 end
redis.call("HSET", tk, "rec", ARGV[4])
return 1
