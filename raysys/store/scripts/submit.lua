-- submit.lua: accept a batch of signed task records (the one write path).
-- KEYS[1] pending zset   KEYS[2] seq counter   KEYS[3] counts hash
-- KEYS[4] stats hash     KEYS[5] audit stream   KEYS[6] wake list (one element at most: pushed
--   when tasks were created, popped by the Distributor waiting for work with BLPOP)
-- ARGV[1] key prefix "{raysys:<ns>}:"   ARGV[2] audit on ("1"/"0")   ARGV[3] audit max length
-- ARGV[4..] per task, 4 values: id, signed record bytes, priority, idempotency key ("" = none)
-- Touches: <prefix>t:<id> (hash: rec, state, sc), <prefix>idem:<key> (string), the KEYS above.
-- Returns: one reply per task, in order: the new id; the existing task's id when its
--   idempotency key was seen before, or when the same id with identical bytes is already stored
--   (a retried call); or "" when the id is taken by different bytes (nothing was written for
--   that task: the caller re-issues it under a fresh id).
local prefix, audit, maxlen = ARGV[1], ARGV[2] == "1", ARGV[3]
local n = (#ARGV - 3) / 4
-- Read-only pass first: a key of the wrong type (planted, corrupted) must fail the call before
-- anything is written, never half way through (Lua errors do not roll back earlier writes).
local known = {}
for i = 0, n - 1 do
  local idem = ARGV[4 + i * 4 + 3]
  if idem ~= "" then
    local prev = redis.pcall("GET", prefix .. "idem:" .. idem)
    if type(prev) == "table" and prev.err then
      return redis.error_reply("ERR_CORRUPT idempotency key " .. idem .. " is not a string")
    end
    known[i] = prev
  end
end
local seq = redis.call("INCRBY", KEYS[2], n) - n
local out, zargs, created = {}, {}, 0
for i = 0, n - 1 do
  local b = 4 + i * 4
  local id, rec, idem = ARGV[b], ARGV[b + 1], ARGV[b + 3]
  local prev = known[i] or false
  if idem ~= "" and not prev then prev = redis.call("GET", prefix .. "idem:" .. idem) end
  if prev then
    out[i + 1] = prev
  else
    local tk = prefix .. "t:" .. id
    if redis.call("HSETNX", tk, "rec", rec) == 1 then
      local score = -tonumber(ARGV[b + 2]) * 1099511627776 + seq + i + 1
      redis.call("HSET", tk, "state", "pending", "sc", score)
      if idem ~= "" then redis.call("SET", prefix .. "idem:" .. idem, id) end
      zargs[#zargs + 1] = score
      zargs[#zargs + 1] = id
      if #zargs >= 2000 then redis.call("ZADD", KEYS[1], unpack(zargs)); zargs = {} end
      created = created + 1
      out[i + 1] = id
    elseif redis.call("HGET", tk, "rec") == rec then
      out[i + 1] = id
    else
      out[i + 1] = ""
    end
  end
end
if #zargs > 0 then redis.call("ZADD", KEYS[1], unpack(zargs)) end
if created > 0 then
  redis.call("LPUSH", KEYS[6], "1")
  redis.call("LTRIM", KEYS[6], 0, 0)
  redis.call("HINCRBY", KEYS[3], "pending", created)
  redis.call("HINCRBY", KEYS[4], "submitted", created)
  if audit then
    redis.call("XADD", KEYS[5], "MAXLEN", "~", maxlen, "*", "ev", "submitted", "n", created)
  end
end
return out
