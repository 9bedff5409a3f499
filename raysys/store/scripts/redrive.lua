-- redrive.lua: send finished tasks to run again, each as a fresh set of attempts under its own
-- id (the one audited exception to "a final task never runs again"; raysys redrive).
-- uses: lib
-- KEYS[1] counts hash  KEYS[2] stats hash  KEYS[3] audit stream  KEYS[4] seq counter
-- KEYS[5] wake list
-- ARGV[1] key prefix  ARGV[2] audit on ("1"/"0")  ARGV[3] audit max length
-- ARGV[4] request id (a call with the same id, resent or made again, redrives nothing twice)
-- ARGV[5..] per task, 5 values: id, the state it was read in (dead, cancelled, quarantined),
--   the record bytes as verified, the freshly signed record, priority
-- Touches: <prefix>t:<id> (rec, state, att, sc, fin moved to fin<n>, err, end, holder, rd,
--   rdq, a history entry), the kind queues (lib.lua), the finished indexes (left) and
--   <prefix>ix:seal (joined), and the KEYS above.
-- Returns: per task "ok" (queued again; also when this very call did: its record is ARGV's new
--   one, signed for this call, so this is the call resent), "already" (an earlier call under
--   this request id redrove it), or
--   "changed" (not in the state read, or its record changed since it was verified: nothing
--   done; read and verify again).
-- The caller verified the old record (and the completion record) before signing the new one:
-- a tampered dead record never becomes validly signed here, because the bytes must still be
-- exactly those it verified. The old completion record is kept as history ("fin<n>").
local prefix, audit, maxlen, request = ARGV[1], ARGV[2] == "1", ARGV[3], ARGV[4]
local now = server_ms()
local out, moved, queued_kinds = {}, {}, 0
for i = 5, #ARGV, 5 do
  local id, was, old, new, priority = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
    tonumber(ARGV[i + 4])
  local tk = prefix .. "t:" .. id
  local h = redis.call("HMGET", tk, "state", "rec", "fin", "rdq", "k", "tomb")
  if h[4] == request then
    out[#out + 1] = h[2] == new and "ok" or "already"
  elseif h[1] ~= was or h[2] ~= old or h[6] or not (was == "dead" or was == "cancelled"
      or was == "quarantined") then
    out[#out + 1] = "changed"
  else
    local kind = h[5] or kind_of(prefix, id)
    local score = -priority * 1099511627776 + redis.call("INCR", KEYS[4])
    local n = redis.call("HINCRBY", tk, "rd", 1)
    if h[3] then redis.call("HSET", tk, "fin" .. n, h[3]) end
    redis.call("HDEL", tk, "fin", "err", "end", "holder", "reaped", "defer")
    redis.call("HSET", tk, "state", "pending", "rec", new, "att", 0, "sc", score, "rdq", request,
      history_field(tk), entry("redriven", "", "", "", "", now, "from " .. was))
    redis.call("ZREM", prefix .. "ix:f:" .. was, id)
    redis.call("ZREM", prefix .. "ix:f:" .. was .. ":" .. kind, id)
    redis.call("ZADD", prefix .. "ix:seal", now, id)
    enqueue(prefix, kind, score, id)
    moved[was] = (moved[was] or 0) + 1
    queued_kinds = queued_kinds + 1
    if audit then
      redis.call("XADD", KEYS[3], "MAXLEN", "~", maxlen, "*", "ev", "redriven", "id", id,
        "from", was, "request", request)
    end
    out[#out + 1] = "ok"
  end
end
if queued_kinds > 0 then
  for state, k in pairs(moved) do redis.call("HINCRBY", KEYS[1], state, -k) end
  redis.call("HINCRBY", KEYS[1], "pending", queued_kinds)
  redis.call("HINCRBY", KEYS[2], "redriven", queued_kinds)
  redis.call("LPUSH", KEYS[5], "1")
  redis.call("LTRIM", KEYS[5], 0, 0)
end
return out
