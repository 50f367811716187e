-- bench/lua/append.lua: wrk script of bench.api, POST appends with unique ids.
--
--   wrk -t1 -c64 -d10s -s bench/lua/append.lua -H 'Authorization: Bearer ...' \
--       http://127.0.0.1:PORT -- TEMPLATES PER_REQUEST STORIES SLUG_PREFIX NONCE
--
-- TEMPLATES: a file of event JSON objects, one a line, holding the markers
--   __EVENT_ID__ (replaced by a fresh UUID) and __DEV_ID__ (a fresh development id);
-- PER_REQUEST: events per request: 1 sends one object, more send a JSON array;
-- STORIES, SLUG_PREFIX: each request goes to story SLUG_PREFIX..%04d of a random
--   number below STORIES (every one of them opened before the run);
-- NONCE: a number unique to this run, part of every id, so no id repeats.
--
-- The service refuses a development id already used in a story and answers a
-- known event id as a replay, so ids are built from (nonce, thread, counter).
-- Every response's status is counted; done() prints one line per status and a
-- summary line that bench.api parses:
--   wrk-status <status> <count>
--   wrk-result requests=N duration_us=N bytes=N connect=N read=N write=N
--              timeout=N p50_us=N p99_us=N

local threads = {}
local thread_count = 0

function setup(thread)
   thread_count = thread_count + 1
   thread:set("tid", thread_count)
   table.insert(threads, thread)
end

-- each template split into literal pieces and markers, once, in init()
local templates = {}
local per_request, stories, prefix, nonce
local counter = 0
local cursor = 0
statuses = {}

local MARKERS = { "__EVENT_ID__", "__DEV_ID__" }

local function split(line)
   local parts = {}
   local at = 1
   while true do
      local first, last, which = nil, nil, nil
      for _, marker in ipairs(MARKERS) do
         local s, e = string.find(line, marker, at, true)
         if s and (first == nil or s < first) then
            first, last, which = s, e, marker
         end
      end
      if first == nil then
         table.insert(parts, string.sub(line, at))
         return parts
      end
      table.insert(parts, string.sub(line, at, first - 1))
      table.insert(parts, which)
      at = last + 1
   end
end

function init(args)
   local file = assert(io.open(args[1], "r"))
   for line in file:lines() do
      if #line > 0 then
         table.insert(templates, split(line))
      end
   end
   file:close()
   assert(#templates > 0, "no templates in " .. args[1])
   per_request = tonumber(args[2])
   stories = tonumber(args[3])
   prefix = args[4]
   nonce = tonumber(args[5])
   math.randomseed(nonce + tid)
   cursor = (tid * 7919) % #templates
   wrk.headers["Content-Type"] = "application/json"
end

local function event()
   counter = counter + 1
   cursor = cursor % #templates + 1
   local parts = templates[cursor]
   local out = {}
   for i, part in ipairs(parts) do
      if part == "__EVENT_ID__" then
         out[i] = string.format("%08x-%04x-4000-8000-%012x", nonce, tid, counter)
      elseif part == "__DEV_ID__" then
         out[i] = string.format("d%x-%x-%x", nonce, tid, counter)
      else
         out[i] = part
      end
   end
   return table.concat(out)
end

function request()
   local path = string.format("/api/stories/%s%04d/events", prefix, math.random(0, stories - 1))
   local body
   if per_request == 1 then
      body = event()
   else
      local events = {}
      for i = 1, per_request do
         events[i] = event()
      end
      body = "[" .. table.concat(events, ",") .. "]"
   end
   return wrk.format("POST", path, nil, body)
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local total = {}
   for _, thread in ipairs(threads) do
      local counts = thread:get("statuses") or {}
      for status, count in pairs(counts) do
         total[status] = (total[status] or 0) + count
      end
   end
   for status, count in pairs(total) do
      io.write(string.format("wrk-status %d %d\n", status, count))
   end
   local e = summary.errors
   io.write(string.format(
      "wrk-result requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d "
         .. "timeout=%d p50_us=%d p99_us=%d\n",
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
      e.timeout, latency:percentile(50), latency:percentile(99)
   ))
end
