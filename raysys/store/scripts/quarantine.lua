-- quarantine.lua: set aside leased tasks whose records failed verification (never executed),
-- or defer those signed by a key this node does not know yet (a rotation still propagating),
-- or put back to wait those whose signed record says they are not due yet (a tampered or
-- too-early scheduled-set entry: a delayed task never runs before its signed time).
-- uses: lib
-- KEYS[1] leases zset  KEYS[2] counts hash  KEYS[3] stats hash  KEYS[4] audit stream
-- KEYS[5] scheduled zset
-- ARGV[1] key prefix  ARGV[2] audit max length  ARGV[3] deferrals allowed per task
-- ARGV[4..] per task, 4 values: id, fence, reason code (bad_signature, copied_record, ...),
--   action ("quarantine" | "defer" | "wait:<due ms>")
-- Touches: <prefix>t:<id> hashes (state, att, err, defer), the kind queues and counts
--   (lib.lua), and the KEYS above.
-- Returns: per task 1 (quarantined; also when already quarantined under that fence: a resent
--   call, answered as the first send without counting again), 2 (deferred: back to pending,
--   the attempt not counted; or back to scheduled until its due time),
--   0 (no longer leased under that fence: nothing done; also a resent deferral, which the
--   acquirer does not act on).
-- A deferral past ARGV[3] quarantines instead, so a record under a bogus key id cannot cycle.
local prefix, maxlen, max_defer = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = server_ms()
local out, quarantined, deferred, waiting = {}, 0, 0, 0
for i = 4, #ARGV, 4 do
  local id, fence, reason, action = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local tk = prefix .. "t:" .. id
  local h = redis.call("HMGET", tk, "state", "fence", "att", "sc")
  if h[1] == "leased" and h[2] == fence then
    redis.call("ZREM", KEYS[1], id)
    left_flight(prefix, id)
    local due = string.match(action, "^wait:(%d+)$")
    if due then
      redis.call("HSET", tk, "state", "scheduled", "att", math.max(tonumber(h[3] or "1") - 1, 0))
      redis.call("ZADD", KEYS[5], due, id)
      redis.call("XADD", KEYS[4], "MAXLEN", "~", maxlen, "*", "ev", "not_due", "id", id,
        "due", due, "fence", fence)
      waiting = waiting + 1
      out[#out + 1] = 2
    elseif action == "defer" and redis.call("HINCRBY", tk, "defer", 1) <= max_defer then
      redis.call("HSET", tk, "state", "pending", "att", math.max(tonumber(h[3] or "1") - 1, 0))
      enqueue(prefix, kind_of(prefix, id), h[4], id)
      redis.call("XADD", KEYS[4], "MAXLEN", "~", maxlen, "*", "ev", "deferred", "id", id,
        "reason", reason, "fence", fence)
      deferred = deferred + 1
      out[#out + 1] = 2
    else
      local err = "record failed verification: " .. reason
      redis.call("HSET", tk, "state", "quarantined", "err", err, "end", now,
        history_field(tk), entry("quarantined", h[3], fence, "", "", now, err))
      finished(id, "quarantined", kind_of(prefix, id), now)
      redis.call("XADD", KEYS[4], "MAXLEN", "~", maxlen, "*", "ev", "rejected", "id", id,
        "reason", reason, "fence", fence)
      quarantined = quarantined + 1
      out[#out + 1] = 1
    end
  elseif h[1] == "quarantined" and h[2] == fence then
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if quarantined > 0 then
  redis.call("HINCRBY", KEYS[3], "signature_failures", quarantined)
  redis.call("HINCRBY", KEYS[2], "leased", -quarantined)
  redis.call("HINCRBY", KEYS[2], "quarantined", quarantined)
end
if deferred > 0 then
  redis.call("HINCRBY", KEYS[3], "deferred_unknown_key", deferred)
  redis.call("HINCRBY", KEYS[2], "leased", -deferred)
  redis.call("HINCRBY", KEYS[2], "pending", deferred)
end
if waiting > 0 then
  redis.call("HINCRBY", KEYS[3], "not_due", waiting)
  redis.call("HINCRBY", KEYS[2], "leased", -waiting)
  redis.call("HINCRBY", KEYS[2], "scheduled", waiting)
end
flush_finished(prefix)
return out
