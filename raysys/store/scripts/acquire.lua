-- acquire.lua: lease up to N tasks to one holder, highest priority first (FIFO within one).
-- KEYS[1] pending zset  KEYS[2] delayed zset  KEYS[3] leases zset  KEYS[4] fence counter
-- KEYS[5] run id        KEYS[6] counts hash   KEYS[7] stats hash   KEYS[8] audit stream
-- ARGV[1] key prefix  ARGV[2] holder  ARGV[3] N  ARGV[4] ttl ms  ARGV[5] audit on ("1"/"0")
-- ARGV[6] audit max length  ARGV[7] fences per millisecond of server time (the floor scale)
-- ARGV[8] request id: a resent call (same id, same holder) returns the leases the first call
--   granted that the holder still holds, instead of granting more (a lost reply strands nothing)
-- KEYS[9] acquire log hash: holder -> "<request id>|<id>,<id>,..." of its last granting call
-- Touches: <prefix>t:<id> hashes of the tasks moved, and the KEYS above.
-- Returns: {now_ms, run, id, fence, attempt, deadline_ms, record bytes, ...}; run is 0 (run_id
--   known), 1 (first grant in this namespace) or 2 (the run_id changed: restart or failover).
-- Time is the Redis server's. Fences come from one monotonic counter; tasks holding a signed
-- completion record ("fin") are never leased again (replay), nor tasks not in state pending.
-- Whenever the server's run_id differs from the one recorded (a restart, a failover, or the
-- first grant ever), the counter is raised to at least server_ms * ARGV[7] before any grant.
-- That floor comes from the clock, not from the AOF, so it stays above every fence handed out
-- before a restart even when the AOF tail holding those grants (or an earlier raise) was lost,
-- provided fewer than ARGV[7] fences per ms were granted on average since the previous raise.
local prefix, holder, n, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local audit, maxlen, per_ms, request = ARGV[5] == "1", ARGV[6], tonumber(ARGV[7]), ARGV[8]
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = redis.call("HGET", KEYS[9], holder)
if last and string.sub(last, 1, #request + 1) == request .. "|" then
  local replay = {now, 0}
  for id in string.gmatch(string.sub(last, #request + 2), "[^,]+") do
    local h = redis.call("HMGET", prefix .. "t:" .. id, "state", "holder", "fence", "att", "rec")
    if h[1] == "leased" and h[2] == holder then
      replay[#replay + 1] = id
      replay[#replay + 1] = tonumber(h[3])
      replay[#replay + 1] = tonumber(h[4])
      replay[#replay + 1] = tonumber(redis.call("ZSCORE", KEYS[3], id))
      replay[#replay + 1] = h[5]
    end
  end
  return replay
end
local function log(...)
  if audit then redis.call("XADD", KEYS[8], "MAXLEN", "~", maxlen, "*", ...) end
end
-- A new server run (restart, failover) may have lost the tail of the AOF: move fences up.
local bumped = 0
local run_id = string.match(redis.call("INFO", "server"), "run_id:(%x+)")
local known = redis.call("GET", KEYS[5])
if known ~= run_id then
  local counter = tonumber(redis.call("GET", KEYS[4]) or "0")
  local floor = now * per_ms
  if floor > counter then redis.call("SET", KEYS[4], string.format("%d", floor)) end
  bumped = known and 2 or 1
  log("ev", "fence_epoch", "from_run", known or "", "to_run", run_id,
    "from_fence", string.format("%d", counter), "to_fence", string.format("%d", math.max(floor, counter)))
  redis.call("SET", KEYS[5], run_id)
end
-- Failed tasks whose backoff has passed go back to pending.
local due = redis.call("ZRANGEBYSCORE", KEYS[2], "-inf", now, "LIMIT", 0, 1000)
if #due > 0 then
  local moved = 0
  for _, id in ipairs(due) do
    local tk = prefix .. "t:" .. id
    local st = redis.call("HMGET", tk, "state", "sc")
    if st[1] == "failed" then
      redis.call("HSET", tk, "state", "pending")
      redis.call("ZADD", KEYS[1], st[2], id)
      moved = moved + 1
    end
  end
  redis.call("ZREM", KEYS[2], unpack(due))
  if moved > 0 then
    redis.call("HINCRBY", KEYS[6], "failed", -moved)
    redis.call("HINCRBY", KEYS[6], "pending", moved)
  end
end
local out = {now, bumped}
if n <= 0 then return out end
local popped = redis.call("ZPOPMIN", KEYS[1], n)
if #popped == 0 then return out end
local fence = tonumber(redis.call("GET", KEYS[4]) or "0")
local deadline = now + ttl
local zargs, granted, granted_ids = {}, 0, {}
for i = 1, #popped, 2 do
  local id = popped[i]
  local tk = prefix .. "t:" .. id
  local h = redis.pcall("HMGET", tk, "state", "att", "fin", "rec")
  if h.err then  -- not a hash (planted, corrupted): skip it rather than abort half way
    log("ev", "corrupt_skipped", "id", id)
  elseif not h[1] then
    log("ev", "orphan_skipped", "id", id)
  elseif h[3] then
    redis.call("HINCRBY", KEYS[7], "replays_blocked", 1)
    log("ev", "replay_blocked", "id", id, "state", h[1])
  elseif h[1] ~= "pending" then
    log("ev", "not_pending_skipped", "id", id, "state", h[1])
  else
    fence = fence + 1
    local att = tonumber(h[2] or "0") + 1
    redis.call("HSET", tk, "state", "leased", "att", att, "fence", fence, "holder", holder)
    zargs[#zargs + 1] = deadline
    zargs[#zargs + 1] = id
    if #zargs >= 2000 then redis.call("ZADD", KEYS[3], unpack(zargs)); zargs = {} end
    out[#out + 1] = id
    out[#out + 1] = fence
    out[#out + 1] = att
    out[#out + 1] = deadline
    out[#out + 1] = h[4]
    granted = granted + 1
    granted_ids[granted] = id
  end
end
if granted > 0 then
  redis.call("SET", KEYS[4], string.format("%d", fence))
  if #zargs > 0 then redis.call("ZADD", KEYS[3], unpack(zargs)) end
  redis.call("HINCRBY", KEYS[6], "pending", -granted)
  redis.call("HINCRBY", KEYS[6], "leased", granted)
  redis.call("HINCRBY", KEYS[7], "granted", granted)
  redis.call("HSET", KEYS[9], holder, request .. "|" .. table.concat(granted_ids, ","))
  log("ev", "leased", "holder", holder, "n", granted, "last_fence", string.format("%d", fence))
end
-- Anything popped but skipped was not pending (count already excluded it): nothing to fix.
return out
