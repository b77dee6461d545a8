"""Gunicorn worker: uvicorn-worker's UvicornWorker whose shutdown does not reset requests in flight.

When a uvicorn worker stops (Gunicorn's max_requests recycling, a reload, a stop) it closes at once
every connection that is not in the middle of a request. Some of those already carry a request the
worker has not read yet: connections it accepted a moment ago (asyncio accepts in batches), and a
proxy's kept-alive connections that nginx just picked. Closing a socket with unread data sends a TCP
reset; nginx retries a GET elsewhere but answers a POST or PATCH with 502. Measured through nginx at
1,000 POST/s with max_requests 1000: about one 502 per recycle (roles/app/README.md).

Here an idle connection is given DRAIN_SECONDS instead: a request that arrives in that time is
served with `Connection: close`, then the connection closes; one that stays silent is closed after
it. Requests in progress are untouched (they finish with `Connection: close`, as before).
"""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

# A request already on the wire arrives well within this; the stopping worker waits this long.
DRAIN_SECONDS = 0.2


class DrainingHttpToolsProtocol(HttpToolsProtocol):
    draining = False

    def shutdown(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.draining = True
            self.loop.call_later(DRAIN_SECONDS, self._close_if_idle)
        else:
            self.cycle.keep_alive = False

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.draining and self.cycle is not None:
            self.cycle.keep_alive = False  # answer it, then close

    def _close_if_idle(self) -> None:
        idle = self.cycle is None or self.cycle.response_complete
        if idle and not self.transport.is_closing():
            self.transport.close()


class DrainingUvicornWorker(UvicornWorker):
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "http": DrainingHttpToolsProtocol,
    }
