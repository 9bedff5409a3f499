-- quarantine.lua: set aside leased tasks whose records failed verification. Never executed.
-- KEYS[1] leases zset  KEYS[2] counts hash  KEYS[3] stats hash  KEYS[4] audit stream
-- ARGV[1] key prefix  ARGV[2] audit max length
-- ARGV[3..] per task, 3 values: id, fence, reason code (e.g. bad_signature, copied_record)
-- Touches: <prefix>t:<id> hashes, and the KEYS above. Rejections are always audited.
-- Returns: {1 (quarantined) or 0 (not leased under that fence) per task}.
local prefix, maxlen = ARGV[1], ARGV[2]
local out, k = {}, 0
for i = 3, #ARGV, 3 do
  local id, fence, reason = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local tk = prefix .. "t:" .. id
  local h = redis.call("HMGET", tk, "state", "fence")
  redis.call("XADD", KEYS[4], "MAXLEN", "~", maxlen, "*", "ev", "rejected", "id", id,
    "reason", reason, "fence", fence)
  if h[1] == "leased" and h[2] == fence then
    redis.call("HSET", tk, "state", "quarantined", "err", "record failed verification: " .. reason,
      "holder", "")
    redis.call("ZREM", KEYS[1], id)
    k = k + 1
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
redis.call("HINCRBY", KEYS[3], "signature_failures", (#ARGV - 2) / 3)
if k > 0 then
  redis.call("HINCRBY", KEYS[2], "leased", -k)
  redis.call("HINCRBY", KEYS[2], "quarantined", k)
end
return out
