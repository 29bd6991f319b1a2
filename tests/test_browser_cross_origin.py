"""Cross-origin hosting, as people deploy model folders on a CDN or the Hugging Face hub, in headless
chromium: the page and the runtime bundle come from one origin (a `webbuild serve` with a blank
site and no models), the model folder from another (a second `webbuild serve`, or a CDN-like test
server that drops a connection).

With each cache backend the model loads, answers like the CPU reference, and a second load in the
same page reads every shard from the store ("none": from the network again). The page stays
cross-origin isolated (COEP require-corp), so the CPU module still gets its threads. A shard whose
connection breaks off resumes across origins with a Range request (the runtime must read the
exposed Content-Range, or it would start over and fail verification once). Range, ETag
revalidation and a 404 are visible to the page as themselves.
"""

from __future__ import annotations

import re
import shutil

import pytest

from browser_support import cpu_greedy_text, page_at, webbuild_server
from flaky_server import FlakyServer

MESSAGES = [{"role": "user", "content": "w5 w9"}]
MAX_TOKENS = 4

TWO_LOADS_JS = """async ([url, options, messages, maxTokens]) => {
  const wb = await import('/dist/webbuild.js');
  const loads = [];
  for (let i = 0; i < 2; i++) {
    const events = [];
    const onProgress = (e) => events.push({stage: e.stage, file: e.file, fromCache: e.fromCache === true});
    try {
      const engine = await wb.createEngine(url, {...options, onProgress});
      const reply = await engine.chat.completions.create({messages, temperature: 0, max_tokens: maxTokens});
      const shards = (stage, fromCache) => new Set(events.filter((e) => e.stage === stage
        && e.file.startsWith('params_shard') && (fromCache === undefined || e.fromCache === fromCache))
        .map((e) => e.file)).size;
      loads.push({ok: true, text: reply.choices[0].message.content, backend: engine.backend,
                  threads: engine.threads, fetched: shards('fetch'), stored: shards('cache', true)});
      await engine.unload();
    } catch (err) {
      loads.push({ok: false, code: err.code, message: String(err.message)});
    }
  }
  return {loads, isolated: self.crossOriginIsolated};
}"""

LOAD_ERROR_JS = """async (url) => {
  const wb = await import('/dist/webbuild.js');
  try {
    await wb.createEngine(url, {backend: 'wasm', cache: 'none'});
    return {ok: true};
  } catch (err) {
    return {ok: false, code: err.code, status: err.details?.status ?? null, message: String(err.message)};
  }
}"""

HTTP_JS = """async (url) => {
  const first = await fetch(url, {cache: 'no-store'});
  const etag = first.headers.get('etag');
  const size = (await first.arrayBuffer()).byteLength;
  const part = await fetch(url, {cache: 'no-store', headers: {Range: 'bytes=4-9'}});
  const partBytes = (await part.arrayBuffer()).byteLength;
  const again = await fetch(url, {cache: 'no-store', headers: {'If-None-Match': etag}});
  return {status: first.status, etag, size, partStatus: part.status, contentRange: part.headers.get('content-range'),
          partBytes, revalidated: again.status};
}"""


@pytest.fixture(scope="module")
def folder(tiny_llama_dirs, model_build):
    return model_build(tiny_llama_dirs["untied"][0], "q4f32_1", "webgpu")


@pytest.fixture(scope="module")
def origins(folder, tmp_path_factory):
    """(page origin URL, model folder URL on another origin): two `webbuild serve` processes."""
    site, models = tmp_path_factory.mktemp("site"), tmp_path_factory.mktemp("cdn")
    (site / "index.html").write_text("<!doctype html><title>app</title>")
    shutil.copytree(folder, models / "m")
    with (webbuild_server(tmp_path_factory.mktemp("no-models"), site=site) as page_origin,
          webbuild_server(models) as model_origin):
        assert page_origin != model_origin
        yield page_origin, f"{model_origin}models/m/"


@pytest.fixture(scope="module")
def expected_text(tiny_llama_dirs, model_build):
    """The answer of the same checkpoint and quantization built for the CPU (the reference)."""
    return cpu_greedy_text(model_build(tiny_llama_dirs["untied"][0], "q4f32_1", "cpu"), MESSAGES, MAX_TOKENS)


@pytest.mark.parametrize("cache, worker", [("cache", True), ("indexeddb", True), ("opfs", True), ("none", True),
                                           ("cache", False)])
def test_a_model_folder_on_another_origin_loads_with_each_cache_backend(browser, origins, expected_text,
                                                                        cache, worker):
    page_origin, model_url = origins
    options = {"backend": "wasm", "cache": cache, "worker": worker}
    with page_at(browser, page_origin) as page:
        result = page.evaluate(TWO_LOADS_JS, [model_url, options, MESSAGES, MAX_TOKENS])
    first, second = result["loads"]
    assert first["ok"] and second["ok"], result
    assert result["isolated"] is True
    assert first["text"].strip() == second["text"].strip() == expected_text.strip()
    assert first["backend"] == "wasm" and first["threads"] >= 2, first
    assert first["fetched"] >= 1 and first["stored"] == 0, first
    if cache == "none":
        assert second["fetched"] == first["fetched"] and second["stored"] == 0, second
    else:
        assert second["fetched"] == 0 and second["stored"] == first["fetched"], second


def test_range_etag_and_errors_cross_origin(browser, origins, folder):
    page_origin, model_url = origins
    shard = sorted(folder.glob("params_shard_*.bin"))[0]
    with page_at(browser, page_origin) as page:
        http = page.evaluate(HTTP_JS, model_url + shard.name)
        missing = page.evaluate(LOAD_ERROR_JS, model_url.replace("/models/m/", "/models/nope/"))
    size = shard.stat().st_size
    assert http["status"] == 200 and http["size"] == size and http["etag"], http
    assert http["partStatus"] == 206 and http["partBytes"] == 6, http
    assert http["contentRange"] == f"bytes 4-9/{size}", http
    assert http["revalidated"] == 304, http
    # a 404 on the other origin is an HTTP error the runtime names, not an opaque network error
    assert not missing["ok"] and missing["code"] == "model-load" and missing["status"] == 404, missing


@pytest.fixture(scope="module")
def cdn(folder):
    server = FlakyServer(folder, cors=True)
    yield server
    server.close()


def test_a_dropped_shard_resumes_across_origins(browser, origins, cdn, expected_text):
    page_origin = origins[0]
    shard = sorted(p.name for p in cdn.model.glob("params_shard_*.bin"))[0]
    cdn.bad, cdn.log = (shard, "drop", 1), []
    options = {"backend": "wasm", "cache": "none", "worker": True, "stallTimeoutMs": 5000}
    with page_at(browser, page_origin) as page:
        result = page.evaluate(TWO_LOADS_JS, [f"{cdn.url}models/m/", options, MESSAGES, MAX_TOKENS])
    assert result["loads"][0]["ok"] and result["loads"][0]["text"].strip() == expected_text.strip(), result
    ranges = [r for p, r in cdn.log if p.endswith(shard) and r != "OPTIONS"]
    # the first load: one broken request and one resumed at the byte it reached; no integrity retry
    # (which a Content-Range hidden from the page would cause); the second load: one whole request
    assert ranges[0] is None and re.fullmatch(r"bytes=\d+-", ranges[1] or ""), ranges
    assert len(ranges) == 3 and ranges[2] is None, ranges
