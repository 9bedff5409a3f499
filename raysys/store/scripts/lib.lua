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
