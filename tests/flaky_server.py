"""A small threaded HTTP server for download tests: it serves a blank page at `/`, the runtime bundle
under `/dist/` and one model folder under `/models/m/`, and serves a chosen shard badly (the first
`times` responses send half of it, then close the connection, "drop", or hold it open without
sending more, "stall"); Range requests get 206 with Content-Range. With `cors=True` it answers as a
CDN hosting the folder for other origins would: the headers `webbuild serve` puts on its model
folders (webbuild/serve/cors.py), and 204 to OPTIONS preflights.
"""

from __future__ import annotations

import re
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from browser_support import REPO
from webbuild.serve.cors import PREFLIGHT_HEADERS, SHARED_HEADERS

TYPES = {".js": "text/javascript", ".json": "application/json", ".wasm": "application/wasm", ".html": "text/html",
         ".bin": "application/octet-stream"}
STALL_S = 20  # how long a stalled response is held open (far beyond the test's stall timeout)


class FlakyServer:
    """Serves `/` (a blank page), `/dist/` and `/models/m/`; `bad` (shard file name, mode, times) is
    served badly; `log` records (path, Range header) of every request (OPTIONS: (path, "OPTIONS"))."""

    def __init__(self, model: Path, *, cors: bool = False):
        self.model = model
        self.cors = cors
        self.bad: tuple[str, str, int] | None = None
        self.log: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def end_headers(self):
                if server.cors:
                    for name, value in SHARED_HEADERS.items():
                        self.send_header(name, value)
                super().end_headers()

            def do_OPTIONS(self):  # noqa: N802  (http.server's name)
                with server.lock:
                    server.log.append((self.path.split("?")[0], "OPTIONS"))
                if not server.cors:
                    self.send_error(HTTPStatus.METHOD_NOT_ALLOWED)
                    return
                self.send_response(HTTPStatus.NO_CONTENT)
                for name, value in PREFLIGHT_HEADERS.items():
                    if name.lower() != "access-control-allow-origin":  # end_headers adds it
                        self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):  # noqa: N802  (http.server's name)
                path = self.path.split("?")[0]
                with server.lock:
                    server.log.append((path, self.headers.get("Range")))
                if path == "/":
                    return self._send(b"<!doctype html><title>downloads</title>", ".html")
                if path.startswith("/dist/"):
                    file = REPO / "dist" / path[len("/dist/"):]
                elif path.startswith("/models/m/"):
                    file = server.model / path[len("/models/m/"):]
                else:
                    file = Path("/nonexistent")
                if not file.is_file():
                    self.send_error(HTTPStatus.NOT_FOUND)
                    return None
                data = file.read_bytes()
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match:
                    start = int(match.group(1))
                with server.lock:
                    bad = server.bad if server.bad and server.bad[0] == file.name and server.bad[2] > 0 else None
                    if bad:
                        server.bad = (bad[0], bad[1], bad[2] - 1)
                self.send_response(HTTPStatus.PARTIAL_CONTENT if start else HTTPStatus.OK)
                self.send_header("Content-Type", TYPES.get(file.suffix, "application/octet-stream"))
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                body = data[start:]
                if not bad:
                    self.wfile.write(body)
                    return None
                self.wfile.write(body[:len(body) // 2])
                self.wfile.flush()
                # drop: let the client take in the first half before the connection breaks off
                time.sleep(STALL_S if bad[1] == "stall" else 0.5)
                self.close_connection = True
                return None

            def _send(self, body: bytes, suffix: str):
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", TYPES[suffix])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
