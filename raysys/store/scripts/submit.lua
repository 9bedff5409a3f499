-- submit.lua: accept a batch of signed task records (the one write path).
-- uses: lib
-- KEYS[1] seq counter   KEYS[2] counts hash   KEYS[3] stats hash   KEYS[4] audit stream
-- KEYS[5] wake list (one element at most: pushed when tasks were created, popped by the
--   Distributor waiting for work with BLPOP)   KEYS[6] start-by zset (id -> server ms by which
--   the task must have started, for tasks submitted with a schedule-to-start limit)
-- KEYS[7] scheduled zset (id -> the server ms a delayed task is due)
-- ARGV[1] key prefix "{raysys:<ns>}:"   ARGV[2] audit on ("1"/"0")   ARGV[3] audit max length
-- ARGV[4] schedule name ("" = none): the batch is that schedule's ticks, accepted only if the
--   schedule's cursor still holds ARGV[5] (signed bytes; "" = no cursor yet), which then becomes
--   ARGV[6], in this same step (two Coordinators racing on one tick: one wins, nothing twice;
--   a cursor that holds ARGV[6] already is this call resent, and is accepted again)
-- ARGV[7..] per task, 7 values: id, signed record bytes, priority, idempotency key ("" = none),
--   kind, schedule-to-start limit in ms ("0" = none), due time in epoch ms ("0" = now; the
--   record carries the same time signed, checked before the task is handed out)
-- Touches: <prefix>t:<id> (hash: rec, state, sc, k, ik, sub), <prefix>idem:<key> (string), the
--   kind's queue <prefix>q:<kind> and <prefix>qkinds (lib.lua), the listing indexes
--   <prefix>ix:sub and <prefix>ix:sub:<kind> (id -> submitted, ms), <prefix>ix:seal (id -> when
--   its record was sealed, ms: the reaper re-seals live records before the replay window
--   closes on them), <prefix>sch:<name> (field cur), and the KEYS above.
-- Returns: one reply per task, in order: the new id; the existing task's id when its
--   idempotency key was seen before, or when the same id with identical bytes is already stored
--   (a retried call); or "" when the id is taken by different bytes (nothing was written for
--   that task: the caller re-issues it under a fresh id). A resent call (same ARGV) answers the
--   same ids and creates, counts and audits nothing again. Errors (nothing written):
--   ERR_CORRUPT (a key of the wrong type), ERR_CURSOR (the schedule's cursor moved on).
local prefix, audit, maxlen = ARGV[1], ARGV[2] == "1", ARGV[3]
local schedule, cursor_was, cursor_next = ARGV[4], ARGV[5], ARGV[6]
local first, per = 7, 7
local n = (#ARGV - first + 1) / per
-- Read-only pass first: a key of the wrong type (planted, corrupted) must fail the call before
-- anything is written, never half way through (Lua errors do not roll back earlier writes).
local known = {}
for i = 0, n - 1 do
  local idem = ARGV[first + i * per + 3]
  if idem ~= "" then
    local prev = redis.pcall("GET", prefix .. "idem:" .. idem)
    if type(prev) == "table" and prev.err then
      return redis.error_reply("ERR_CORRUPT idempotency key " .. idem .. " is not a string")
    end
    known[i] = prev
  end
end
if schedule ~= "" then
  local sk = prefix .. "sch:" .. schedule
  local cur = redis.pcall("HGET", sk, "cur")
  if type(cur) == "table" and cur.err then
    return redis.error_reply("ERR_CORRUPT schedule " .. schedule .. " is not a hash")
  end
  -- (a cursor already at ARGV[6], freshly signed bytes of this call, is this call resent)
  local moved_on = (cur or "") ~= cursor_was and cur ~= cursor_next
  if moved_on or redis.call("HEXISTS", sk, "rec") == 0 then
    return redis.error_reply("ERR_CURSOR schedule " .. schedule .. " moved on or was removed")
  end
  redis.call("HSET", sk, "cur", cursor_next)
end
local now = server_ms()
local seq = redis.call("INCRBY", KEYS[1], n) - n
local out, pending, scheduled, by_kind, at_kind, later = {}, 0, 0, {}, {}, {}
for i = 0, n - 1 do
  local b = first + i * per
  local id, rec, idem, kind = ARGV[b], ARGV[b + 1], ARGV[b + 3], ARGV[b + 4]
  local start_limit, due = tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6])
  local prev = known[i] or false
  if idem ~= "" and not prev then prev = redis.call("GET", prefix .. "idem:" .. idem) end
  if prev then
    out[i + 1] = prev
  else
    local tk = prefix .. "t:" .. id
    if redis.call("HSETNX", tk, "rec", rec) == 1 then
      local score = -tonumber(ARGV[b + 2]) * 1099511627776 + seq + i + 1
      local stamps = at_kind[kind]
      if not stamps then stamps = {}; at_kind[kind] = stamps end
      stamps[#stamps + 1] = now
      stamps[#stamps + 1] = id
      if due > now then
        redis.call("HSET", tk, "state", "scheduled", "sc", score, "k", kind, "sub", now,
          "ik", idem, "due", due)
        later[#later + 1] = due
        later[#later + 1] = id
        scheduled = scheduled + 1
      else
        redis.call("HSET", tk, "state", "pending", "sc", score, "k", kind, "sub", now, "ik", idem)
        local zargs = by_kind[kind]
        if not zargs then zargs = {}; by_kind[kind] = zargs end
        zargs[#zargs + 1] = score
        zargs[#zargs + 1] = id
        pending = pending + 1
      end
      if idem ~= "" then redis.call("SET", prefix .. "idem:" .. idem, id) end
      if start_limit > 0 then
        redis.call("ZADD", KEYS[6], math.max(now, due) + start_limit, id)
      end
      out[i + 1] = id
    elseif redis.call("HGET", tk, "rec") == rec then
      out[i + 1] = id
    else
      out[i + 1] = ""
    end
  end
end
for kind, zargs in pairs(by_kind) do  -- one ZADD per kind and 1,000 tasks, not one per task
  local added = 0
  for j = 1, #zargs, 2000 do
    added = added + redis.call("ZADD", prefix .. "q:" .. kind,
      unpack(zargs, j, math.min(j + 1999, #zargs)))
  end
  if added > 0 then count(prefix .. "qkinds", kind, added) end
end
for kind, stamps in pairs(at_kind) do
  zadd_chunks(prefix .. "ix:sub:" .. kind, stamps)
  zadd_chunks(prefix .. "ix:sub", stamps)
  zadd_chunks(prefix .. "ix:seal", stamps)
end
if #later > 0 then zadd_chunks(KEYS[7], later) end
local created = pending + scheduled
if pending > 0 then
  redis.call("LPUSH", KEYS[5], "1")
  redis.call("LTRIM", KEYS[5], 0, 0)
  redis.call("HINCRBY", KEYS[2], "pending", pending)
end
if scheduled > 0 then redis.call("HINCRBY", KEYS[2], "scheduled", scheduled) end
if created > 0 then
  redis.call("HINCRBY", KEYS[3], "submitted", created)
  if audit then
    redis.call("XADD", KEYS[4], "MAXLEN", "~", maxlen, "*", "ev", "submitted", "n", created)
  end
end
return out
