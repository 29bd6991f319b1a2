"""WASM CPU benchmark: webbuild's WebAssembly CPU module against wllama (llama.cpp in WASM), in
headless chromium, on SmolLM2-135M-Instruct.

Usage: python bench/wasm_bench.py [--models out/bench/models] [--tokens 128] [--runs 3]
                                  [--json out/bench/wasm.json] [peer_bench.py's other options]

The CPU subset of bench/peer_bench.py (see its docstring for the method): webbuild `backend: "wasm"`
with threads 1 (model-cpu.wasm) and 2 (model-cpu-threads.wasm) for the q4f32_1 and q0f32 builds
(built into --models when missing), q4f32_1 also in the runtime's Web Worker (`worker: true`), and
@wllama/wllama on the GGUF those builds come from, with n_threads 1 and 2.
Loads (cold, warm), time to first token, prefill and decode tokens/s, medians of --runs after a
warm-up, peak browser memory, text checks, ratios; written to out/bench/wasm.json (no chart unless
--png is given).
"""

from __future__ import annotations

from _common import REPO
from peer_bench import WEBBUILD_CONFIGS, WLLAMA_CONFIGS, main as peer_main

CONFIGS = [*(n for n in WEBBUILD_CONFIGS if n.startswith("webbuild-wasm-")), *WLLAMA_CONFIGS]


def main(argv=None) -> int:
    return peer_main(argv, benchmark="wasm", default_configs=CONFIGS,
                     default_json=REPO / "out" / "bench" / "wasm.json", default_png=None)


if __name__ == "__main__":
    raise SystemExit(main())
