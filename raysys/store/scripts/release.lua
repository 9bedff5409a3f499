-- release.lua: a holder hands back leases it never started (a draining worker's queue).
-- KEYS[1] pending zset  KEYS[2] leases zset  KEYS[3] counts hash  KEYS[4] stats hash
-- KEYS[5] audit stream
-- ARGV[1] key prefix  ARGV[2] holder  ARGV[3] audit on  ARGV[4] audit max length
-- ARGV[5..] pairs: id, fence
-- Touches: <prefix>t:<id> hashes, and the KEYS above.
-- Returns: {now_ms, 1 (back in the queue) or 0 (not this holder's lease under that fence) each}.
-- A released task returns to pending at its old place (priority, then submission order) and
-- the attempt the grant counted is given back: it never ran. Its fence is spent, so a late
-- commit under it is rejected like any stale commit.
local prefix, holder, audit, maxlen = ARGV[1], ARGV[2], ARGV[3] == "1", ARGV[4]
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out, released = {now}, 0
for i = 5, #ARGV, 2 do
  local id, fence = ARGV[i], ARGV[i + 1]
  local tk = prefix .. "t:" .. id
  local h = redis.call("HMGET", tk, "state", "fence", "holder", "sc", "att", "fin")
  if h[1] == "leased" and h[2] == fence and h[3] == holder and not h[6] then
    redis.call("ZREM", KEYS[2], id)
    local att = math.max(tonumber(h[5] or "1") - 1, 0)
    redis.call("HSET", tk, "state", "pending", "holder", "", "att", att)
    redis.call("ZADD", KEYS[1], h[4], id)
    released = released + 1
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if released > 0 then
  redis.call("HINCRBY", KEYS[3], "leased", -released)
  redis.call("HINCRBY", KEYS[3], "pending", released)
  redis.call("HINCRBY", KEYS[4], "released", released)
  if audit then
    redis.call("XADD", KEYS[5], "MAXLEN", "~", maxlen, "*", "ev", "released", "holder", holder,
      "count", released)
  end
end
return out
