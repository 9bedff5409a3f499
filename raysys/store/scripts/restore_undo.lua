-- restore_undo.lua: delete keys a failed restore wrote, only while that restore still holds
-- the restoring marker (a restore that lost the marker to another must not delete the keys
-- the other one restored under the same names).
-- KEYS[1] restoring marker ("<snapshot id>|<token>|<ms>")
-- ARGV[1] key prefix  ARGV[2] owner "<snapshot id>|<token>"  ARGV[3] "1": take the marker
--   down after this page ("0": more pages follow)   ARGV[4..] key names after the prefix
-- Returns: 1 (deleted; or, on the last page, the marker is down already: this page resent after
--   it took it down, nothing to do), 0 (the marker is another restore's: nothing deleted).
local current, owner = redis.call("GET", KEYS[1]), ARGV[2]
if not current and ARGV[3] == "1" then return 1 end
if not current or string.sub(current, 1, #owner + 1) ~= owner .. "|" then return 0 end
local keys = {}
for i = 4, #ARGV do keys[#keys + 1] = ARGV[1] .. ARGV[i] end
for j = 1, #keys, 1000 do redis.call("DEL", unpack(keys, j, math.min(j + 999, #keys))) end
if ARGV[3] == "1" then redis.call("DEL", KEYS[1]) end
return 1
