-- wrk script for benchmark (a): POST one quote_added event per request, round-robin over
-- BENCH_STREAMS pre-created streams named BENCH_PREFIX-<n>, and count responses by status.
-- Env: BENCH_KEY (writer API key; the bare app ignores it), BENCH_STREAMS, BENCH_PREFIX.

local key = os.getenv("BENCH_KEY") or "none"
local streams = tonumber(os.getenv("BENCH_STREAMS") or "1000")
local prefix = os.getenv("BENCH_PREFIX") or "bench"
local body = '{"type":"quote_added","data":{"text":"It made onboarding twice as fast for our whole team.","speaker":"Jo"}}'

local threads = {}
local thread_count = 0

function setup(thread)
   thread:set("tid", thread_count)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

function init(args)
   counter = tid * 7919   -- spread threads over the streams
   statuses = {}
   headers = {}
   headers["Content-Type"] = "application/json"
   headers["Authorization"] = "Bearer " .. key
end

function request()
   counter = counter + 1
   local path = "/case-studies/" .. prefix .. "-" .. (counter % streams) .. "/events"
   return wrk.format("POST", path, headers, body)
end

function response(status, hdrs, resp_body)
   local s = tostring(status)
   statuses[s] = (statuses[s] or 0) + 1
end

function done(summary, latency, requests)
   local total = {}
   for _, thread in ipairs(threads) do
      local t = thread:get("statuses")
      for s, n in pairs(t) do total[s] = (total[s] or 0) + n end
   end
   local parts = {}
   for s, n in pairs(total) do table.insert(parts, string.format('"%s":%d', s, n)) end
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"statuses":{%s},' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"mean":%.1f,"max":%d}}\n',
      summary.requests, summary.duration, table.concat(parts, ","),
      summary.errors.connect, summary.errors.read, summary.errors.write,
      summary.errors.status, summary.errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.mean, latency.max))
end
