-- upgrade_seed.lua: once per namespace, count the completions of tasks an earlier version
-- finished into the monotonic counters (stats completed:<state>), so that
-- raysys_tasks_completed_total does not drop when this version starts (raysys/store/upgrade.py).
-- KEYS[1] upgrade hash  KEYS[2] counts hash  KEYS[3] stats hash
-- ARGV[1] key prefix  ARGV[2..] the final states
-- Touches: the KEYS above; reads <prefix>ix:f:<state>.
-- Returns: 1 (counted now) or 0 (done before). Tasks this version finished are in
--   ix:f:<state> and counted already; the rest of counts[state] are the earlier version's.
if redis.call("HSETNX", KEYS[1], "seeded", "1") == 0 then return 0 end
for i = 2, #ARGV do
  local state = ARGV[i]
  local earlier = tonumber(redis.call("HGET", KEYS[2], state) or "0")
    - redis.call("ZCARD", ARGV[1] .. "ix:f:" .. state)
  if earlier > 0 then redis.call("HINCRBY", KEYS[3], "completed:" .. state, earlier) end
end
return 1
