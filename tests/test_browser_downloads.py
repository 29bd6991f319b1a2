"""Model downloads over a network that misbehaves, in headless chromium with `worker: true`: a
shard whose connection drops half-way resumes with a Range request and the model loads and answers;
a shard that stalls every time is abandoned after `stallTimeoutMs` with a typed `model-load` error.

The page, the runtime bundle and the model folder come from tests/flaky_server.py, which serves
the chosen shard badly.
"""

from __future__ import annotations

import re

import pytest

from browser_support import page_at
from flaky_server import STALL_S, FlakyServer

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
