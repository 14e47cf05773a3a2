-- wrk script: POST a distinct pod per request (name = prefix-thread-counter).
-- The prefix and bearer token come from the environment (set by bench/api.py).
local prefix = os.getenv("DOCKYARD_BENCH_PREFIX") or "wrk"
local token = os.getenv("DOCKYARD_BENCH_TOKEN")
local body_template = [[{"apiVersion":"v1","kind":"Pod","metadata":{"name":"%s","labels":{"app":"bench","tier":"load"}},"spec":{"containers":[{"name":"app","image":"busybox:1.36","command":["sleep","3600"],"ports":[{"containerPort":8080,"name":"http"}],"env":[{"name":"MODE","value":"bench"}],"resources":{"requests":{"cpu":"10m","memory":"16Mi"}}}]}}]]
local threads = {}
local counter = 0
local id = 0

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. token
end

function request()
  counter = counter + 1
  local name = string.format("%s-%d-%d", prefix, id, counter)
  return wrk.format(nil, "/api/v1/namespaces/default/pods", nil, string.format(body_template, name))
end

local bad = 0
function response(status, headers, body)
  if status ~= 201 then bad = bad + 1 end
end

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, summary.errors.status + summary.errors.connect
    + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
