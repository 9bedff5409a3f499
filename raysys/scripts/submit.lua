-- submit.lua: accept a batch of signed task records (the one write path).
-- KEYS[1] pending zset   KEYS[2] seq counter   KEYS[3] counts hash
-- KEYS[4] stats hash     KEYS[5] audit stream
-- ARGV[1] key prefix "{raysys:<ns>}:"   ARGV[2] audit on ("1"/"0")   ARGV[3] audit max length
-- ARGV[4..] per task, 5 values: id, signed record bytes, priority, kind, idempotency key ("" = none)
-- Touches: <prefix>t:<id> (hash), <prefix>idem:<key> (string), and the KEYS above.
-- Returns: one id per task, in order: the new id, or the existing task's id when its
--   idempotency key (or the same id with identical bytes: a retried call) was seen before.
-- Errors (nothing written): "ERR_CONFLICT <id>" when an id exists with different bytes.
local prefix, audit, maxlen = ARGV[1], ARGV[2] == "1", ARGV[3]
local n = (#ARGV - 3) / 5
local out, fresh = {}, {}
-- Pass 1: decide every task before writing anything (a Lua error must not leave half a batch).
local seen_idem = {}
for i = 0, n - 1 do
  local b = 4 + i * 5
  local id, rec, idem = ARGV[b], ARGV[b + 1], ARGV[b + 4]
  local existing = false
  if idem ~= "" then
    local prev = seen_idem[idem] or redis.call("GET", prefix .. "idem:" .. idem)
    if prev then out[i + 1] = prev; existing = true else seen_idem[idem] = id end
  end
  if not existing then
    local stored = redis.call("HGET", prefix .. "t:" .. id, "rec")
    if stored then
      if stored ~= rec then return redis.error_reply("ERR_CONFLICT " .. id) end
      out[i + 1] = id
    else
      out[i + 1] = id
      fresh[#fresh + 1] = b
    end
  end
end
-- Pass 2: write.
local created = #fresh
if created == 0 then return out end
local seq = redis.call("INCRBY", KEYS[2], created) - created
local zargs = {}
for j, b in ipairs(fresh) do
  local id, rec, prio, kind, idem = ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3], ARGV[b + 4]
  local score = -prio * 1099511627776 + seq + j
  redis.call("HSET", prefix .. "t:" .. id, "rec", rec, "state", "pending", "att", 0,
    "prio", prio, "sc", score, "kind", kind)
  if idem ~= "" then redis.call("SET", prefix .. "idem:" .. idem, id) end
  zargs[#zargs + 1] = score
  zargs[#zargs + 1] = id
  if #zargs >= 2000 then redis.call("ZADD", KEYS[1], unpack(zargs)); zargs = {} end
end
if #zargs > 0 then redis.call("ZADD", KEYS[1], unpack(zargs)) end
redis.call("HINCRBY", KEYS[3], "pending", created)
redis.call("HINCRBY", KEYS[4], "submitted", created)
if audit then
  redis.call("XADD", KEYS[5], "MAXLEN", "~", maxlen, "*", "ev", "submitted", "n", created)
end
return out
