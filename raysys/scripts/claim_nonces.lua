-- claim_nonces.lua: accept each message (key id, nonce) once, while its validity lasts.
-- KEYS: none fixed (nonce keys are built from the prefix: one slot per namespace)
-- ARGV[1] key prefix  ARGV[2] allowed clock skew ms
-- ARGV[3..] pairs: "<kid>:<nonce>", expiry (ms since the epoch, the sender's clock)
-- Touches: <prefix>nonce:<kid>:<nonce> (string, expires skew + 1 s after the message does).
-- Returns: per pair 1 (first sight: accepted), 0 (seen before: replay), -1 (expired by
--   Redis server time, allowing the skew). A nonce key outlives its message, so a replay is
--   caught until the message is expired anyway; AOF keeps the keys across a restart.
local prefix, skew = ARGV[1], tonumber(ARGV[2])
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i = 3, #ARGV, 2 do
  local exp = tonumber(ARGV[i + 1])
  if not exp or exp + skew < now then
    out[#out + 1] = -1
  else
    local ttl = math.floor(exp - now + skew + 1000)
    if redis.call("SET", prefix .. "nonce:" .. ARGV[i], "1", "NX", "PX", ttl) then
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  end
end
return out
