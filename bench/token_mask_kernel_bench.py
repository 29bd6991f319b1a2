"""The token-bitmask kernel's own time (webbuild.kernels.token_bitmask) per call, in node: WebGPU
(Dawn on SwiftShader here) and the wasm32 CPU build, on a random mask over a vocabulary; N calls
after a first (which compiles the shader), then one device sync, divided by N.

Usage: python bench/token_mask_kernel_bench.py [--vocab 49152] [--repeat 100]
                                               [--json out/bench/token-mask-kernel.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from _common import REPO, write_result

sys.path.insert(0, str(REPO / "tests"))

from node_harness import run_toy, tensor_arg  # noqa: E402
from test_grammar_mask import _module  # noqa: E402

WASM_HOST = {"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--json", default=str(REPO / "out" / "bench" / "token-mask-kernel.json"))
    args = parser.parse_args()
    import tvm
    from tvm.target import Target

    from webbuild.compile import wasm_link
    from webbuild.kernels.token_bitmask import mask_words, token_bitmask_func

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((1, 1, args.vocab)).astype(np.float32)
    mask = rng.integers(-2**31, 2**31, mask_words(args.vocab), dtype=np.int64).astype(np.int32)
    result: dict = {"vocab": args.vocab, "repeat": args.repeat, "load_average": os.getloadavg(), "ms_per_call": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, gpu in (("webgpu", True), ("wasm_cpu", False)):
            target = Target({"kind": "webgpu"}, host=WASM_HOST) if gpu else Target(WASM_HOST)
            wasm = Path(tmp) / f"{name}.wasm"
            mod = _module([(token_bitmask_func(args.vocab, gpu=gpu), args.vocab)])
            wasm_link.export_wasm(tvm.compile(mod, target=target), wasm, opt_level="O1")
            device = "gpu" if gpu else "cpu"
            timings: dict = {}
            run_toy(wasm, "f0", [tensor_arg(logits, device), tensor_arg(mask, device)], repeat=args.repeat,
                    timings=timings, device=device)
            result["ms_per_call"][name] = round(1000 * timings["per_call"], 4)
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
