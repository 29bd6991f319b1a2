"""An embedding model's WebGPU module in node (Dawn on SwiftShader here): how long its pipelines take
to compile, and `encode` time per call for padded batches of the test sentences.

Builds the model (default: the catalog's all-minilm-l6-v2) for `--target webgpu` unless `--folder`
names a built folder, then for each batch size runs tests/js/tvm_node.mjs toy mode: `load` is
runtime start + creating every WebGPU pipeline (asyncLoadWebGPUPipelines), `first_call` the first
`encode` (any pipeline not yet created, plus the run), `per_call` the mean of `--repeat` more calls.

Usage: python bench/encoder_webgpu_bench.py [--model all-minilm-l6-v2] [--quantization q0f32]
                                            [--folder BUILT] [--batches 1,8] [--repeat 3]
                                            [--json out/bench/encoder-webgpu.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, write_result

sys.path[:0] = [str(REPO), str(REPO / "tests")]  # this tree's webbuild, then the test helpers

from embedding_support import sentences  # noqa: E402
from node_harness import run_toy  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all-minilm-l6-v2")
    parser.add_argument("--quantization", default="q0f32")
    parser.add_argument("--folder", help="an already built WebGPU model folder")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=str(REPO / "out" / "bench" / "encoder-webgpu.json"))
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from webbuild.build import BuildRequest, build
    from webbuild.catalog import resolve_source
    from webbuild.encoder_runner import pad_batch

    result: dict = {"model": args.model, "quantization": args.quantization, "repeat": args.repeat,
                    "load_average": os.getloadavg(), "batches": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder) if args.folder else None
        if folder is None:
            t0 = time.perf_counter()
            folder = build(BuildRequest(args.model, args.quantization, Path(tmp), target="webgpu", name="m")).folder
            result["build_seconds"] = round(time.perf_counter() - t0, 1)
        tok = AutoTokenizer.from_pretrained(resolve_source(args.model))
        texts = sentences()
        for size in (int(b) for b in args.batches.split(",")):
            ids, mask = pad_batch([tok(t)["input_ids"] for t in texts[:size]])
            timings: dict = {}
            run_toy(folder / "model.wasm", "encode", [ids, mask], repeat=args.repeat, timings=timings, params=folder)
            result["batches"][size] = {"padded_tokens": int(ids.size), "load_seconds": round(timings["load"], 2),
                                       "first_call_seconds": round(timings["run"], 3),
                                       "per_call_seconds": round(timings["per_call"], 3)}
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
