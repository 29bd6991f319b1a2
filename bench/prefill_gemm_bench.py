"""WebGPU prefill with webbuild's GEMM (webbuild.kernels.prefill_gemm) against dlight's matmuls, in one run.

Builds the model's WebGPU module twice from the same tree: as the build makes it, and with the
prefill matmuls left to dlight (a bench-only backend whose `before_legalize` swaps nothing in:
the schedule before the GEMM existed). Runs each folder in node's Dawn on SwiftShader
(tests/js/tvm_node.mjs `model` mode: load, then one prefill of the prompt, then `--decode` greedy
tokens), alternating `--rounds` times, and writes prefill tokens/s, the prefill call's seconds (the
time to the first token once the model is loaded: it returns the first token's logits), decode
tokens/s and the load average before each run.

Usage: python bench/prefill_gemm_bench.py [--model smollm2-135m-instruct] [--quantization q4f32_1]
       [--decode 8] [--rounds 1] [--json bench/results/prefill-gemm.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import REPO, write_result

sys.path.insert(0, str(REPO / "tests"))

from node_harness import run_model  # noqa: E402
from smollm_facts import chat_prompt  # noqa: E402


def _register_dlight_backend() -> None:
    """The WebGPU backend without webbuild's prefill GEMM, as "webgpu-dlight"."""
    from webbuild.backends import BackendEntry, register_backend
    from webbuild.backends.webgpu import WebGPUBackend

    class DlightPrefill(WebGPUBackend):
        name = "webgpu-dlight"

        def before_legalize(self) -> list:
            return []

    register_backend(BackendEntry("webgpu-dlight", DlightPrefill, folder_suffix="-dlight"))


def _prompt_ids(folder: Path) -> list[int]:
    from tokenizers import Tokenizer

    config = json.loads((folder / "tokenizer_config.json").read_text())
    return Tokenizer.from_file(str(folder / "tokenizer.json")).encode(
        chat_prompt(config["chat_template"]), add_special_tokens=False).ids


def _load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--quantization", default="q4f32_1")
    parser.add_argument("--decode", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", default=str(REPO / "bench" / "results" / "prefill-gemm.json"))
    args = parser.parse_args()

    from webbuild.build import BuildRequest, build

    _register_dlight_backend()
    out = Path(tempfile.mkdtemp(prefix="prefill-gemm-"))
    folders = {variant: build(BuildRequest(args.model, args.quantization, out, target=target, name=variant,
                                           cpu_fallback=False)).folder
               for variant, target in (("dlight", "webgpu-dlight"), ("gemm", "webgpu"))}
    ids = _prompt_ids(folders["gemm"])
    runs: dict[str, list[dict]] = {variant: [] for variant in folders}
    adapter: dict = {}
    for _ in range(args.rounds):
        for variant, folder in folders.items():
            load = _load()
            result = run_model(folder, ids, decode=args.decode, packed_params=True, timeout=1800)
            timings, adapter = result["timings"], result["adapter"]
            run = {"uptime": load, "prefill_s": timings["prefill"],
                   "prefill_tokens_per_s": timings["prefill_tokens_per_s"],
                   "decode_tokens_per_s": timings["decode_tokens_per_s"], "load_s": timings["load"],
                   "tokens": result["tokens"]}
            runs[variant].append(run)
            print(variant, json.dumps(run), flush=True)
    summary = {variant: {key: statistics.median(r[key] for r in rs)
                         for key in ("prefill_s", "prefill_tokens_per_s", "decode_tokens_per_s")}
               for variant, rs in runs.items()}
    write_result(args.json, {
        "what": f"{args.model} {args.quantization} WebGPU prefill of a {len(ids)}-token chat prompt in node "
                "(Dawn on SwiftShader): webbuild's prefill GEMM vs dlight's matmuls, same tree, alternating runs",
        "adapter": adapter, "cores": os.cpu_count(),
        "prompt_tokens": len(ids), "runs": runs, "median": summary,
        "prefill_speedup": summary["gemm"]["prefill_tokens_per_s"] / summary["dlight"]["prefill_tokens_per_s"],
    })


if __name__ == "__main__":
    main()
