-- acquire.lua: lease up to N tasks to one holder, highest priority first (FIFO within one),
-- across the kinds the caller may take, each up to its quota.
-- uses: lib
-- KEYS[1] delayed zset  KEYS[2] leases zset  KEYS[3] fence counter  KEYS[4] run id
-- KEYS[5] counts hash   KEYS[6] stats hash   KEYS[7] audit stream
-- KEYS[8] acquire log hash: holder -> "<request id>|<id>,<id>,..." of its last granting call
-- KEYS[9] start-by zset (a leased task has started: its entry goes)
-- KEYS[10] scheduled zset: delayed tasks scored by the server time (ms) they are due; those due
--   become pending here first (the signed record's not-before is checked by the acquirer)
-- ARGV[1] key prefix  ARGV[2] holder  ARGV[3] N  ARGV[4] ttl ms  ARGV[5] audit on ("1"/"0")
-- ARGV[6] audit max length  ARGV[7] fences per millisecond of server time (the floor scale)
-- ARGV[8] request id: a resent call (same id, same holder) returns the leases the first call
--   granted that the holder still holds, instead of granting more (a lost reply strands nothing)
-- ARGV[9] quota of a kind not named below (-1: up to N)
-- ARGV[10..] triples: kind, quota (at most this many of the kind in this call; 0: none, e.g. no
--   node can place it now), cap (-1: none; else at most this many of the kind leased at once
--   across the cluster, counted in <prefix>inflight: its max_in_flight)
-- Touches: <prefix>t:<id> hashes of the tasks moved, the kind queues, <prefix>qkinds and
--   <prefix>inflight (lib.lua), and the KEYS above.
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
local default_quota = tonumber(ARGV[9])
if default_quota < 0 then default_quota = n end
local quota = {}
for i = 10, #ARGV, 3 do
  local take, cap = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if cap >= 0 then
    local flying = tonumber(redis.call("HGET", prefix .. "inflight", ARGV[i]) or "0")
    take = math.min(take < 0 and n or take, math.max(cap - flying, 0))
  end
  quota[ARGV[i]] = take
end
local now = server_ms()
local last = redis.call("HGET", KEYS[8], holder)
if last and string.sub(last, 1, #request + 1) == request .. "|" then
  local replay = {now, 0}
  for id in string.gmatch(string.sub(last, #request + 2), "[^,]+") do
    local h = redis.call("HMGET", prefix .. "t:" .. id, "state", "holder", "fence", "att", "rec")
    if h[1] == "leased" and h[2] == holder then
      replay[#replay + 1] = id
      replay[#replay + 1] = tonumber(h[3])
      replay[#replay + 1] = tonumber(h[4])
      replay[#replay + 1] = tonumber(redis.call("ZSCORE", KEYS[2], id))
      replay[#replay + 1] = h[5]
    end
  end
  return replay
end
local function log(...)
  if audit then redis.call("XADD", KEYS[7], "MAXLEN", "~", maxlen, "*", ...) end
end
-- A new server run (restart, failover) may have lost the tail of the AOF: move fences up.
local bumped = 0
local run_id = string.match(redis.call("INFO", "server"), "run_id:(%x+)")
local known = redis.call("GET", KEYS[4])
if known ~= run_id then
  local counter = tonumber(redis.call("GET", KEYS[3]) or "0")
  local floor = now * per_ms
  if floor > counter then redis.call("SET", KEYS[3], string.format("%d", floor)) end
  bumped = known and 2 or 1
  log("ev", "fence_epoch", "from_run", known or "", "to_run", run_id,
    "from_fence", string.format("%d", counter), "to_fence", string.format("%d", math.max(floor, counter)))
  redis.call("SET", KEYS[4], run_id)
end
-- Ids of zset `key` due by `now`, still in state `from`, join their kind's queue as pending.
local function release_due(key, from)
  local ripe = redis.call("ZRANGEBYSCORE", key, "-inf", now, "LIMIT", 0, 1000)
  if #ripe == 0 then return end
  local moved = 0
  for _, id in ipairs(ripe) do
    local tk = prefix .. "t:" .. id
    local st = redis.call("HMGET", tk, "state", "sc")
    if st[1] == from then
      redis.call("HSET", tk, "state", "pending")
      enqueue(prefix, kind_of(prefix, id), st[2], id)
      moved = moved + 1
    end
  end
  zrem_chunks(key, ripe)
  if moved > 0 then
    redis.call("HINCRBY", KEYS[5], from, -moved)
    redis.call("HINCRBY", KEYS[5], "pending", moved)
  end
end
release_due(KEYS[10], "scheduled")  -- delayed tasks now due
release_due(KEYS[1], "failed")  -- failed tasks whose backoff has passed
local out = {now, bumped}
if n <= 0 then return out end
-- Candidates: the head of each kind's queue, up to its quota; then the n best overall.
local candidates = {}
local queued = redis.call("HGETALL", prefix .. "qkinds")
for i = 1, #queued, 2 do
  local kind = queued[i]
  local allowed = quota[kind] or default_quota
  if allowed < 0 then allowed = n end
  local take = math.min(allowed, n)  -- the count only says the kind has work, not how much
  if take > 0 then
    local head = redis.call("ZRANGE", prefix .. "q:" .. kind, 0, take - 1, "WITHSCORES")
    for j = 1, #head, 2 do
      candidates[#candidates + 1] = {tonumber(head[j + 1]), head[j], kind}
    end
  end
end
if #candidates == 0 then return out end
table.sort(candidates, function(a, b) return a[1] < b[1] end)
local chosen, by_kind = {}, {}
for i = 1, math.min(n, #candidates) do
  local c = candidates[i]
  chosen[#chosen + 1] = c
  local ids = by_kind[c[3]]
  if not ids then ids = {}; by_kind[c[3]] = ids end
  ids[#ids + 1] = c[2]
end
for kind, ids in pairs(by_kind) do
  local removed = 0
  for j = 1, #ids, 2000 do
    removed = removed + redis.call("ZREM", prefix .. "q:" .. kind,
      unpack(ids, j, math.min(j + 1999, #ids)))
  end
  if removed > 0 then count(prefix .. "qkinds", kind, -removed) end
end
local fence = tonumber(redis.call("GET", KEYS[3]) or "0")
local deadline = now + ttl
local zargs, granted, granted_ids, flying = {}, 0, {}, {}
for _, c in ipairs(chosen) do
  local id, kind = c[2], c[3]
  local tk = prefix .. "t:" .. id
  local h = redis.pcall("HMGET", tk, "state", "att", "fin", "rec")
  if h.err then  -- not a hash (planted, corrupted): skip it rather than abort half way
    log("ev", "corrupt_skipped", "id", id)
  elseif not h[1] then
    log("ev", "orphan_skipped", "id", id)
  elseif h[3] then
    redis.call("HINCRBY", KEYS[6], "replays_blocked", 1)
    log("ev", "replay_blocked", "id", id, "state", h[1])
  elseif h[1] ~= "pending" then
    log("ev", "not_pending_skipped", "id", id, "state", h[1])
  else
    fence = fence + 1
    local att = tonumber(h[2] or "0") + 1
    redis.call("HSET", tk, "state", "leased", "att", att, "fence", fence, "holder", holder,
      "st", now)
    zargs[#zargs + 1] = deadline
    zargs[#zargs + 1] = id
    out[#out + 1] = id
    out[#out + 1] = fence
    out[#out + 1] = att
    out[#out + 1] = deadline
    out[#out + 1] = h[4]
    granted = granted + 1
    granted_ids[granted] = id
    flying[kind] = (flying[kind] or 0) + 1
  end
end
if granted > 0 then
  redis.call("SET", KEYS[3], string.format("%d", fence))
  for j = 1, #zargs, 2000 do
    redis.call("ZADD", KEYS[2], unpack(zargs, j, math.min(j + 1999, #zargs)))
  end
  for kind, k in pairs(flying) do count(prefix .. "inflight", kind, k) end
  if redis.call("ZCARD", KEYS[9]) > 0 then
    for j = 1, #granted_ids, 2000 do
      redis.call("ZREM", KEYS[9], unpack(granted_ids, j, math.min(j + 1999, #granted_ids)))
    end
  end
  redis.call("HINCRBY", KEYS[5], "pending", -granted)
  redis.call("HINCRBY", KEYS[5], "leased", granted)
  redis.call("HINCRBY", KEYS[6], "granted", granted)
  redis.call("HSET", KEYS[8], holder, request .. "|" .. table.concat(granted_ids, ","))
  log("ev", "leased", "holder", holder, "n", granted, "last_fence", string.format("%d", fence))
end
-- Anything chosen but skipped was not pending (count already excluded it): nothing to fix.
return out
