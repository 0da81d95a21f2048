-- wrk script for POST /v1/usage. Every record id is unique across threads,
-- requests and runs: RUN-THREAD-REQUEST-INDEX, so nothing is a duplicate;
-- with BENCH_IDS=random the REQUEST-INDEX part is 16 random hex digits
-- instead (ids in no order, as a reporter of UUIDs sends them).
-- Environment: BENCH_KEY (license key), BENCH_BATCH (records per POST),
-- BENCH_RUN (a nonce for this run), BENCH_IDS (counter or random).
local threads = {}
local nthreads = 0

function setup(thread)
  nthreads = nthreads + 1
  thread:set("tid", nthreads)
  table.insert(threads, thread)
end

function init(args)
  batch = tonumber(os.getenv("BENCH_BATCH") or "1")
  run = os.getenv("BENCH_RUN") or "run"
  headers = {
    ["Authorization"] = "Token " .. (os.getenv("BENCH_KEY") or ""),
    ["Content-Type"] = "application/json",
  }
  n, bad, accepted, dups = 0, 0, 0, 0
  random_ids = os.getenv("BENCH_IDS") == "random"
  math.randomseed(os.time() * 64 + tid)
end

local function rec_id(i)
  if random_ids then
    return string.format("%s-%d-%08x%08x", run, tid,
      math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
  end
  return string.format("%s-%d-%d-%d", run, tid, n, i)
end

function request()
  n = n + 1
  local recs = {}
  for i = 1, batch do
    recs[i] = string.format('{"id":"%s","product":"engine",' ..
      '"metric":"audio_seconds","quantity":1.5,"ts":"2026-01-01T00:00:00Z"}',
      rec_id(i))
  end
  return wrk.format("POST", "/v1/usage", headers,
    '{"records":[' .. table.concat(recs, ",") .. ']}')
end

function response(status, hdrs, body)
  if status ~= 202 then
    bad = bad + 1
    return
  end
  local a, d = body:match('"accepted":(%d+),"duplicates":(%d+)')
  accepted = accepted + (tonumber(a) or 0)
  dups = dups + (tonumber(d) or 0)
end

function done(summary, latency, requests)
  local b, a, d = 0, 0, 0
  for _, t in ipairs(threads) do
    b = b + t:get("bad")
    a = a + t:get("accepted")
    d = d + t:get("dups")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,' ..
    '"err_timeout":%d,"not_202":%d,"accepted":%d,"duplicates":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout, b, a, d))
end
