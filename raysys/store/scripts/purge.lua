-- purge.lua: remove finished tasks of one state that finished at or before a cutoff, or
-- tombstones whose replay window has closed. One bounded page per call (the caller loops).
-- uses: lib
-- KEYS[1] counts hash  KEYS[2] stats hash  KEYS[3] audit stream  KEYS[4] tombstones zset
-- KEYS[5] this call's reply key (<prefix>reply:purge:<request id>): its answer, kept two minutes
--   so that the call resent gets it again (a second page would find nothing, or other tasks)
-- ARGV[1] key prefix  ARGV[2] audit on ("1"/"0")  ARGV[3] audit max length
-- ARGV[4] state (succeeded, dead, cancelled, quarantined; or "tomb": expired tombstones)
-- ARGV[5] cutoff: tasks that finished at or before this server ms
-- ARGV[6] page size
-- ARGV[7] tombstone line: a task that finished after this ms, or whose record was re-signed
--   after it (rs: key rotation), is replaced by a tombstone (a hash holding only state, fin "",
--   tomb, end, k: acquire refuses any record under it, as for every final task), because a
--   replay of its record would not yet be refused as expired; the tombstone is scored by the
--   later of the two, so it stays until the window has closed on that record too
-- Touches: <prefix>t:<id> (deleted, or left as a tombstone), <prefix>idem:<key> (deleted when
--   it still names this task), the listing indexes ix:f:<state>[:<kind>] and ix:sub[:<kind>],
--   and the KEYS above. Only a task whose hash says it is in ARGV[4] (a final state) is touched:
--   an index entry of a task in any other state is dropped from the index alone.
-- Returns: {removed, tombstoned, index entries dropped without a task}; a resent call the
--   first send's answer (KEYS[5]), nothing done twice.
local prefix, audit, maxlen, state = ARGV[1], ARGV[2] == "1", ARGV[3], ARGV[4]
local cutoff, page, tomb_line = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local answered = redis.call("GET", KEYS[5])
if answered then
  local a, b, c = string.match(answered, "^(%d+)|(%d+)|(%d+)$")
  return {tonumber(a), tonumber(b), tonumber(c)}
end
local function answer(removed, tombs, stale)
  redis.call("SET", KEYS[5], removed .. "|" .. tombs .. "|" .. stale, "PX", 120000)
  return {removed, tombs, stale}
end
if state == "tomb" then
  local ids = redis.call("ZRANGEBYSCORE", KEYS[4], "-inf", cutoff, "LIMIT", 0, page)
  local removed = 0
  for _, id in ipairs(ids) do
    local tk = prefix .. "t:" .. id
    if redis.call("HGET", tk, "tomb") == "1" then
      redis.call("DEL", tk)
      removed = removed + 1
    end
  end
  zrem_chunks(KEYS[4], ids)
  return answer(removed, 0, #ids - removed)
end
if not (state == "succeeded" or state == "dead" or state == "cancelled"
    or state == "quarantined") then
  return redis.error_reply("ERR_STATE " .. state .. " is not a final state")
end
local index = prefix .. "ix:f:" .. state
local ids = redis.call("ZRANGEBYSCORE", index, "-inf", cutoff, "LIMIT", 0, page)
local removed, tombs, stale, by_kind = 0, 0, 0, {}
for _, id in ipairs(ids) do
  local tk = prefix .. "t:" .. id
  local h = redis.call("HMGET", tk, "state", "k", "ik", "end", "tomb", "rs")
  if h[1] == state and not h[5] then
    local kind = h[2] or kind_of(prefix, id)
    local kids = by_kind[kind]
    if not kids then kids = {}; by_kind[kind] = kids end
    kids[#kids + 1] = id
    if h[3] and h[3] ~= "" then
      local ik = prefix .. "idem:" .. h[3]
      if redis.call("GET", ik) == id then redis.call("DEL", ik) end
    end
    redis.call("DEL", tk)
    local ended = tonumber(h[4] or "0") or 0
    local issued = math.max(ended, tonumber(h[6] or "0") or 0)
    if issued > tomb_line then
      redis.call("HSET", tk, "state", state, "fin", "", "tomb", "1", "end", ended, "k", kind)
      redis.call("ZADD", KEYS[4], issued, id)
      tombs = tombs + 1
    else
      removed = removed + 1
    end
  else
    stale = stale + 1
  end
end
zrem_chunks(index, ids)
for kind, kids in pairs(by_kind) do
  zrem_chunks(prefix .. "ix:f:" .. state .. ":" .. kind, kids)
  zrem_chunks(prefix .. "ix:sub:" .. kind, kids)
  zrem_chunks(prefix .. "ix:sub", kids)
end
local gone = removed + tombs
if gone > 0 then
  redis.call("HINCRBY", KEYS[1], state, -gone)
  redis.call("HINCRBY", KEYS[2], "purged", gone)
  if audit then
    redis.call("XADD", KEYS[3], "MAXLEN", "~", maxlen, "*", "ev", "purged", "state", state,
      "n", gone, "tombstones", tombs, "cutoff", ARGV[5])
  end
end
return answer(removed, tombs, stale)
