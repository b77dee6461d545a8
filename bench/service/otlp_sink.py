"""A stand-in OTLP/HTTP collector for tracing.sh: answers every POST with 200 and counts the
spans it receives per `service.name`, so the benchmark can show that each traced server really
exported (and how many spans it dropped, if any). Loopback only.

    python otlp_sink.py PORT COUNTS_FILE    # COUNTS_FILE (JSON) is rewritten after each POST
"""

from __future__ import annotations

import http.server
import json
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

port, counts_file = int(sys.argv[1]), Path(sys.argv[2])
counts: Counter[str] = Counter()
lock = threading.Lock()


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session expects

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        with lock:
            for rs in export.resource_spans:
                attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                name = attrs.get("service.name", "?")
                counts[name] += sum(len(ss.spans) for ss in rs.scope_spans)
                counts[f"{name}:posts"] += 1
            tmp = counts_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(counts))
            tmp.replace(counts_file)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


counts_file.write_text("{}")
http.server.ThreadingHTTPServer(("127.0.0.1", port), Sink).serve_forever()
