-- cancel.lua: cancel one task that has not reached a final state.
-- KEYS[1] pending zset  KEYS[2] delayed zset  KEYS[3] leases zset  KEYS[4] counts hash
-- KEYS[5] audit stream
-- ARGV[1] key prefix  ARGV[2] audit on  ARGV[3] audit max length  ARGV[4] id
-- ARGV[5] signed final record
-- Touches: <prefix>t:<id>, and the KEYS above.
-- Returns: the state the task was in ("" if unknown). Only pending, failed and leased tasks
--   change (to cancelled); a leased task's holder then fails its fence check on commit.
local prefix, audit, maxlen, id, fin = ARGV[1], ARGV[2] == "1", ARGV[3], ARGV[4], ARGV[5]
local tk = prefix .. "t:" .. id
local h = redis.call("HMGET", tk, "state", "fin")
local state = h[1]
if not state then return "" end
if h[2] or not (state == "pending" or state == "failed" or state == "leased") then
  return state
end
redis.call("ZREM", KEYS[1], id)
redis.call("ZREM", KEYS[2], id)
redis.call("ZREM", KEYS[3], id)
redis.call("HSET", tk, "state", "cancelled", "fin", fin, "holder", "")
redis.call("HINCRBY", KEYS[4], state, -1)
redis.call("HINCRBY", KEYS[4], "cancelled", 1)
if audit then
  redis.call("XADD", KEYS[5], "MAXLEN", "~", maxlen, "*", "ev", "cancelled", "id", id,
    "from", state)
end
return state
