-- restore_finish.lua: end a chunked restore: fences continue above the snapshot's, the run id
-- goes (the next acquire raises fences to the server-clock floor), the marker comes down.
-- KEYS[1] restoring marker  KEYS[2] fence counter  KEYS[3] run id  KEYS[4] audit stream
-- KEYS[5] this restore's reply key (<prefix>reply:restore_finish:<owner>): the fence counter it
--   left, kept two minutes, so that the call resent (the marker down already) answers the same
-- ARGV[1] owner "<snapshot id>|<token>"  ARGV[2] the snapshot's fence counter
-- ARGV[3] keys restored
-- ARGV[4] audit on ("1"/"0")  ARGV[5] audit max length
-- Returns: {1, fence counter now} (also to this call resent: KEYS[5], nothing done twice) or
--   {0} (the marker is not this restore's).
local current, owner = redis.call("GET", KEYS[1]), ARGV[1]
if not current or string.sub(current, 1, #owner + 1) ~= owner .. "|" then
  local finished = redis.call("GET", KEYS[5])
  return finished and {1, finished} or {0}
end
local snapshot = string.match(owner, "^[^|]*")
local fence = math.max(tonumber(redis.call("GET", KEYS[2]) or "0"), tonumber(ARGV[2]))
redis.call("SET", KEYS[2], string.format("%d", fence))
redis.call("DEL", KEYS[3])
redis.call("DEL", KEYS[1])
if ARGV[4] == "1" then
  redis.call("XADD", KEYS[4], "MAXLEN", "~", ARGV[5], "*", "ev", "snapshot_restored",
    "snapshot", snapshot, "keys", ARGV[3], "fence", string.format("%d", fence))
end
redis.call("SET", KEYS[5], string.format("%d", fence), "PX", 120000)
return {1, string.format("%d", fence)}
