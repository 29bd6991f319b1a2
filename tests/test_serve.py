"""`python -m webbuild serve`: headers, caching, ranges, gzip, path safety and the model listing.

Requests go to the aiohttp application in-process (aiohttp.test_utils inside asyncio.run); path
traversal attempts are sent as raw HTTP request lines, since an HTTP client would normalise them
away. One test runs the real CLI in a subprocess.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import select
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

from webbuild.errors import SourceNotFoundError
from webbuild.serve import ServeConfig, ServerStartError, check_folders, make_app, serve
from webbuild.serve.gzip_cache import GzipCache
from webbuild.serve.negotiate import accepts_gzip

REPO = Path(__file__).resolve().parent.parent
MODEL = "tiny-q4f32_1"
SECRET = b"TOP-SECRET-OUTSIDE-THE-SERVED-FOLDERS"
ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
             "Cross-Origin-Resource-Policy": "same-origin"}
CORP = "Cross-Origin-Resource-Policy"
SHARD_BYTES = 700_000  # several 256 KiB read chunks


@dataclass
class Reply:
    status: int
    headers: CIMultiDict
    body: bytes


def _chat_config() -> dict:
    return {
        "format": "webbuild-chat-config/1", "model_id": "tiny", "architecture": "llama",
        "quantization": "q4f32_1", "target": "webgpu", "model_lib": "model.wasm",
        "tensor_cache": "tensor-cache.json", "context_window_size": 2048, "prefill_chunk_size": 512,
        "webgpu": {"required_features": [], "required_limits": {"maxBufferSize": 134217728}},
        "memory": {"total_bytes_estimate": 123456789},
        "padding": ["x" * 40] * 20,
    }


def _write_model(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True)
    files = {
        "chat-config.json": json.dumps(_chat_config(), indent=1).encode(),
        "tensor-cache.json": json.dumps({"records": [{"name": f"w{i}", "shape": [4, 4]} for i in range(50)]}).encode(),
        "model.wasm": b"\0asm\1\0\0\0" + bytes(range(256)) * 40,
        "params_shard_0.bin": bytes((i * 7 + i // 251) % 256 for i in range(SHARD_BYTES)),
        "tokenizer.json": json.dumps({"model": {"vocab": {f"t{i}": i for i in range(100)}}}).encode(),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def _write_site(site: Path, dist: Path) -> dict[str, bytes]:
    site.mkdir()
    dist.mkdir()
    files = {
        "index.html": b"<!doctype html><title>chat</title>" + b"<p>hello</p>" * 40,
        "app.js": b"export const answer = 42;\n" * 20,
        "style.css": b"body { margin: 0; }\n" * 20,
        "worker.mjs": b"self.onmessage = () => {};\n" * 20,
        "note.txt": b"plain",
    }
    for name, data in files.items():
        (site / name).write_bytes(data)
    (site / "sub").mkdir()
    (dist / "runtime.js").write_bytes(b"export function run() {}\n" * 20)
    return files


@pytest.fixture
def tree(tmp_path):
    """A site, a dist bundle and a models folder with a good, a broken and a few odd model folders."""
    (tmp_path / "secret.txt").write_bytes(SECRET)
    outside = tmp_path / "outside_model"
    _write_model(outside)
    (outside / "secret.bin").write_bytes(SECRET)
    models = tmp_path / "models"
    files = _write_model(models / MODEL)
    (models / "broken").mkdir()
    (models / "broken" / "chat-config.json").write_text("{not json")
    (models / "no-config").mkdir()
    (models / "no-config" / "model.wasm").write_bytes(b"\0asm")
    (models / "half").mkdir()
    (models / "half" / "chat-config.json").write_text(json.dumps(_chat_config()))
    (models / "stray.txt").write_text("not a folder")
    (models / "escape").symlink_to(outside, target_is_directory=True)
    (models / MODEL / "passwd.json").symlink_to("/etc/passwd")
    (models / MODEL / "outside.bin").symlink_to(tmp_path / "secret.txt")
    (models / MODEL / "alias.bin").symlink_to("params_shard_0.bin")
    site_files = _write_site(tmp_path / "site", tmp_path / "dist")
    (tmp_path / "site" / "link.html").symlink_to(tmp_path / "secret.txt")
    config = ServeConfig(models=models, site=tmp_path / "site", dist=tmp_path / "dist")
    return config, files, site_files


async def _client_call(config: ServeConfig, method: str, path: str, headers: dict) -> Reply:
    async with TestClient(TestServer(make_app(config)), auto_decompress=False) as client:
        async with client.request(method, path, headers=headers) as resp:
            return Reply(resp.status, CIMultiDict(resp.headers), await resp.read())


def fetch(config: ServeConfig, path: str, method: str = "GET", **headers: str) -> Reply:
    """One request through aiohttp's client (header names use `_` for `-`; no gzip unless asked)."""
    named = {"Accept-Encoding": "identity", **{name.replace("_", "-"): value for name, value in headers.items()}}
    return asyncio.run(_client_call(config, method, path, named))


async def _raw_call(config: ServeConfig, target: str) -> tuple[int, bytes]:
    async with TestServer(make_app(config)) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode("latin-1"))
        data = await reader.read()
        writer.close()
    return int(data.split(b" ", 2)[1]), data


def raw_get(config: ServeConfig, target: str) -> tuple[int, bytes]:
    """Send `target` byte for byte as the request line (no client-side normalisation)."""
    return asyncio.run(_raw_call(config, target))


@pytest.mark.parametrize("path, expected", [
    ("/", "text/html; charset=utf-8"),
    ("/index.html", "text/html; charset=utf-8"),
    ("/app.js", "text/javascript; charset=utf-8"),
    ("/worker.mjs", "text/javascript; charset=utf-8"),
    ("/style.css", "text/css; charset=utf-8"),
    ("/dist/runtime.js", "text/javascript; charset=utf-8"),
    (f"/models/{MODEL}/model.wasm", "application/wasm"),
    (f"/models/{MODEL}/chat-config.json", "application/json"),
    (f"/models/{MODEL}/tensor-cache.json", "application/json"),
    (f"/models/{MODEL}/tokenizer.json", "application/json"),
    (f"/models/{MODEL}/params_shard_0.bin", "application/octet-stream"),
    ("/api/models", "application/json; charset=utf-8"),
])
def test_content_types(tree, path, expected):
    reply = fetch(tree[0], path)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == expected
    assert reply.headers.get("X-Content-Type-Options", "nosniff") == "nosniff"


def test_files_served_verbatim(tree):
    config, files, site_files = tree
    for name, data in files.items():
        assert fetch(config, f"/models/{MODEL}/{name}").body == data
    assert fetch(config, "/").body == site_files["index.html"]
    assert fetch(config, f"/models/{MODEL}/alias.bin").body == files["params_shard_0.bin"]


@pytest.mark.parametrize("method, path, headers, status", [
    ("GET", "/", {}, 200),
    ("GET", f"/models/{MODEL}/model.wasm", {"Accept-Encoding": "gzip"}, 200),
    ("GET", "/api/models", {}, 200),
    ("GET", f"/models/{MODEL}/params_shard_0.bin", {"Range": "bytes=0-3"}, 206),
    ("GET", f"/models/{MODEL}/params_shard_0.bin", {"Range": "bytes=9999999-"}, 416),
    ("GET", f"/models/{MODEL}/params_shard_0.bin", {"If-None-Match": "*"}, 304),
    ("HEAD", f"/models/{MODEL}/params_shard_0.bin", {}, 200),
    ("GET", "/missing.js", {}, 404),
    ("POST", "/api/models", {}, 405),
])
def test_isolation_headers_on_every_response(tree, method, path, headers, status):
    reply = fetch(tree[0], path, method, **{k.replace("-", "_"): v for k, v in headers.items()})
    assert reply.status == status
    shared = path.startswith("/models/") or path == "/api/models"
    for name, value in ISOLATION.items():
        assert reply.headers[name] == ("cross-origin" if shared and name == CORP else value)
    if shared:
        assert reply.headers["Access-Control-Allow-Origin"] == "*"
    else:
        assert "Access-Control-Allow-Origin" not in reply.headers


def test_isolation_headers_on_rejected_path(tree):
    status, data = raw_get(tree[0], "/models/%2e%2e/secret.txt")
    head = data.split(b"\r\n\r\n")[0].decode().lower()
    assert status == 400
    assert "cross-origin-opener-policy: same-origin" in head
    assert "cross-origin-embedder-policy: require-corp" in head


@pytest.mark.parametrize("path", ["/", "/app.js", f"/models/{MODEL}/chat-config.json",
                                  f"/models/{MODEL}/tensor-cache.json", f"/models/{MODEL}/params_shard_0.bin",
                                  f"/models/{MODEL}/model.wasm", "/api/models"])
def test_cache_control_is_revalidate(tree, path):
    assert fetch(tree[0], path).headers["Cache-Control"] == "no-cache"


def test_etag_and_304(tree):
    config = tree[0]
    path = f"/models/{MODEL}/params_shard_0.bin"
    first = fetch(config, path)
    etag = first.headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/")
    assert fetch(config, path).headers["ETag"] == etag
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        reply = fetch(config, path, If_None_Match=header)
        assert (reply.status, reply.body, reply.headers["ETag"]) == (304, b"", etag)
        assert reply.headers["Cache-Control"] == "no-cache"
    assert fetch(config, path, If_None_Match='"other"').status == 200


def test_etag_changes_when_file_is_rebuilt(tree):
    config = tree[0]
    shard = config.models / MODEL / "params_shard_0.bin"
    old = fetch(config, f"/models/{MODEL}/params_shard_0.bin").headers["ETag"]
    shard.write_bytes(b"rebuilt")
    os.utime(shard, ns=(1, 1))
    reply = fetch(config, f"/models/{MODEL}/params_shard_0.bin", If_None_Match=old)
    assert (reply.status, reply.body) == (200, b"rebuilt")
    assert reply.headers["ETag"] != old


@pytest.mark.parametrize("header, start, end", [
    ("bytes=0-9", 0, 9),
    ("bytes=100-", 100, SHARD_BYTES - 1),
    ("bytes=-50", SHARD_BYTES - 50, SHARD_BYTES - 1),
    ("bytes=-9999999", 0, SHARD_BYTES - 1),
    (f"bytes=5-{SHARD_BYTES + 100}", 5, SHARD_BYTES - 1),
    ("bytes=200000-650000", 200000, 650000),
])
def test_range_206(tree, header, start, end):
    config, files, _ = tree
    reply = fetch(config, f"/models/{MODEL}/params_shard_0.bin", Range=header, Accept_Encoding="gzip")
    assert reply.status == 206
    assert reply.headers["Content-Range"] == f"bytes {start}-{end}/{SHARD_BYTES}"
    assert int(reply.headers["Content-Length"]) == end - start + 1
    assert reply.body == files["params_shard_0.bin"][start:end + 1]


@pytest.mark.parametrize("header", [f"bytes={SHARD_BYTES}-", "bytes=5-2", "bytes=abc", "bytes=0-1,4-5",
                                    "bytes=-0", "bytes=-"])
def test_range_416(tree, header):
    reply = fetch(tree[0], f"/models/{MODEL}/params_shard_0.bin", Range=header)
    assert reply.status == 416
    assert reply.headers["Content-Range"] == f"bytes */{SHARD_BYTES}"


def test_range_on_compressible_file_is_not_gzipped(tree):
    config, files, _ = tree
    reply = fetch(config, f"/models/{MODEL}/model.wasm", Range="bytes=0-7", Accept_Encoding="gzip")
    assert reply.status == 206
    assert "Content-Encoding" not in reply.headers
    assert reply.body == files["model.wasm"][:8]


def test_if_range_with_stale_etag_sends_whole_file(tree):
    config, files, _ = tree
    path = f"/models/{MODEL}/params_shard_0.bin"
    etag = fetch(config, path, "HEAD").headers["ETag"]
    assert fetch(config, path, Range="bytes=0-3", If_Range=etag).status == 206
    stale = fetch(config, path, Range="bytes=0-3", If_Range='"stale"')
    assert (stale.status, stale.body) == (200, files["params_shard_0.bin"])


@pytest.mark.parametrize("path", ["/", "/app.js", "/style.css", "/dist/runtime.js", f"/models/{MODEL}/model.wasm",
                                  f"/models/{MODEL}/chat-config.json", f"/models/{MODEL}/tensor-cache.json"])
def test_gzip_when_accepted(tree, path):
    config = tree[0]
    plain = fetch(config, path)
    packed = fetch(config, path, Accept_Encoding="gzip, deflate, br")
    assert "Content-Encoding" not in plain.headers
    assert packed.headers["Content-Encoding"] == "gzip"
    assert packed.headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(packed.body) == plain.body
    assert len(packed.body) < len(plain.body)
    assert packed.headers["ETag"] != plain.headers["ETag"]
    revalidated = fetch(config, path, Accept_Encoding="gzip", If_None_Match=packed.headers["ETag"])
    assert revalidated.status == 304


def test_gzip_refused_or_not_asked(tree):
    config = tree[0]
    for encoding in ("identity", "gzip;q=0", "br", "*;q=0"):
        reply = fetch(config, f"/models/{MODEL}/model.wasm", Accept_Encoding=encoding)
        assert "Content-Encoding" not in reply.headers, encoding


def test_shards_are_never_gzipped(tree):
    config, files, _ = tree
    reply = fetch(config, f"/models/{MODEL}/params_shard_0.bin", Accept_Encoding="gzip")
    assert reply.status == 200
    assert "Content-Encoding" not in reply.headers
    assert int(reply.headers["Content-Length"]) == SHARD_BYTES
    assert reply.body == files["params_shard_0.bin"]


def test_head(tree):
    config = tree[0]
    shard = fetch(config, f"/models/{MODEL}/params_shard_0.bin", "HEAD")
    assert (shard.status, shard.body) == (200, b"")
    assert int(shard.headers["Content-Length"]) == SHARD_BYTES
    assert shard.headers["Accept-Ranges"] == "bytes"
    ranged = fetch(config, f"/models/{MODEL}/params_shard_0.bin", "HEAD", Range="bytes=10-19")
    assert (ranged.status, ranged.body, ranged.headers["Content-Length"]) == (206, b"", "10")
    packed = fetch(config, f"/models/{MODEL}/model.wasm", "HEAD", Accept_Encoding="gzip")
    assert (packed.status, packed.body, packed.headers["Content-Encoding"]) == (200, b"", "gzip")
    assert fetch(config, "/api/models", "HEAD").status == 200


@pytest.mark.parametrize("target", [
    "/../secret.txt",
    f"/models/{MODEL}/../../secret.txt",
    "/dist/../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    f"/models/{MODEL}/%2e%2e/%2e%2e/secret.txt",
    "/..%2Fsecret.txt",
    f"/models/{MODEL}/..%2F..%2Fsecret.txt",
    f"/models%2F{MODEL}%2F..%2F..%2Fsecret.txt",
    "/%252e%252e/secret.txt",
    "/%252e%252e%252fsecret.txt",
    "/..%5Csecret.txt",
    "/..\\secret.txt",
    f"/models/{MODEL}/..%5C..%5Csecret.txt",
    "//etc/passwd",
    "/models//etc/passwd",
    f"/models/{MODEL}/%2Fetc%2Fpasswd",
    "/%2Fetc%2Fpasswd",
    "http://localhost/../secret.txt",
    "/secret.txt%00.js",
    "/./index.html",
    "/.hidden",
    "/%c0%ae%c0%ae/secret.txt",
])
def test_path_traversal_is_rejected(tree, target):
    status, data = raw_get(tree[0], target)
    assert status in (400, 404)
    assert SECRET not in data
    assert b"root:" not in data


@pytest.mark.parametrize("path", [f"/models/{MODEL}/passwd.json", f"/models/{MODEL}/outside.bin",
                                  "/models/escape/secret.bin", "/models/escape/chat-config.json", "/link.html"])
def test_symlinks_leaving_the_root_are_not_served(tree, path):
    reply = fetch(tree[0], path)
    assert reply.status in (403, 404)
    assert SECRET not in reply.body and b"root:" not in reply.body


@pytest.mark.parametrize("path", ["/models", "/models/", f"/models/{MODEL}", f"/models/{MODEL}/", "/dist",
                                  "/dist/", "/sub", "/sub/", "/api", "/api/models/", "/api/other",
                                  "/models/stray.txt"])
def test_no_directory_listings(tree, path):
    assert fetch(tree[0], path).status == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/", "/index.html", "/dist/runtime.js"])
def test_only_get_and_head(tree, method, path):
    reply = fetch(tree[0], path, method)
    assert reply.status == 405
    assert {m.strip() for m in reply.headers["Allow"].split(",")} == {"GET", "HEAD"}


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/api/models", f"/models/{MODEL}/chat-config.json"])
def test_only_get_head_and_preflights_on_shared_paths(tree, method, path):
    reply = fetch(tree[0], path, method)
    assert reply.status == 405
    assert {m.strip() for m in reply.headers["Allow"].split(",")} == {"GET", "HEAD", "OPTIONS"}
    assert reply.headers["Access-Control-Allow-Origin"] == "*"


# ----------------------------------------------------------------------------- cross-origin reading

@pytest.mark.parametrize("path", ["/api/models", f"/models/{MODEL}/params_shard_0.bin", "/models/nope/x.bin"])
def test_preflight_for_shared_paths(tree, path):
    reply = fetch(tree[0], path, "OPTIONS", Origin="http://elsewhere.example",
                  Access_Control_Request_Method="GET", Access_Control_Request_Headers="range, if-none-match")
    assert reply.status == 204 and reply.body == b""
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    assert {m.strip() for m in reply.headers["Access-Control-Allow-Methods"].split(",")} == {"GET", "HEAD"}
    allowed = {h.strip().lower() for h in reply.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"range", "if-none-match", "if-range"} <= allowed
    assert int(reply.headers["Access-Control-Max-Age"]) > 0


@pytest.mark.parametrize("path, headers, status", [
    (f"/models/{MODEL}/params_shard_0.bin", {"Range": "bytes=4-9"}, 206),
    (f"/models/{MODEL}/params_shard_0.bin", {}, 200),
    (f"/models/{MODEL}/params_shard_0.bin", {"If-None-Match": "*"}, 304),
    (f"/models/{MODEL}/model.wasm", {"Accept-Encoding": "gzip"}, 200),
    (f"/models/{MODEL}/missing.json", {}, 404),
    ("/api/models", {}, 200),
])
def test_shared_paths_are_readable_from_any_origin(tree, path, headers, status):
    named = {k.replace("-", "_"): v for k, v in headers.items()}
    reply = fetch(tree[0], path, Origin="http://elsewhere.example", **named)
    assert reply.status == status
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    assert reply.headers[CORP] == "cross-origin"
    exposed = {h.strip().lower() for h in reply.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"content-range", "etag", "content-length", "content-encoding"} <= exposed
    if status == 206:
        assert reply.headers["Content-Range"] == f"bytes 4-9/{SHARD_BYTES}"


@pytest.mark.parametrize("path", ["/", "/app.js", "/dist/runtime.js"])
def test_site_and_runtime_stay_same_origin(tree, path):
    reply = fetch(tree[0], path, Origin="http://elsewhere.example")
    assert reply.status == 200
    assert "Access-Control-Allow-Origin" not in reply.headers
    assert reply.headers[CORP] == "same-origin"


def test_api_models_lists_folders(tree):
    reply = fetch(tree[0], "/api/models")
    models = {m["id"]: m for m in json.loads(reply.body)["models"]}
    assert list(models) == ["broken", "half", MODEL]
    tiny = models[MODEL]
    assert tiny == {"id": MODEL, "url": f"/models/{MODEL}/", "model_id": "tiny", "model_kind": "chat",
                    "architecture": "llama", "quantization": "q4f32_1", "target": "webgpu", "context_window_size": 2048,
                    "memory_estimate_bytes": 123456789, "required_features": [],
                    "required_limits": {"maxBufferSize": 134217728}}
    assert "chat-config.json" in models["broken"]["error"] and "make model" in models["broken"]["error"]
    assert models["broken"]["url"] == "/models/broken/"
    assert "model.wasm" in models["half"]["error"]


def test_api_models_without_models_folder(tree, tmp_path):
    config = ServeConfig(models=tmp_path / "nowhere", site=tree[0].site, dist=tree[0].dist)
    assert json.loads(fetch(config, "/api/models").body) == {"models": []}
    warnings = check_folders(config)
    assert len(warnings) == 1 and "make model" in warnings[0]


def test_missing_site_is_an_error(tree, tmp_path):
    config = ServeConfig(models=tree[0].models, site=tmp_path / "no-site", dist=tree[0].dist)
    with pytest.raises(SourceNotFoundError) as err:
        check_folders(config)
    assert err.value.where == str(tmp_path / "no-site") and "--site" in err.value.fix


def test_port_in_use_is_an_error(tree):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ServerStartError) as err:
            serve(tree[0], host="127.0.0.1", port=busy.getsockname()[1])
    assert "--port" in err.value.fix


@pytest.mark.parametrize("header, size, expected", [
    ("bytes=0-0", 10, (0, 0)), ("bytes=3-", 10, (3, 9)), ("bytes=-3", 10, (7, 9)), ("bytes=2-100", 10, (2, 9)),
    ("bytes=0-", 0, None), ("bytes=-1", 0, None), ("bytes=10-", 10, None),
])
def test_range_edges(tree, header, size, expected):
    config = tree[0]
    data = bytes(range(65, 65 + size))
    (config.site / "small.txt").write_bytes(data)
    reply = fetch(config, "/small.txt", Range=header)
    if expected is None:
        assert (reply.status, reply.headers["Content-Range"]) == (416, f"bytes */{size}")
    else:
        start, end = expected
        assert (reply.status, reply.headers["Content-Range"]) == (206, f"bytes {start}-{end}/{size}")
        assert reply.body == data[start:end + 1]


@pytest.mark.parametrize("header, expected", [
    ("gzip", True), ("GZIP", True), ("deflate, gzip;q=0.5", True), ("*", True), (None, False), ("", False),
    ("gzip;q=0", False), ("br", False), ("*;q=0", False), ("gzip;q=bad", False), ("*, gzip;q=0", False),
])
def test_accepts_gzip(header, expected):
    assert accepts_gzip(header) is expected


def _read_line(stream, seconds: float) -> str:
    ready, _, _ = select.select([stream], [], [], seconds)
    return stream.readline().decode() if ready else ""


def test_cli_serves_until_terminated(tree):
    config = tree[0]
    cmd = [sys.executable, "-m", "webbuild", "serve", "--port", "0", "--models", str(config.models),
           "--site", str(config.site), "--dist", str(config.dist)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        url = _read_line(proc.stdout, 120).strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/"), url
        with urllib.request.urlopen(url + "api/models", timeout=30) as resp:
            assert resp.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
            assert MODEL in [m["id"] for m in json.load(resp)["models"]]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_cli_missing_site_exits_with_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "webbuild", "serve", "--site", str(tmp_path / "none"),
                           "--models", str(tmp_path), "--port", "0"], capture_output=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "error:" in proc.stderr.decode() and "fix:" in proc.stderr.decode()


def test_precompressed_siblings_are_not_picked_up(tree):
    config, _, site_files = tree
    (config.site / "app.js.gz").write_bytes(gzip.compress(b"not the app"))
    for encoding in ("identity", "gzip;q=0"):
        assert fetch(config, "/app.js", Accept_Encoding=encoding).body == site_files["app.js"]
    packed = fetch(config, "/app.js", Accept_Encoding="gzip")
    assert gzip.decompress(packed.body) == site_files["app.js"]


def test_gzip_etag_survives_a_restart(tree):
    config = tree[0]
    first = fetch(config, "/app.js", Accept_Encoding="gzip").headers["ETag"]
    reply = fetch(config, "/app.js", Accept_Encoding="gzip", If_None_Match=first)
    assert reply.status == 304


def test_gzip_copy_follows_a_rebuilt_file(tree):
    config = tree[0]
    old = fetch(config, "/app.js", Accept_Encoding="gzip")
    (config.site / "app.js").write_bytes(b"export const answer = 43;\n" * 30)
    os.utime(config.site / "app.js", ns=(2, 2))
    new = fetch(config, "/app.js", Accept_Encoding="gzip", If_None_Match=old.headers["ETag"])
    assert new.status == 200
    assert gzip.decompress(new.body) == b"export const answer = 43;\n" * 30


def test_gzip_cache_keeps_one_copy_per_file(tmp_path):
    source = tmp_path / "app.js"

    async def versions():
        cache = GzipCache()
        copies = []
        for text in (b"a = 1;\n" * 100, b"b = 2;\n" * 100):
            source.write_bytes(text)
            copies.append(await cache.copy_of(source, source.stat()))
            assert gzip.decompress(copies[-1].read_bytes()) == text
        random = tmp_path / "random.js"
        random.write_bytes(os.urandom(4096))
        incompressible = await cache.copy_of(random, random.stat())
        cache.remove()
        return copies, incompressible

    (first, second), incompressible = asyncio.run(versions())
    assert first != second and not first.exists() and not second.parent.exists()
    assert incompressible is None
