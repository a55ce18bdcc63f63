-- Sends the bench subscription's key on every request (to all three targets, so the
-- requests are byte-for-byte the same whichever server is under test).
wrk.headers["X-Subscription-Key"] = "tg_bench_loadgen_primary_0f3a9c6e1b8d4a27"
