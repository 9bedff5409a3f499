-- cancel.lua: cancel one task that has not reached a final state.
-- uses: lib
-- KEYS[1] delayed zset  KEYS[2] leases zset  KEYS[3] counts hash  KEYS[4] audit stream
-- KEYS[5] start-by zset  KEYS[6] scheduled zset (delayed tasks not yet due)
-- ARGV[1] key prefix  ARGV[2] audit on  ARGV[3] audit max length  ARGV[4] id
-- ARGV[5] signed final record  ARGV[6] how long (ms) a holder's cancel list is kept
-- Touches: <prefix>t:<id>, the kind queues and counts (lib.lua), <prefix>cancel:<holder> (a
--   list of cancelled ids the holder of a lease watches, so its handler is told within a
--   second; it expires after ARGV[6] ms), and the KEYS above.
-- Returns: the state the task was in ("" if unknown). Only scheduled, pending, failed and
--   leased tasks change (to cancelled); a leased task's holder is told through its cancel list,
--   and its commit fails the fence check anyway. A final task is left as it is. A task this
--   call cancelled (its fin is ARGV[5], signed for this call) is a resend: answered with the
--   state it was in (from its history entry), nothing done twice.
local prefix, audit, maxlen, id, fin = ARGV[1], ARGV[2] == "1", ARGV[3], ARGV[4], ARGV[5]
local keep_ms = tonumber(ARGV[6])
local tk = prefix .. "t:" .. id
local h = redis.call("HMGET", tk, "state", "fin", "holder", "att", "fence", "st")
local state = h[1]
if not state then return "" end
if h[2] == fin then
  return string.match(last_entry(tk) or "", "^cancelled|.*|while (%a+)$") or "leased"
end
if h[2] or not (state == "pending" or state == "failed" or state == "leased"
    or state == "scheduled") then
  return state
end
local now = server_ms()
if state == "pending" then dequeue(prefix, kind_of(prefix, id), id) end
if state == "failed" then redis.call("ZREM", KEYS[1], id) end
if state == "scheduled" then redis.call("ZREM", KEYS[6], id) end
if state == "leased" then
  redis.call("ZREM", KEYS[2], id)
  left_flight(prefix, id)
  if h[3] and h[3] ~= "" then
    local list = prefix .. "cancel:" .. h[3]
    redis.call("RPUSH", list, id)
    redis.call("PEXPIRE", list, keep_ms)
  end
end
redis.call("ZREM", KEYS[5], id)
local note = state == "leased" and entry("cancelled", h[4], h[5], h[3], h[6], now, "")
  or entry("cancelled", "", "", "", "", now, "while " .. state)
redis.call("HSET", tk, "state", "cancelled", "fin", fin, "holder", "", "end", now,
  history_field(tk), note)
finished(id, "cancelled", kind_of(prefix, id), now)
flush_finished(prefix)
redis.call("HINCRBY", KEYS[3], state, -1)
redis.call("HINCRBY", KEYS[3], "cancelled", 1)
if audit then
  redis.call("XADD", KEYS[4], "MAXLEN", "~", maxlen, "*", "ev", "cancelled", "id", id,
    "from", state, "holder", h[3] or "")
end
return state
