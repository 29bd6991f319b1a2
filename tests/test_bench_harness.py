"""Smoke tests of bench/peer_bench.py on tiny models, a few tokens, one measured run: webbuild's WebGPU
module (built by the harness from a tiny HF checkpoint) with its CPU reference, the WebGPU dispatch
counter and the chart; wllama (1 and 2 threads) on a complete tiny GGUF; a peer whose files are
missing is skipped with the reason while the others run. bench/embeddings_bench.py's pure parts:
configuration selection, arguments, throughput and ratio shaping, sentence choice."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from browser_support import REPO
from synthetic_gguf import write_tiny_llama_gguf

TINY_QUESTION = "w5 w9 w33 w100 w7"  # words of the tiny word-level vocabulary


def peer_bench(tmp_path, *args: str) -> dict:
    out = tmp_path / "peers.json"
    cmd = [sys.executable, str(REPO / "bench" / "peer_bench.py"), "--models", str(tmp_path / "models"),
           "--tokens", "4", "--runs", "1", "--bandwidth-mb", "8", "--json", str(out), *args]
    # a fresh runtime cache compiles ~2 min
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_peer_bench_webbuild_webgpu(tiny_llama_dirs, tmp_path):
    png = tmp_path / "peers.png"
    result = peer_bench(tmp_path, "--source", str(tiny_llama_dirs["untied"][0]), "--name", "tiny",
                        "--configs", "webbuild-webgpu-q0f32,wllama-*", "--gguf", str(tmp_path / "missing.gguf"),
                        "--question", TINY_QUESTION, "--png", str(png))
    if importlib.util.find_spec("matplotlib"):  # the chart needs the bench extra
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert result["machine"]["cpus"] >= 1 and result["machine"]["chromium"]
    assert len(result["machine"]["loadavg_start"]) == 3
    assert result["adapter"] and result["bandwidth"]["gpu_read_bytes_per_s"] > 0
    assert result["bandwidth"]["js_copy_bytes_per_s"] > 0
    # a peer whose files are missing is skipped with its reason, and the others still run
    assert set(result["skipped"]) == {"wllama-1t", "wllama-2t"}
    assert "missing.gguf" in result["skipped"]["wllama-1t"]["error"]

    c = result["configs"]["webbuild-webgpu-q0f32"]
    assert c["backend"] == "webgpu" and c["load_info"]["backend"] == "webgpu"
    for key in ("decode_tok_s", "prefill_tok_s", "ttft_s", "client_ttft_s"):
        assert c["median"][key] > 0, key
    assert c["load_cold_s"] > 0 and c["load_warm_s"] > 0
    assert c["completion_tokens"] == [4]
    assert c["memory"]["peak_pss_bytes"] >= c["memory"]["idle_pss_bytes"] > 10 * 2**20
    assert len(c["loadavg_before"]) == 3
    # same-quantization reference: the CPU build's greedy text with the same stop-token bias
    assert c["correctness"]["reference"] == "cpu-q0f32"
    assert c["correctness"]["matches"], (c["text"], c["correctness"])
    per_token = c["gpu_per_token"]
    assert per_token["dispatch"] > 0 and per_token["submit"] > 0 and per_token["map_async"] >= 1
    assert c["weights"]["layers"] == 2 and not c["weights"]["tied_embedding"]
    # untied: the embedding table is gathered (one row per token), the rest is read every token
    w = c["weights"]
    assert w["embedding_bytes"] > 0 and w["bytes_per_token"] < w["weights_bytes"]
    assert c["dispatches_per_layer"] == per_token["dispatch"] / 2
    assert c["decode_ceiling"]["tok_s"] > 0
    assert result["ratios"] == {}


def test_peer_bench_wllama(tmp_path):
    gguf = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    result = peer_bench(tmp_path, "--source", str(gguf), "--configs", "wllama-*", "--question", "abcab",
                        "--png", "")
    assert result["skipped"] == {}
    for threads in (1, 2):
        c = result["configs"][f"wllama-{threads}t"]
        assert c["threads"] == threads and c["load_info"]["threads"] == threads
        assert c["median"]["decode_tok_s"] > 0 and c["median"]["prefill_tok_s"] > 0
        assert c["completion_tokens"] == [4] and c["text"]
        assert c["correctness"]["reference"] == "none"
        assert c["memory"]["peak_pss_bytes"] > 0
        assert c["weights"]["layers"] == 1 and not c["weights"]["tied_embedding"]
        assert c["page"]["cross_origin_isolated"] is True
    assert result["machine"]["cross_origin_isolated"] is True
    assert result["ratios"] == {}


@pytest.fixture(scope="module")
def embeddings_bench():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import embeddings_bench
    finally:
        sys.path.remove(str(REPO / "bench"))
    return embeddings_bench


def test_embeddings_bench_arguments(embeddings_bench):
    args = embeddings_bench.parse_args(["--configs", "tjs-wasm-*, webbuild-wasm-1t", "--reps", "3"])
    # CONFIGS order, whatever the order asked
    assert args.configs == ["webbuild-wasm-1t", "tjs-wasm-fp32-1t", "tjs-wasm-fp32-2t", "tjs-wasm-q8-1t",
                            "tjs-wasm-q8-2t"]
    assert args.reps == 3 and args.warmup == 2 and args.webgpu_reps == 1
    assert embeddings_bench.parse_args([]).configs == list(embeddings_bench.CONFIGS)
    with pytest.raises(SystemExit):
        embeddings_bench.parse_args(["--configs", "webbuild-wasm-4t"])
    with pytest.raises(SystemExit):
        embeddings_bench.parse_args(["--reps", "0"])
    with pytest.raises(SystemExit):
        embeddings_bench.parse_args(["--timeout-s", "0"])
    with pytest.raises(SystemExit):
        embeddings_bench.parse_args(["--warmup", "0"])


def test_embeddings_bench_result_shaping(embeddings_bench):
    t = embeddings_bench.throughput(8, [400.0, 100.0, 200.0])
    assert t["median_ms"] == 200.0 and t["embeddings_per_s"] == 40.0
    assert t["best_ms"] == 100.0 and t["best_embeddings_per_s"] == 80.0

    def config(rates):
        return {"batches": {b: {"embeddings_per_s": r} for b, r in rates.items()}}

    configs = {"webbuild-wasm-1t": config({"1": 30.0, "8": 40.0}), "webbuild-wasm-2t": config({"1": 50.0}),
               "tjs-wasm-fp32-1t": config({"1": 10.0, "8": 80.0}), "tjs-wasm-q8-1t": config({"1": 15.0}),
               "tjs-webgpu-fp32": config({"1": 1.0})}
    # same thread count only, WASM only, batch sizes both measured
    assert embeddings_bench.ratios(configs) == {"webbuild-wasm-1t / tjs-wasm-fp32-1t": {"1": 3.0, "8": 0.5},
                                                "webbuild-wasm-1t / tjs-wasm-q8-1t": {"1": 2.0}}


def test_embeddings_bench_sentence_choice(embeddings_bench):
    lengths = {"a": 17, "b": 18, "c": 30, "d": 24, "e": 20}
    assert embeddings_bench.pick_sentences(lengths, count=2) == ["b", "d"]
    with pytest.raises(SystemExit):
        embeddings_bench.pick_sentences(lengths, count=4)
    texts = embeddings_bench.candidate_sentences()
    assert len(texts) == len(set(texts)) >= max(embeddings_bench.BATCHES)
