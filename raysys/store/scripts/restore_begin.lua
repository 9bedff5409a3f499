-- restore_begin.lua: start a chunked restore: raise the restoring marker, only on an empty
-- namespace, while no snapshot is being saved and no other live restore holds the marker.
-- KEYS[1] restoring marker (string "<snapshot id>|<token>|<server ms of its last page>")
-- KEYS[2] barrier (a save in progress)
-- ARGV[1] key prefix  ARGV[2] owner "<snapshot id>|<token>" (one restore call)
-- Returns: {1} (marker up, ours); {0, key, ...} (not empty: the anchor keys found, nothing
--   written); {-1, marker} (another restore holds it); {-2, barrier} (a save is under way).
-- The caller has scanned the namespace for every key first (raysys/snapshots/restoring.py);
-- this script checks again, atomically, only the keys every used namespace has (a submission
-- writes seq, counts and ix:sub), so it runs in constant time on a shared Redis.
local prefix, owner = ARGV[1], ARGV[2]
local current = redis.call("GET", KEYS[1])
if current and string.sub(current, 1, #owner + 1) ~= owner .. "|" then return {-1, current} end
local barrier = redis.call("GET", KEYS[2])
if barrier then return {-2, barrier} end
local found = {}
for _, name in ipairs({"seq", "counts", "ix:sub", "leases", "schedules"}) do
  if redis.call("EXISTS", prefix .. name) == 1 then found[#found + 1] = name end
end
if #found > 0 then return {0, unpack(found)} end
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call("SET", KEYS[1], owner .. "|" .. now)
return {1}
