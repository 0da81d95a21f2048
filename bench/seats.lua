-- wrk script for POST /v1/seats at a proxy: each connection cycles over
-- its own BENCH_INSTANCES instance ids, so after the first round every
-- request is a renewal served out of the proxy's grant (no upstream).
-- Environment: BENCH_KEY, BENCH_INSTANCES (per thread, default 16).
local threads = {}
local nthreads = 0

function setup(thread)
  nthreads = nthreads + 1
  thread:set("tid", nthreads)
  table.insert(threads, thread)
end

function init(args)
  ninst = tonumber(os.getenv("BENCH_INSTANCES") or "16")
  key = os.getenv("BENCH_KEY") or ""
  n, bad = 0, 0
end

function request()
  n = n + 1
  return wrk.format("POST", "/v1/seats", {
    ["Authorization"] = "Token " .. key,
    ["X-Instance-Id"] = string.format("b-%d-%d", tid, n % ninst),
  }, "")
end

function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do b = b + t:get("bad") end
  io.write(string.format("RESULT rps=%.0f p50_us=%d p99_us=%d bad=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), b))
end
