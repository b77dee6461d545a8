"""Median latency of a 360-month cashflow projection, uncached against cached, as two kinds of
client see it (sequential requests on one keep-alive connection each):

  gzip      sends `Accept-Encoding: gzip` (as browsers, curl --compressed and python-requests do)
            and gets the body compressed; the time includes gunzipping it, as such a client must
            before it can use the JSON.
  identity  sends `Accept-Encoding: identity` (http.client's default; the figures before the cache
            stored gzip were taken this way) and gets plain JSON.

Uncached = a new assumption set per call (computed, compressed and stored); cached = one assumption
set repeated (served from Redis); floor (with FLOOR_PORT) = the same cached answer from floor_app.py,
a bare ASGI app under the same Gunicorn setup: the least a hit can cost on this stack. The calls
alternate, so all see the same load on a shared machine. Parsing the JSON is not timed (it is
checked after the clock stops).

    python cache_ratio.py HOST PORT POOL_ID SAMPLES [FLOOR_PORT]
"""

from __future__ import annotations

import http.client
import json
import random
import statistics
import sys
import time
import zlib
from pathlib import Path

host, port, pool_id, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
floor_port = int(sys.argv[5]) if len(sys.argv) > 5 else None
path = f"/api/v1/asset-pools/{pool_id}/cashflows"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


class Client:
    def __init__(self, accept_encoding: str, to_port: int) -> None:
        self.accept_encoding = accept_encoding
        self.conn = http.client.HTTPConnection(host, to_port)

    def call(self, body: dict[str, object]) -> tuple[float, str, int]:
        """(seconds until the JSON bytes are in hand, X-Cache, bytes on the wire)"""
        payload = json.dumps(body)
        headers = {"Content-Type": "application/json", "Accept-Encoding": self.accept_encoding}
        start = time.perf_counter()
        self.conn.request("POST", path, body=payload, headers=headers)
        resp = self.conn.getresponse()
        raw = resp.read()
        gzipped = resp.getheader("Content-Encoding") == "gzip"
        data = zlib.decompress(raw, wbits=31) if gzipped else raw
        elapsed = time.perf_counter() - start
        assert resp.status == 200, (resp.status, data[:200])
        assert gzipped is (self.accept_encoding == "gzip"), resp.getheaders()
        assert len(json.loads(data)["cashflows"]) >= 360
        return elapsed, resp.getheader("X-Cache") or "", len(raw)


def measure(accept_encoding: str, base: float) -> dict[str, object]:
    client = Client(accept_encoding, port)
    floor = Client(accept_encoding, floor_port) if floor_port else None
    repeated = {"cpr": round(base, 9), "months": 360}
    client.call(repeated)  # fill the entry the cached calls read
    for i in range(5):  # warm the connections and the workers
        client.call(repeated)
        client.call({"cpr": base + 0.01 + i * 1e-9, "months": 360})
        if floor:
            floor.call(repeated)
    uncached: list[float] = []
    cached: list[float] = []
    floored: list[float] = []
    wire = {}
    for i in range(n):
        t, tag, size = client.call({"cpr": base + 0.02 + i * 1e-9, "months": 360})
        assert tag == "MISS", tag
        uncached.append(t)
        wire["uncached"] = size
        t, tag, size = client.call(repeated)
        assert tag == "HIT", tag
        cached.append(t)
        wire["cached"] = size
        if floor:
            t, tag, size = floor.call(repeated)
            assert tag == "FLOOR", tag
            floored.append(t)
            wire["floor"] = size
    u, c = statistics.median(uncached), statistics.median(cached)
    result: dict[str, object] = {
        "accept_encoding": accept_encoding,
        "uncached_median_ms": round(u * 1000, 3),
        "cached_median_ms": round(c * 1000, 3),
        "cached_over_uncached": round(c / u, 3),
    }
    if floored:
        f = statistics.median(floored)
        result |= {"floor_median_ms": round(f * 1000, 3), "floor_over_uncached": round(f / u, 3)}
    return result | {"response_bytes": wire}


# A fresh assumption range per run, so a rerun against the same server still misses.
base = 0.03 + random.randrange(10**6) * 1e-8
before = loadavg()
results = {
    "gzip": measure("gzip", base),
    "identity": measure("identity", base + 0.05),
}
print(
    json.dumps(
        {**results, "samples": n, "loadavg_before": before, "loadavg_after": loadavg()},
    )
)
