-- expired.lua: list leases whose deadline has passed, by Redis server time (read only).
-- KEYS[1] leases zset
-- ARGV[1] key prefix  ARGV[2] limit
-- Touches: reads <prefix>t:<id> hashes.
-- Returns: {now_ms, id, fence, attempts, holder, ...} for up to limit expired leases.
local prefix, limit = ARGV[1], tonumber(ARGV[2])
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {now}
local ids = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", now, "LIMIT", 0, limit)
for _, id in ipairs(ids) do
  local h = redis.call("HMGET", prefix .. "t:" .. id, "fence", "att", "holder")
  out[#out + 1] = id
  out[#out + 1] = h[1] or "0"
  out[#out + 1] = h[2] or "0"
  out[#out + 1] = h[3] or ""
end
return out
