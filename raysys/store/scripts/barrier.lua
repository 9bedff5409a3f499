-- barrier.lua: hold every task-state script off the namespace while a snapshot is copied in
-- chunks (the consistency mechanism of a chunked save: nothing changes between the first
-- chunk and the last).
-- KEYS[1] barrier key (string "<holder>|<server ms it was raised>", with an expiry)
-- KEYS[2] leases zset  KEYS[3] restoring marker (no save while a restore runs)
-- KEYS[4] this holder's reply key (<prefix>reply:barrier:<holder>): "off" leaves the number of
--   leases it extended there for two minutes, so that "off" resent answers the same
-- ARGV[1] "on" | "refresh" | "off"   ARGV[2] holder (the snapshot id)   ARGV[3] expiry ms
-- Every script that changes task state starts with a check of this key (raysys/store/lua.py
-- puts it there) and fails with ERR_BARRIER while it exists; its caller waits and sends it again.
-- Returns: on -> {1, server ms it was raised} (also to "on" resent: ARGV[2] holds it already)
--   or {0, current holder} ("restore <id>" while a restore runs); refresh -> 1 or 0 (not held
--   by ARGV[2]: it expired, and writes may have happened); off -> {1, leases extended} (also to
--   "off" resent: KEYS[4]; nothing moved twice) or {0} (it expired before).
-- "off" moves every lease deadline on by the time the barrier stood, so no lease expires for a
-- pause that stopped its holder from renewing it.
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op, holder, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local current = redis.call("GET", KEYS[1])
local bar = current and string.find(current, "|", 1, true)
local owner = bar and string.sub(current, 1, bar - 1)
if op == "on" then
  if current and owner == holder then return {1, tonumber(string.sub(current, bar + 1))} end
  if current then return {0, owner or current} end
  local restoring = redis.call("GET", KEYS[3])
  if restoring then return {0, "restore " .. string.match(restoring, "^[^|]*")} end
  redis.call("SET", KEYS[1], holder .. "|" .. now, "PX", ttl)
  return {1, now}
end
if owner ~= holder then
  if op ~= "off" then return 0 end
  local moved = redis.call("GET", KEYS[4])
  return moved and {1, tonumber(moved)} or {0}
end
if op == "refresh" then
  redis.call("PEXPIRE", KEYS[1], ttl)
  return 1
end
local since = tonumber(string.sub(current, bar + 1))
redis.call("DEL", KEYS[1])
local held = redis.call("ZRANGE", KEYS[2], 0, -1, "WITHSCORES")
local moved = {}
for i = 1, #held, 2 do
  moved[#moved + 1] = tonumber(held[i + 1]) + (now - since)
  moved[#moved + 1] = held[i]
end
for j = 1, #moved, 2000 do
  redis.call("ZADD", KEYS[2], "XX", unpack(moved, j, math.min(j + 1999, #moved)))
end
redis.call("SET", KEYS[4], #moved / 2, "PX", 120000)
return {1, #moved / 2}
