"""`python -m webbuild build`: argument parsing and the printed summary; the work is in webbuild.build."""

from __future__ import annotations

import argparse
import signal

from ..backends import targets
from ..quant.scheme import SCHEMES
from ..shard.writer import DEFAULT_SHARD_BYTES

DEFAULT_OUT = "out/models"


def register(sub) -> None:
    p = sub.add_parser("build", help="compile a checkpoint into a browser model folder",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("source", help="Hugging Face folder, .gguf file, catalog name (see models/), or "
                                   "synthetic:llama-3.2-1b / synthetic:llama-3-8b (random weights)")
    p.add_argument("--quantization", "-q", default=None, help=f"one of {', '.join(SCHEMES)} "
                   "(default: the catalog recipe's, else q4f32_1)")
    p.add_argument("--out", "-o", default=DEFAULT_OUT, help="folder that receives the model folder")
    p.add_argument("--target", choices=targets(), default=targets()[0],
                   help="webgpu: model.wasm for the browser; cpu: model.so for Python checks")
    p.add_argument("--name", default=None, help="model id (default: catalog name or source file name)")
    p.add_argument("--context-window", type=int, default=None,
                   help="max tokens (default and upper limit: the model's own context length)")
    p.add_argument("--prefill-chunk", type=int, default=512, help="max tokens per prefill call")
    p.add_argument("--link-opt", default="O1", help="emscripten link optimisation: O1 fast, O3 release")
    p.add_argument("--no-cpu-fallback", dest="cpu_fallback", action="store_false",
                   help="skip the target's fallback modules "
                   "(webgpu: model-cpu.wasm, the WebAssembly CPU module used where WebGPU is missing)")
    p.add_argument("--embedding-bits", type=int, default=None,
                   help="8: keep the token embedding and output head in int8 (groups of 32) with a 4-bit "
                   "float32 scheme; 4 (default): the scheme's own container")
    p.add_argument("--shard-mb", type=int, default=DEFAULT_SHARD_BYTES >> 20, help="max shard size in MiB")
    p.set_defaults(run=run)


def _terminate(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def run(args) -> int:
    from ..build import BuildRequest, build
    from ..progress import TerminalProgress

    req = BuildRequest(source=args.source, quantization=args.quantization, out=args.out, target=args.target,
                       name=args.name, context_window=args.context_window, prefill_chunk=args.prefill_chunk,
                       link_opt=args.link_opt, shard_bytes=args.shard_mb << 20, cpu_fallback=args.cpu_fallback,
                       embedding_bits=args.embedding_bits)
    progress = TerminalProgress()
    previous = signal.signal(signal.SIGTERM, _terminate)  # SIGTERM unwinds like Ctrl-C: the temp folder goes
    try:
        result = build(req, progress)
    finally:
        signal.signal(signal.SIGTERM, previous)
        progress.close()
    total = sum(result.files.values())
    print(f"wrote {result.folder}")
    for name, size in result.files.items():
        print(f"  {name:32s} {size / 1e6:10.2f} MB")
    print(f"  {'total':32s} {total / 1e6:10.2f} MB")
    print(f"{result.param_count / 1e6:.1f}M parameters, {result.bits_per_param:.2f} bits per parameter, "
          f"{result.seconds:.1f} s")
    for fmt, row in result.weight_formats.items():
        print(f"  {fmt:32s} {row['params'] / 1e6:10.3f}M parameters, {row['bits_per_param']:.3f} bits per parameter")
    return 0
