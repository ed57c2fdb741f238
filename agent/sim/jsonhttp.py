"""The small JSON-over-HTTP plumbing the simulators' admin interfaces share (``http.server``)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 65536


class JsonHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests and technicians read the JSON, not an access log

    def reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self) -> dict[str, Any]:
        """The request's JSON object; ``ValueError`` for anything else."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError(f"request body over {MAX_BODY} bytes")
        body = json.loads(self.rfile.read(length) if length else b"{}")
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        return body

    def not_found(self) -> None:
        self.reply(404, {"error": f"no such resource {self.path}"})


def serve_in_thread(
    handler: type[JsonHandler], port: int, name: str, host: str = "127.0.0.1"
) -> ThreadingHTTPServer:
    """Serve ``handler`` on ``host``:``port`` (0: any free port) in a daemon thread."""
    httpd = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=httpd.serve_forever, name=name, daemon=True).start()
    return httpd
