-- snapshot_read.lua: a point-in-time copy of one namespace, for a signed snapshot (read only).
-- KEYS[1] counts hash  KEYS[2] fence counter
-- ARGV[1] key prefix "{raysys:<ns>}:"  ARGV[2] SCAN pattern matching the prefix (glob-escaped)
-- ARGV[3] SCAN count hint
-- Touches: reads every key under the prefix (DUMP, PTTL); writes nothing.
-- Returns: {now_ms, fence, {counts hash, flat}, suffix, pttl, dump, suffix, pttl, dump, ...}:
--   one triple per key, named by its suffix after the prefix; pttl is -1 for no expiry.
--   The snapshot keys themselves (suffix "snaps" and "snap:*") and the wake-up list ("wake",
--   a hint for the Distributor, not state) are left out.
-- One full SCAN inside one script: nothing can change between the first key and the last, so
-- the copy is consistent. It blocks the server for the whole namespace: about 15 us per task
-- (0.14 s for 10k tasks, 1.7 s for 100k, on redis 7.0 and valkey 9 alike), so past ~300k tasks
-- it outlasts the 5 s busy-script limit and other clients get BUSY replies until it ends.
-- SCAN may return a key twice: deduplicated.
local prefix, pattern, count = ARGV[1], ARGV[2], ARGV[3]
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local plen = #prefix
local seen, names = {}, {}
local cursor = "0"
repeat
  local page = redis.call("SCAN", cursor, "MATCH", pattern, "COUNT", count)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    if not seen[key] and string.sub(key, 1, plen) == prefix then
      seen[key] = true
      local suffix = string.sub(key, plen + 1)
      if suffix ~= "snaps" and suffix ~= "wake" and string.sub(suffix, 1, 5) ~= "snap:" then
        names[#names + 1] = key
      end
    end
  end
until cursor == "0"
local out = {now, redis.call("GET", KEYS[2]) or "0", redis.call("HGETALL", KEYS[1])}
for _, key in ipairs(names) do
  out[#out + 1] = string.sub(key, plen + 1)
  out[#out + 1] = redis.call("PTTL", key)
  out[#out + 1] = redis.call("DUMP", key)
end
return out
