-- lib.lua: helpers every task script shares; the loader (raysys/store/lua.py) puts this text in
-- front of each script that starts with "-- uses: lib", so each still runs as one atomic script.
-- Keys are built from the namespace prefix (one hash tag: valid on Redis Cluster):
--   <prefix>q:<kind>   zset: pending tasks of one kind, score -priority * 2^40 + sequence
--   <prefix>qkinds     hash: kind -> pending tasks of that kind (no entry when none)
--   <prefix>inflight   hash: kind -> leased tasks of that kind (no entry when none)
--   <prefix>t:<id>     hash field "k": the task's kind (routing only; the signed record decides
--                      what runs), filled from the record for tasks stored before it existed.
local function server_ms()
  local t = redis.call("TIME")
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function kind_of(prefix, id)
  local tk = prefix .. "t:" .. id
  local kind = redis.call("HGET", tk, "k")
  if kind then return kind end
  -- a record from before kind queues existed: "RS1.<kid>.<alg>.<sig>.<json>"
  local rec = redis.call("HGET", tk, "rec")
  local body = rec and string.match(rec, "^[^.]*%.[^.]*%.[^.]*%.[^.]*%.(.*)$")
  local ok, doc = pcall(cjson.decode, body or "")
  kind = "?"
  if ok and type(doc) == "table" and type(doc.body) == "table"
      and type(doc.body.kind) == "string" then
    kind = doc.body.kind
  end
  redis.call("HSET", tk, "k", kind)
  return kind
end

local function count(key, field, delta)
  if redis.call("HINCRBY", key, field, delta) <= 0 then redis.call("HDEL", key, field) end
end

local function enqueue(prefix, kind, score, id)
  if redis.call("ZADD", prefix .. "q:" .. kind, score, id) == 1 then
    count(prefix .. "qkinds", kind, 1)
  end
end

local function dequeue(prefix, kind, id)
  if redis.call("ZREM", prefix .. "q:" .. kind, id) == 1 then
    count(prefix .. "qkinds", kind, -1)
  end
end

local function left_flight(prefix, id)
  count(prefix .. "inflight", kind_of(prefix, id), -1)
end

-- A task reached a final state at server time `now` (the caller sets its hash's "end"): noted
-- here, written by flush_finished(prefix) once per script run, batched per state and kind:
--   <prefix>ix:f:<state>, <prefix>ix:f:<state>:<kind>  zsets: id -> when it finished (ms); what
--     listing and retention read
--   <prefix>ix:seal  zset of live tasks: id -> when its record was sealed (ms); a final task
--     leaves it (the reaper re-seals only live records before the replay window closes)
--   <prefix>stats "completed:<state>"  monotonic counters /metrics serves (a purge or a
--     redrive never takes them back)
local finished_acc = {}
local function finished(id, state, kind, now)
  local by_kind = finished_acc[state]
  if not by_kind then by_kind = {}; finished_acc[state] = by_kind end
  local z = by_kind[kind]
  if not z then z = {}; by_kind[kind] = z end
  z[#z + 1] = now
  z[#z + 1] = id
end

local function zadd_chunks(key, z)
  for j = 1, #z, 2000 do redis.call("ZADD", key, unpack(z, j, math.min(j + 1999, #z))) end
end

local function zrem_chunks(key, ids)
  for j = 1, #ids, 2000 do redis.call("ZREM", key, unpack(ids, j, math.min(j + 1999, #ids))) end
end

local function flush_finished(prefix)
  local ids = {}
  for state, by_kind in pairs(finished_acc) do
    local total = 0
    for kind, z in pairs(by_kind) do
      zadd_chunks(prefix .. "ix:f:" .. state, z)
      zadd_chunks(prefix .. "ix:f:" .. state .. ":" .. kind, z)
      for j = 2, #z, 2 do ids[#ids + 1] = z[j] end
      total = total + #z / 2
    end
    redis.call("HINCRBY", prefix .. "stats", "completed:" .. state, total)
  end
  if #ids > 0 then zrem_chunks(prefix .. "ix:seal", ids) end
  finished_acc = {}
end

-- Attempt history, kept in the task's own hash (removed with it): fields h1..h<HIST_KEEP>, the
-- oldest overwritten, counted by "hn"; each "<event>|<attempt>|<fence>|<holder>|<started ms>|
-- <ended ms>|<detail>" (detail last: it may hold "|"). Returns the field to HSET the entry into.
local HIST_KEEP = 20
local function history_field(tk)
  local n = redis.call("HINCRBY", tk, "hn", 1)
  return "h" .. ((n - 1) % HIST_KEEP + 1)
end

-- The newest history entry of task hash `tk` (nil when it has none).
local function last_entry(tk)
  local n = tonumber(redis.call("HGET", tk, "hn") or "0")
  if n == 0 then return nil end
  return redis.call("HGET", tk, "h" .. ((n - 1) % HIST_KEEP + 1))
end

local function entry(event, attempt, fence, holder, started, ended, detail)
  return event .. "|" .. (attempt or "") .. "|" .. (fence or "") .. "|" .. (holder or "") ..
    "|" .. (started or "") .. "|" .. (ended or "") .. "|" .. (detail or "")
end
