-- complete.lua: commit the outcomes of a batch of leases, each under its fencing token.
-- uses: lib
-- KEYS[1] leases zset  KEYS[2] delayed zset  KEYS[3] counts hash  KEYS[4] stats hash
-- KEYS[5] audit stream  KEYS[6] histograms hash
-- KEYS[7] this call's reply key (<prefix>reply:complete:<request id>): set, for two minutes,
--   by the first send that rejects a commit, so a resend of the call counts and audits nothing
-- ARGV[1] key prefix  ARGV[2] holder  ARGV[3] audit on  ARGV[4] audit max length
-- ARGV[5..] per outcome, 7 values: id, fence, action, signed final record ("" for retry),
--   detail (retry: "<delay ms>|<error>", dead: error text, ok: ""), the handler's run time in
--   seconds, and the task_duration_seconds bucket ("le" bound) that time falls in
--   action "ok" -> succeeded, "dead" -> dead (attempts exhausted), "retry" -> failed + backoff
-- Touches: <prefix>t:<id> hashes (state, fin, err, end, an attempt history entry), <prefix>inflight,
--   the finished indexes (lib.lua), and the KEYS above. Metrics, in the same step as the state
--   change so they count each task once whoever commits: stats "attempt_failures" (every
--   accepted dead or retry outcome); histogram fields task_duration_seconds:<le> (non-cumulative),
--   :sum and :count for the attempt that made the task final (ok or dead).
-- Returns: {now_ms, 1 (accepted) or 0 (rejected: stale fence, not leased) per outcome}.
-- A rejected commit changes nothing but the fenced_rejected counter and the audit stream (on
-- the call's first send only: KEYS[7]).
-- The same outcome under the same fence, already applied, is acknowledged again (1) and changes
-- nothing: a client that resends a call whose reply was lost learns the truth.
local prefix, holder, audit, maxlen = ARGV[1], ARGV[2], ARGV[3] == "1", ARGV[4]
local now = server_ms()
local out = {now}
local landed = {}  -- kind -> leases of it that ended here (inflight goes down)
local done, zrem = {succeeded = 0, dead = 0, failed = 0}, {}
local rejected, duration_sum, buckets = 0, 0, {}
local applied = {ok = "succeeded", dead = "dead", retry = "failed"}
local first_send  -- nil until a commit is rejected: then, is this the call's first send?
local function counts_rejections()
  if first_send == nil then
    first_send = redis.call("SET", KEYS[7], "1", "NX", "PX", 120000) ~= false
  end
  return first_send
end
for i = 5, #ARGV, 7 do
  local id, fence, action, fin, detail = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local seconds, bucket = tonumber(ARGV[i + 5]), ARGV[i + 6]
  local tk = prefix .. "t:" .. id
  local h = redis.call("HMGET", tk, "state", "fence", "fin", "reaped", "k", "att", "st")
  if h[2] == fence and h[1] == applied[action] and not h[4] then
    out[#out + 1] = 1
  elseif h[1] ~= "leased" or h[2] ~= fence or h[3] then
    out[#out + 1] = 0
    if counts_rejections() then
      rejected = rejected + 1
      if audit then
        redis.call("XADD", KEYS[5], "MAXLEN", "~", maxlen, "*", "ev", "fence_rejected", "id", id,
          "holder", holder, "fence", fence, "current_fence", h[2] or "", "state", h[1] or "")
      end
    end
  else
    local kind = h[5] or kind_of(prefix, id)
    local hf = history_field(tk)
    if action == "ok" then
      redis.call("HSET", tk, "state", "succeeded", "fin", fin, "end", now,
        hf, entry("succeeded", h[6], fence, holder, h[7], now, ARGV[i + 5]))
      finished(id, "succeeded", kind, now)
      done.succeeded = done.succeeded + 1
    elseif action == "dead" then
      redis.call("HSET", tk, "state", "dead", "fin", fin, "err", detail, "end", now,
        hf, entry("dead", h[6], fence, holder, h[7], now, detail))
      finished(id, "dead", kind, now)
      done.dead = done.dead + 1
    else
      local bar = string.find(detail, "|", 1, true)
      local delay = tonumber(string.sub(detail, 1, bar - 1))
      local err = string.sub(detail, bar + 1)
      redis.call("HSET", tk, "state", "failed", "err", err,
        hf, entry("failed", h[6], fence, holder, h[7], now, err))
      redis.call("ZADD", KEYS[2], now + delay, id)
      done.failed = done.failed + 1
    end
    if action ~= "retry" then
      buckets[bucket] = (buckets[bucket] or 0) + 1
      duration_sum = duration_sum + seconds
    end
    zrem[#zrem + 1] = id
    landed[kind] = (landed[kind] or 0) + 1
    out[#out + 1] = 1
  end
end
if #zrem > 0 then
  for j = 1, #zrem, 2000 do
    redis.call("ZREM", KEYS[1], unpack(zrem, j, math.min(j + 1999, #zrem)))
  end
  redis.call("HINCRBY", KEYS[3], "leased", -#zrem)
  for kind, k in pairs(landed) do count(prefix .. "inflight", kind, -k) end
  for state, k in pairs(done) do
    if k > 0 then redis.call("HINCRBY", KEYS[3], state, k) end
  end
  if done.failed > 0 then redis.call("HINCRBY", KEYS[4], "retries", done.failed) end
  if done.failed + done.dead > 0 then
    redis.call("HINCRBY", KEYS[4], "attempt_failures", done.failed + done.dead)
  end
  if done.succeeded + done.dead > 0 then
    for le, k in pairs(buckets) do
      redis.call("HINCRBY", KEYS[6], "task_duration_seconds:" .. le, k)
    end
    redis.call("HINCRBY", KEYS[6], "task_duration_seconds:count", done.succeeded + done.dead)
    redis.call("HINCRBYFLOAT", KEYS[6], "task_duration_seconds:sum", duration_sum)
  end
  if audit then
    redis.call("XADD", KEYS[5], "MAXLEN", "~", maxlen, "*", "ev", "committed", "holder", holder,
      "succeeded", done.succeeded, "dead", done.dead, "failed", done.failed)
  end
end
if rejected > 0 then redis.call("HINCRBY", KEYS[4], "fenced_rejected", rejected) end
flush_finished(prefix)
return out
