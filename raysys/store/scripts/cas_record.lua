-- cas_record.lua: replace signed bytes in task hashes where they are still exactly as read.
-- (The optimistic path behind re-signing records and results; callers retry on conflict.)
-- KEYS[1] stats hash
-- ARGV[1] key prefix  ARGV[2] hash field ("rec" or "fin")
-- ARGV[3] states allowed, comma-separated ("*" = any state but quarantined)
-- ARGV[4..] triples: id, expected bytes, new bytes
-- Touches: <prefix>t:<id> (the one field; and rs, the server ms a finished task's record was
--   re-signed: purge.lua leaves a tombstone until the replay window has closed on that time).
-- Returns: per triple 1 replaced (also when the field holds the new bytes already: new bytes
--   are freshly signed, so that is this call resent; nothing is written again), 0 conflict
--   (bytes changed, task gone, or state not allowed).
local prefix, field, allowed = ARGV[1], ARGV[2], "," .. ARGV[3] .. ","
local out = {}
for i = 4, #ARGV, 3 do
  local tk = prefix .. "t:" .. ARGV[i]
  local h = redis.call("HMGET", tk, field, "state")
  local state_ok = h[2] and h[2] ~= "quarantined" and
    (allowed == ",*," or string.find(allowed, "," .. h[2] .. ",", 1, true) ~= nil)
  if h[1] == ARGV[i + 2] then
    out[#out + 1] = 1
  elseif h[1] == ARGV[i + 1] and state_ok then
    redis.call("HSET", tk, field, ARGV[i + 2])
    if field == "rec" and (h[2] == "succeeded" or h[2] == "dead" or h[2] == "cancelled") then
      local t = redis.call("TIME")
      redis.call("HSET", tk, "rs", tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
