-- restore_begin.lua: start a chunked restore: the namespace must be empty; then the restoring
-- marker goes up, and stays until restore_finish.lua (or a later restore) takes it down.
-- KEYS[1] restoring marker (string: the snapshot id)
-- ARGV[1] key prefix  ARGV[2] SCAN pattern matching the prefix (glob-escaped)
-- ARGV[3] SCAN count hint  ARGV[4] snapshot id  ARGV[5] most keys counted when not empty
-- Returns: {1} (marker up), or {0, task keys, other keys, sample, ...} (not empty: nothing
--   written; counted up to ARGV[5]).
-- "Empty" ignores the snapshot keys ("snaps", "snap:*"), the fence counter ("fence"), the run id
-- ("runid"), the wake-up list ("wake"), the barrier and the marker itself ("restoring": a
-- marker from a restore that died half way is replaced; raysys/snapshots/manager.py clears what
-- that one wrote before it starts).
local prefix, pattern, count, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[5])
local plen = #prefix
local skip = {snaps = true, wake = true, fence = true, runid = true, barrier = true,
  restoring = true}
local tasks, others, sample = 0, 0, {}
local cursor = "0"
repeat
  local page = redis.call("SCAN", cursor, "MATCH", pattern, "COUNT", count)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    local suffix = string.sub(key, plen + 1)
    if string.sub(key, 1, plen) == prefix and not skip[suffix]
        and string.sub(suffix, 1, 5) ~= "snap:" then
      if string.sub(suffix, 1, 2) == "t:" then tasks = tasks + 1 else others = others + 1 end
      if #sample < 3 then sample[#sample + 1] = suffix end
    end
  end
until cursor == "0" or tasks + others >= limit
if tasks + others > 0 then
  local out = {0, tasks, others}
  for _, s in ipairs(sample) do out[#out + 1] = s end
  return out
end
redis.call("SET", KEYS[1], ARGV[4])
return {1}
