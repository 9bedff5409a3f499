-- expire.lua: take back expired leases (the reaper's second step).
-- uses: lib
-- KEYS[1] leases zset  KEYS[2] counts hash  KEYS[3] stats hash  KEYS[4] audit stream
-- ARGV[1] key prefix  ARGV[2] audit on  ARGV[3] audit max length
-- ARGV[4..] per lease, 4 values: id, fence, action ("requeue" | "dead"), signed final record
-- Touches: <prefix>t:<id> hashes, the kind queues and counts (lib.lua), and the KEYS above.
-- Returns: {now_ms, 1 (taken back; also when the task's newest history entry says it expired
--   under that fence: a resent call, answered as the first send, nothing done twice) or 0 (no
--   longer expired under that fence) per lease}.
-- An entry in the leases set whose task is not leased at all is stale: it is removed, so stale
-- entries can never fill the reaper's page and hide real expired leases. A task this script
-- marks dead is flagged "reaped": a late commit by its old holder is then refused, not
-- acknowledged as a resend.
-- A lease is taken back only if it is still leased under the same fence and its deadline has
-- passed by server time, so a renewal or commit racing the reaper wins cleanly.
local prefix, audit, maxlen = ARGV[1], ARGV[2] == "1", ARGV[3]
local now = server_ms()
local out = {now}
local requeued, dead = 0, 0
for i = 4, #ARGV, 4 do
  local id, fence, action, fin = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local tk = prefix .. "t:" .. id
  local h = redis.call("HMGET", tk, "state", "fence", "sc", "holder", "fin", "att", "st")
  local dl = tonumber(redis.call("ZSCORE", KEYS[1], id) or "0")
  if h[1] == "leased" and h[2] == fence and dl > 0 and dl <= now and not h[5] then
    redis.call("ZREM", KEYS[1], id)
    left_flight(prefix, id)
    local note = entry("expired", h[6], fence, h[4], h[7], now, "lease expired")
    if action == "dead" then
      redis.call("HSET", tk, "state", "dead", "fin", fin, "holder", "", "reaped", "1",
        "err", "lease expired on the last attempt", "end", now, history_field(tk), note)
      finished(id, "dead", kind_of(prefix, id), now)
      dead = dead + 1
    else
      redis.call("HSET", tk, "state", "pending", "holder", "", history_field(tk), note)
      enqueue(prefix, kind_of(prefix, id), h[3], id)
      requeued = requeued + 1
    end
    if audit then
      redis.call("XADD", KEYS[4], "MAXLEN", "~", maxlen, "*", "ev", "lease_expired", "id", id,
        "holder", h[4] or "", "fence", fence, "action", action)
    end
    out[#out + 1] = 1
  elseif string.match(last_entry(tk) or "", "^expired|[^|]*|(%d+)|") == fence then
    out[#out + 1] = 1
  else
    if h[1] ~= "leased" then redis.call("ZREM", KEYS[1], id) end
    out[#out + 1] = 0
  end
end
local taken = requeued + dead
if taken > 0 then
  redis.call("HINCRBY", KEYS[2], "leased", -taken)
  if requeued > 0 then
    redis.call("HINCRBY", KEYS[2], "pending", requeued)
    redis.call("HINCRBY", KEYS[3], "retries", requeued)
  end
  if dead > 0 then redis.call("HINCRBY", KEYS[2], "dead", dead) end
  redis.call("HINCRBY", KEYS[3], "expired", taken)
end
flush_finished(prefix)
return out
