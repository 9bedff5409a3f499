-- unstarted.lua: end tasks that were not started within their schedule-to-start limit (the
-- reaper's second step, after it read the overdue ids from the start-by zset and signed a
-- ``dead`` completion record for each).
-- uses: lib
-- KEYS[1] delayed zset  KEYS[2] start-by zset  KEYS[3] counts hash  KEYS[4] audit stream
-- KEYS[5] scheduled zset
-- ARGV[1] key prefix  ARGV[2] audit on  ARGV[3] audit max length  ARGV[4] error text
-- ARGV[5..] pairs: id, signed final record
-- Touches: <prefix>t:<id> hashes, the kind queues and counts (lib.lua), and the KEYS above.
-- Returns: {now_ms, 1 (made dead; also when its fin is already ARGV's, signed for this call: a
--   resent call, answered as the first send, nothing done twice) or 0 (started meanwhile, or
--   final) per id}. Only a task that is still pending, or failed and waiting to retry, is
--   ended; its start-by entry goes either way, unless its deadline has not passed yet (a
--   resubmission moved it).
local prefix, audit, maxlen, err = ARGV[1], ARGV[2] == "1", ARGV[3], ARGV[4]
local now = server_ms()
local out, ended = {now}, {pending = 0, failed = 0, scheduled = 0}
for i = 5, #ARGV, 2 do
  local id, fin = ARGV[i], ARGV[i + 1]
  local by = tonumber(redis.call("ZSCORE", KEYS[2], id) or "0")
  local tk = prefix .. "t:" .. id
  local h = redis.call("HMGET", tk, "state", "fin")
  if by > 0 and by <= now and not h[2] and (h[1] == "pending" or h[1] == "failed"
      or h[1] == "scheduled") then
    if h[1] == "pending" then dequeue(prefix, kind_of(prefix, id), id) end
    if h[1] == "failed" then redis.call("ZREM", KEYS[1], id) end
    if h[1] == "scheduled" then redis.call("ZREM", KEYS[5], id) end
    redis.call("HSET", tk, "state", "dead", "fin", fin, "err", err, "end", now,
      history_field(tk), entry("not_started", "", "", "", "", now, err))
    finished(id, "dead", kind_of(prefix, id), now)
    ended[h[1]] = ended[h[1]] + 1
    if audit then
      redis.call("XADD", KEYS[4], "MAXLEN", "~", maxlen, "*", "ev", "not_started", "id", id,
        "from", h[1])
    end
    out[#out + 1] = 1
  elseif h[2] == fin then
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
  if by > 0 and by <= now then redis.call("ZREM", KEYS[2], id) end
end
local total = ended.pending + ended.failed + ended.scheduled
if total > 0 then
  for state, k in pairs(ended) do
    if k > 0 then redis.call("HINCRBY", KEYS[3], state, -k) end
  end
  redis.call("HINCRBY", KEYS[3], "dead", total)
end
flush_finished(prefix)
return out
