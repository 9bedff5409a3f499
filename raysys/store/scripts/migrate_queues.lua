-- migrate_queues.lua: move tasks from the single pending queue of earlier versions into the
-- queue of their kind (an upgrade in place; the reaper calls it while the old key exists).
-- uses: lib
-- KEYS[1] the old pending zset
-- ARGV[1] key prefix  ARGV[2] tasks to move per call
-- Touches: <prefix>t:<id> (field k, from the record when missing), the kind queues and counts
--   (lib.lua), and KEYS[1].
-- Returns: how many tasks were moved (0: nothing left; the old key is then gone).
local prefix, limit = ARGV[1], tonumber(ARGV[2])
local old = redis.call("ZRANGE", KEYS[1], 0, limit - 1, "WITHSCORES")
local ids = {}
for i = 1, #old, 2 do
  local id = old[i]
  enqueue(prefix, kind_of(prefix, id), old[i + 1], id)
  ids[#ids + 1] = id
end
for j = 1, #ids, 2000 do redis.call("ZREM", KEYS[1], unpack(ids, j, math.min(j + 1999, #ids))) end
return #ids
