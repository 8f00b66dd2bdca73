-- wrk script used by bench/run.sh for every run.
--
-- 1. If WRK_CONNECT_HOST is set, connect to that address instead of resolving
--    the URL's host. The URL's host is still what wrk sends as TLS SNI and as
--    the Host header, so `https://bench.localhost:PORT/` reaches 127.0.0.1
--    with SNI "bench.localhost" even where *.localhost does not resolve (and
--    without touching /etc/hosts).
-- 2. At the end, print one machine-readable line with exact figures
--    (wrk's own summary rounds them); run.sh parses it.

local connect_host = os.getenv("WRK_CONNECT_HOST")
if connect_host and connect_host ~= "" then
  function wrk.resolve(host, service)
    wrk.addrs = wrk.lookup(connect_host, service)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d bytes=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d" ..
    " err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.bytes, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
