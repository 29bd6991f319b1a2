"""Model downloads over a network that misbehaves, in headless chromium with `worker: true`: a
shard whose connection drops half-way resumes with a Range request and the model loads and answers;
a shard that stalls every time is abandoned after `stallTimeoutMs` with a typed `model-load` error.

The page, the runtime bundle and the model folder come from a small threaded HTTP server in this
test, which serves the chosen shard badly: the first `times` responses send half of it, then
close the connection ("drop") or hold it open without sending more ("stall"); Range requests get
206 with Content-Range.
"""

from __future__ import annotations

import re
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from browser_support import REPO, page_at

TYPES = {".js": "text/javascript", ".json": "application/json", ".wasm": "application/wasm", ".html": "text/html",
         ".bin": "application/octet-stream"}
STALL_S = 20  # how long a stalled response is held open (far beyond the test's stall timeout)

LOAD_JS = """async ([url, options]) => {
  const wb = await import('/dist/webbuild.js');
  const started = performance.now();
  try {
    const engine = await wb.createEngine(url, options);
    const reply = await engine.chat.completions.create({messages: [{role: 'user', content: 'w5 w9'}],
                                                        temperature: 0, max_tokens: 3});
    await engine.unload();
    return {ok: true, text: reply.choices[0].message.content, seconds: (performance.now() - started) / 1000};
  } catch (err) {
    return {ok: false, code: err.code, message: String(err.message), seconds: (performance.now() - started) / 1000};
  }
}"""


class FlakyServer:
    """Serves `/` (a blank page), `/dist/` and `/models/m/`; `bad` (shard file name, mode, times) is
    served badly; `log` records (path, Range header) of every request."""

    def __init__(self, model: Path):
        self.model = model
        self.bad: tuple[str, str, int] | None = None
        self.log: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

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


@pytest.fixture(scope="module")
def flaky(tiny_llama_dirs, model_build):
    folder = model_build(tiny_llama_dirs["untied"][0], "q4f32_1", "webgpu")
    server = FlakyServer(folder)
    yield server
    server.close()


def _shard(flaky) -> str:
    return sorted(p.name for p in flaky.model.glob("params_shard_*.bin"))[0]


def _load_with_bad_shard(browser, flaky, mode: str, times: int, stall_ms: int) -> tuple[dict, list]:
    """Load the model in a worker while the first shard is served badly: (result, its requests' Range)."""
    shard = _shard(flaky)
    flaky.bad, flaky.log = (shard, mode, times), []
    options = {"worker": True, "backend": "wasm", "cache": "none", "stallTimeoutMs": stall_ms}
    with page_at(browser, flaky.url) as page:
        result = page.evaluate(LOAD_JS, [f"{flaky.url}models/m/", options])
    return result, [r for p, r in flaky.log if p.endswith(shard)]


def test_a_dropped_shard_resumes_with_a_range_request_in_a_worker(browser, flaky):
    result, ranges = _load_with_bad_shard(browser, flaky, "drop", 1, 5000)
    assert result["ok"], result
    assert ranges[0] is None and len(ranges) == 2 and re.fullmatch(r"bytes=\d+-", ranges[1]), ranges


def test_a_shard_that_keeps_stalling_is_a_model_load_error_in_a_worker(browser, flaky):
    result, ranges = _load_with_bad_shard(browser, flaky, "stall", 100, 500)
    assert not result["ok"] and result["code"] == "model-load", result
    assert result["seconds"] < STALL_S, result  # abandoned on the timeout, not when the server gave up
    assert len(ranges) >= 2
