from __future__ import annotations

import gzip

import pytest
from fastapi.testclient import TestClient

from app.core.compression import GZIP_MAGIC, accepts_gzip, gunzip_bytes, gzip_bytes


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        ("", False),
        ("identity", False),
        ("gzip", True),
        ("GZip", True),
        ("x-gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.8, *;q=0.1", True),
        ("deflate , gzip ; q=0.5", True),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("gzip;q=0, *", False),  # an explicit refusal wins over the wildcard
        ("*", True),
        ("*;q=0", False),
        ("br, *;q=0", False),
        ("gzip;q=nonsense", False),
        ("gzip;q=2", False),
        ("gzipped", False),
        ("identity;q=1, gzip;q=0.001", True),
        ("gzip;Q=0", False),  # parameter names are case-insensitive
        ("gzip, x-gzip;q=0", True),  # the same coding twice: the higher q counts
        ("x-gzip;q=0, gzip;q=0.5", True),
    ],
)
def test_accepts_gzip_reads_q_values(header: str | None, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def test_gzip_bytes_is_a_gzip_stream_and_deterministic() -> None:
    data = b'{"x": 1}' * 1000
    packed = gzip_bytes(data)
    assert packed.startswith(GZIP_MAGIC)
    assert packed == gzip_bytes(data)  # mtime 0: equal input, equal bytes
    assert gzip.decompress(packed) == data
    assert gunzip_bytes(gzip.compress(data)) == data


@pytest.mark.parametrize("header", ["gzip;q=0", "identity", "br"])
def test_middleware_does_not_gzip_for_a_client_that_refuses_it(
    client: TestClient, header: str
) -> None:
    resp = client.get("/api/v1/asset-classes", headers={"Accept-Encoding": header})
    assert len(resp.content) >= 1024  # big enough that gzip would apply
    assert "content-encoding" not in resp.headers
    assert resp.headers.get_list("vary") == ["Accept-Encoding"]
    assert int(resp.headers["content-length"]) == len(resp.content)


@pytest.mark.parametrize("header", ["gzip", "*", "br;q=1, gzip;q=0.5"])
def test_middleware_gzips_once_for_a_client_that_accepts_it(
    client: TestClient, header: str
) -> None:
    with client.stream("GET", "/api/v1/asset-classes", headers={"Accept-Encoding": header}) as r:
        raw = b"".join(r.iter_raw())
        assert r.headers["content-encoding"] == "gzip"
        assert r.headers.get_list("vary") == ["Accept-Encoding"]
        assert int(r.headers["content-length"]) == len(raw)
    assert gzip.decompress(raw).startswith(b"{")


@pytest.mark.parametrize(
    "path",
    [
        "/health",
        "/api/v1/asset-classes/RMBS",
        "/api/v1/asset-classes?size=2",  # 874 bytes: under the threshold
    ],
)
def test_middleware_leaves_a_small_response_alone(client: TestClient, path: str) -> None:
    # Below 1024 bytes gzip saves little and costs a compression per request.
    with client.stream("GET", path, headers={"Accept-Encoding": "gzip"}) as r:
        raw = b"".join(r.iter_raw())
        assert r.status_code == 200
        assert "content-encoding" not in r.headers
        assert int(r.headers["content-length"]) == len(raw)
    assert len(raw) < 1024
    assert not raw.startswith(GZIP_MAGIC)
    assert raw.startswith(b"{")
