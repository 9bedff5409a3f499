-- claim_nonces.lua: accept each message (key id, nonce) once, while its validity lasts.
-- KEYS[1] stats hash (declared so a cluster routes the call to the namespace's slot; the
--   nonce keys are built from the prefix and live in the same slot)
-- ARGV[1] key prefix  ARGV[2] allowed clock skew ms  ARGV[3] longest validity ms
-- ARGV[4] request id of this call
-- ARGV[5..] pairs: "<kid>:<nonce>", expiry (ms since the epoch, the sender's clock)
-- Touches: <prefix>nonce:<kid>:<nonce> (string = the request id that claimed it; expires skew +
--   1 s after the message does), KEYS[1] (replays_rejected), and, when the call holds a replay,
--   <prefix>reply:claim_nonces:<request id> (kept two minutes: the call resent counts none).
-- Returns: per pair 1 (first sight: accepted), 0 (seen before: replay), -1 (expired, or an
--   expiry further ahead than the longest validity allows, by Redis server time with skew).
-- A nonce claimed by this same request id is accepted again: redis-py resends a call whose
-- reply was lost, and that resend must not turn a genuine message into a "replay"; its replays
-- are answered 0 again but counted once.
local prefix, skew, longest, request = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out, replays, seen = {}, 0, {}
for i = 5, #ARGV, 2 do
  local exp = tonumber(ARGV[i + 1])
  if not exp or exp + skew < now or exp > now + longest + skew then
    out[#out + 1] = -1
  else
    local key = prefix .. "nonce:" .. ARGV[i]
    local ttl = math.floor(exp - now + skew + 1000)
    if seen[key] then  -- the same nonce twice in one call: the second is a replay
      out[#out + 1] = 0
      replays = replays + 1
    elseif redis.call("SET", key, request, "NX", "PX", ttl) then
      seen[key] = true
      out[#out + 1] = 1
    elseif redis.call("GET", key) == request then
      seen[key] = true
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
      replays = replays + 1
    end
  end
end
if replays > 0 and redis.call("SET", prefix .. "reply:claim_nonces:" .. request, "1", "NX",
    "PX", 120000) then
  redis.call("HINCRBY", KEYS[1], "replays_rejected", replays)
end
return out
