-- renew.lua: extend leases the holder still owns.
-- KEYS[1] leases zset   KEYS[2] stats hash
-- ARGV[1] key prefix  ARGV[2] holder  ARGV[3] ttl ms  ARGV[4..] pairs: id, fence
-- Touches: reads <prefix>t:<id>; the deadline lives only in the leases zset.
-- Returns: {now_ms, deadline_ms or 0 per pair}; 0 means the lease is lost (reaped, re-leased,
--   finished or cancelled): the holder must stop and must not commit.
local prefix, holder, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out, renewed = {now}, 0
for i = 4, #ARGV, 2 do
  local id, fence = ARGV[i], ARGV[i + 1]
  local tk = prefix .. "t:" .. id
  local h = redis.call("HMGET", tk, "state", "fence", "holder")
  if h[1] == "leased" and h[2] == fence and h[3] == holder then
    local dl = now + ttl
    redis.call("ZADD", KEYS[1], "XX", dl, id)
    out[#out + 1] = dl
    renewed = renewed + 1
  else
    out[#out + 1] = 0
  end
end
if renewed > 0 then redis.call("HINCRBY", KEYS[2], "renewed", renewed) end
return out
