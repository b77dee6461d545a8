"""Median latency of a 360-month cashflow projection: uncached (a new assumption set each call,
so every call computes and stores) against cached (the same call repeated), sequential, keep-alive."""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import time

host, port, pool_id, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
conn = http.client.HTTPConnection(host, port)
path = f"/api/v1/asset-pools/{pool_id}/cashflows"


def call(body: dict[str, object]) -> tuple[float, str]:
    start = time.perf_counter()
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    elapsed = time.perf_counter() - start
    assert resp.status == 200, (resp.status, data[:200])
    assert len(json.loads(data)["cashflows"]) >= 360
    return elapsed, resp.getheader("X-Cache") or ""


uncached = []
for i in range(n):
    t, tag = call({"cpr": 0.05 + i * 1e-7, "months": 360})
    assert tag == "MISS"
    uncached.append(t)
call({"cpr": 0.07, "months": 360})
cached = []
for _ in range(n):
    t, tag = call({"cpr": 0.07, "months": 360})
    assert tag == "HIT"
    cached.append(t)
u, c = statistics.median(uncached), statistics.median(cached)
print(json.dumps({"uncached_median_ms": round(u * 1000, 3), "cached_median_ms": round(c * 1000, 3),
                  "cached_over_uncached": round(c / u, 3), "samples": n}))
