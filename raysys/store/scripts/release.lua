-- release.lua: a holder hands back leases it never started (a draining worker's queue).
-- uses: lib
-- KEYS[1] leases zset  KEYS[2] counts hash  KEYS[3] stats hash  KEYS[4] audit stream
-- ARGV[1] key prefix  ARGV[2] holder  ARGV[3] audit on  ARGV[4] audit max length
-- ARGV[5..] pairs: id, fence
-- Touches: <prefix>t:<id> hashes (state, holder, att, and rl: "<fence>|<holder>" of the lease
--   last released), the kind queues and counts (lib.lua), and the KEYS above.
-- Returns: {now_ms, 1 (back in the queue; also when this holder released it under that fence
--   before: a resent call, answered as the first send, nothing done twice) or 0 (not this
--   holder's lease under that fence) each}.
-- A released task returns to pending at its old place (priority, then submission order) and
-- the attempt the grant counted is given back: it never ran. Its fence is spent, so a late
-- commit under it is rejected like any stale commit.
local prefix, holder, audit, maxlen = ARGV[1], ARGV[2], ARGV[3] == "1", ARGV[4]
local now = server_ms()
local out, released = {now}, 0
for i = 5, #ARGV, 2 do
  local id, fence = ARGV[i], ARGV[i + 1]
  local tk = prefix .. "t:" .. id
  local h = redis.call("HMGET", tk, "state", "fence", "holder", "sc", "att", "fin", "rl")
  if h[1] == "leased" and h[2] == fence and h[3] == holder and not h[6] then
    redis.call("ZREM", KEYS[1], id)
    left_flight(prefix, id)
    local att = math.max(tonumber(h[5] or "1") - 1, 0)
    redis.call("HSET", tk, "state", "pending", "holder", "", "att", att,
      "rl", fence .. "|" .. holder)
    enqueue(prefix, kind_of(prefix, id), h[4], id)
    released = released + 1
    out[#out + 1] = 1
  elseif h[7] == fence .. "|" .. holder then
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if released > 0 then
  redis.call("HINCRBY", KEYS[2], "leased", -released)
  redis.call("HINCRBY", KEYS[2], "pending", released)
  redis.call("HINCRBY", KEYS[3], "released", released)
  if audit then
    redis.call("XADD", KEYS[4], "MAXLEN", "~", maxlen, "*", "ev", "released", "holder", holder,
      "count", released)
  end
end
return out
