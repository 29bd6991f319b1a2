"""A seeded fuzzer for `webbuild build`: mutated config.json, tokenizer.json, safetensors headers,
GGUF headers and tensor tables, and build options.

Run as a script (tests/test_fuzz.py does, in a subprocess with a memory limit):
    python tests/fuzz_build.py --cases 500 --seed 0 --work DIR --json OUT
Each case copies a tiny valid checkpoint (a Llama HF folder or a llama GGUF), applies one mutation,
and builds it for the CPU (q0f32) in-process, under a per-case time limit (SIGALRM). A case passes
when the build raises a WebbuildError with a fix and leaves --out empty, or succeeds with a folder
whose float weights are all finite and whose model runs a prefill to finite logits, with nothing
else left in --out. Compiles are memoized by (architecture, config, target), so mutations that keep
the model the same cost no compile. The summary (cases per mutator and outcome, every failure with
its case and traceback) is written as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import struct
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import numpy as np  # noqa: E402

from synthetic_gguf import write_tiny_llama_gguf  # noqa: E402
from tiny_models import save_tiny_llama  # noqa: E402
from webbuild import build as build_module  # noqa: E402
from webbuild.build import BuildRequest, build  # noqa: E402
from webbuild.errors import WebbuildError  # noqa: E402

CASE_SECONDS = 120
VALUES = [0, 1, -1, 2, 3, 7, 2 ** 31, 2 ** 63, -2 ** 40, 0.5, 1e-30, 1e30, float("nan"), float("inf"), -0.0, "",
          "2", "silu", "llama", None, True, False, [], [1, 2], {}, {"a": 1}]
NESTED = "[" * 50_000 + "]" * 50_000


class CaseTimeout(Exception):
    pass


def _alarm(_signum, _frame):
    raise CaseTimeout()


def _mutate_value(rng: random.Random):
    return rng.choice(VALUES)


def mutate_config(folder: Path, rng: random.Random) -> str:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    kind = rng.choice(["set", "set", "set", "delete", "add", "nested", "bytes"])
    if kind == "nested":
        path.write_text(NESTED)
        return "config.json: deeply nested"
    if kind == "bytes":
        data = bytearray(path.read_bytes())
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        return "config.json: bytes flipped"
    key = rng.choice(sorted(config))
    if kind == "delete":
        del config[key]
    elif kind == "add":
        key = rng.choice(["rope_scaling", "sliding_window", "head_dim", "rope_theta", "tie_word_embeddings",
                          "partial_rotary_factor", "bos_token_id", "eos_token_id"])
        config[key] = _mutate_value(rng) if rng.random() < 0.6 else {"rope_type": rng.choice(
            ["linear", "llama3", "yarn", "dynamic", None]), "factor": _mutate_value(rng)}
    else:
        config[key] = _mutate_value(rng)
    path.write_text(json.dumps(config))
    return f"config.json: {kind} {key}"


def mutate_tokenizer(folder: Path, rng: random.Random) -> str:
    path = folder / "tokenizer.json"
    tok = json.loads(path.read_text())
    kind = rng.choice(["added_tokens", "model", "vocab", "nested", "truncate", "not-object"])
    if kind == "added_tokens":
        tok["added_tokens"] = rng.choice([None, 5, "x", [{}], [{"content": 1, "id": "a"}],
                                          [{"content": "<s>", "id": -1}], [[1, 2]]])
    elif kind == "model":
        tok["model"] = _mutate_value(rng)
    elif kind == "vocab":
        model = tok.get("model") if isinstance(tok.get("model"), dict) else {}
        model["vocab"] = rng.choice([None, [], [["a", 0.0]], {"a": "b"}, 7])
        tok["model"] = model
    elif kind == "nested":
        path.write_text(NESTED)
        return "tokenizer.json: deeply nested"
    elif kind == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[:rng.randrange(len(data))])
        return "tokenizer.json: truncated"
    else:
        path.write_text(json.dumps(_mutate_value(rng)))
        return "tokenizer.json: not an object"
    path.write_text(json.dumps(tok))
    return f"tokenizer.json: {kind}"


def mutate_safetensors(folder: Path, rng: random.Random) -> str:
    path = next(folder.glob("*.safetensors"))
    data = bytearray(path.read_bytes())
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    kind = rng.choice(["length", "shape", "dtype", "offsets", "bytes", "truncate"])
    if kind == "length":
        data[:8] = struct.pack("<Q", rng.choice([0, 1, length - 1, length + 1, 2 ** 40, 2 ** 64 - 1]))
        path.write_bytes(bytes(data))
        return "safetensors: header length"
    if kind == "bytes":
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(8, 8 + length)] = rng.randrange(256)
        path.write_bytes(bytes(data))
        return "safetensors: header bytes flipped"
    if kind == "truncate":
        path.write_bytes(bytes(data[:rng.randrange(8 + length, len(data))]))
        return "safetensors: data truncated"
    name = rng.choice(sorted(k for k in header if k != "__metadata__"))
    entry = header[name]
    if kind == "shape":
        entry["shape"] = rng.choice([[], [0], [2 ** 31, 2 ** 31], [-1, 4], ["a"], [1] * 9,
                                     [d * 2 for d in entry["shape"]], list(reversed(entry["shape"]))])
    elif kind == "dtype":
        entry["dtype"] = rng.choice(["F64", "I8", "BOOL", "Q4", "", 5, "BF16", "F16"])
    else:
        begin, end = entry["data_offsets"]
        entry["data_offsets"] = rng.choice([[end, begin], [begin, end + 4], [-4, end], [begin, 2 ** 40],
                                            [begin + 1, end + 1], "x"])
    body = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body + bytes(data[8 + length:]))
    return f"safetensors: {kind} of {name}"


def gguf_table_end(path: Path) -> int:
    """The byte where a GGUF file's tensor data starts (its header, metadata and tensor table end)."""
    import gguf

    return int(gguf.GGUFReader(path).data_offset)


def mutate_gguf(path: Path, rng: random.Random, table_end: int) -> str:
    data = bytearray(path.read_bytes())
    kind = rng.choice(["header", "header", "table", "truncate", "counts"])
    if kind == "counts":  # tensor count / metadata count (u64 at 8 and 16)
        at = rng.choice([8, 16])
        data[at:at + 8] = struct.pack("<Q", rng.choice([0, 1, 2 ** 31, 2 ** 63, 2 ** 64 - 1]))
        path.write_bytes(bytes(data))
        return f"gguf: count at {at}"
    if kind == "truncate":
        path.write_bytes(bytes(data[:rng.randrange(len(data))]))
        return "gguf: truncated"
    low, high = (4, table_end // 2) if kind == "header" else (table_end // 2, table_end)
    for _ in range(rng.randint(1, 3)):
        data[rng.randrange(low, high)] = rng.randrange(256)
    path.write_bytes(bytes(data))
    return f"gguf: {kind} bytes flipped"


OPTIONS = {"shard_bytes": [0, -1, 1, 2 ** 40, "32"], "context_window": [0, -5, 1, 10 ** 12, 2.5],
           "prefill_chunk": [0, -1, 1, 3, 10 ** 9], "name": ["", "..", "../x", "a/b", ".hidden", " x", "ok-name"],
           "quantization": ["q9", "", "source", "q4f16_1", None], "link_opt": ["O9", "", "O1"],
           "embedding_bits": [0, 3, 8, "8"], "target": ["gpu", "", "cpu"]}


def mutate_options(rng: random.Random) -> tuple[dict, str]:
    key = rng.choice(sorted(OPTIONS))
    value = rng.choice(OPTIONS[key])
    return {key: value}, f"option {key}={value!r}"


def check_folder(folder: Path) -> str | None:
    """None when the built folder is sound: a chat-config.json its schema accepts, a tokenizer that
    loads, finite float weights and finite prefill logits."""
    from tokenizers import Tokenizer

    from webbuild.chat_config import validate_chat_config
    from webbuild.runner import CpuModel
    from webbuild.shard.reader import read_params

    validate_chat_config(json.loads((folder / "chat-config.json").read_text()))
    Tokenizer.from_file(str(folder / "tokenizer.json"))

    for name, array in read_params(folder).items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            return f"weight {name} is not finite"
    model = CpuModel(folder)
    logits = model.prefill([1, 2, 3])
    if logits is None or not np.isfinite(logits).all():
        return "prefill logits are not finite"
    return None


def run(cases: int, seed: int, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    base_hf = work / "base_hf"
    save_tiny_llama(base_hf, seed=1)
    base_gguf = work / "base.gguf"
    write_tiny_llama_gguf(base_gguf)
    table_end = gguf_table_end(base_gguf)

    compiled: dict = {}
    real_lower = build_module.lower

    def memo_lower(arch, config, scheme, backend):
        key = (arch.name, repr(config), repr(scheme), backend.name)
        if key not in compiled:
            compiled[key] = real_lower(arch, config, scheme, backend)
        return compiled[key]

    build_module.lower = memo_lower
    signal.signal(signal.SIGALRM, _alarm)
    rng = random.Random(seed)
    mutators = ["config"] * 4 + ["tokenizer"] * 2 + ["safetensors"] * 2 + ["gguf"] * 3 + ["options"] * 2
    summary: dict = {"cases": 0, "typed_errors": 0, "built": 0, "failures": [], "by_mutator": {}, "seconds": 0.0}
    started = time.monotonic()
    for case in range(cases):
        mutator = rng.choice(mutators)
        case_dir = work / f"case{case}"
        out = case_dir / "out"
        options: dict = {}
        if mutator in ("config", "tokenizer", "safetensors", "options"):
            source: Path = case_dir / "hf"
            shutil.copytree(base_hf, source)
        else:
            case_dir.mkdir()
            source = case_dir / "model.gguf"
            shutil.copy(base_gguf, source)
        if mutator == "config":
            what = mutate_config(source, rng)
        elif mutator == "tokenizer":
            what = mutate_tokenizer(source, rng)
        elif mutator == "safetensors":
            what = mutate_safetensors(source, rng)
        elif mutator == "gguf":
            what = mutate_gguf(source, rng, table_end)
        else:
            options, what = mutate_options(rng)
        request = {"source": str(source), "quantization": "q0f32", "out": out, "target": "cpu",
                   "cpu_fallback": False, **options}
        outcome, detail = "built", None
        signal.alarm(CASE_SECONDS)
        try:
            result = build(BuildRequest(**request))
            signal.alarm(0)
            leftovers = sorted(p.name for p in out.iterdir() if p != result.folder)
            try:
                problem = check_folder(result.folder) or (f"left in --out: {leftovers}" if leftovers else None)
            except Exception:  # noqa: BLE001  (the folder does not load)
                problem = "the folder does not load: " + traceback.format_exc(limit=4)
            if problem:
                outcome, detail = "unsound", problem
        except CaseTimeout:
            outcome, detail = "timeout", f"over {CASE_SECONDS} s"
        except WebbuildError as err:
            signal.alarm(0)
            outcome = "typed"
            if not err.fix:
                outcome, detail = "no-fix", str(err)
            elif out.exists() and any(out.iterdir()):
                outcome, detail = "left-behind", sorted(p.name for p in out.iterdir())
        except Exception:  # noqa: BLE001  (what the fuzzer looks for)
            signal.alarm(0)
            outcome, detail = "untyped", traceback.format_exc(limit=8)
        finally:
            signal.alarm(0)
        stats = summary["by_mutator"].setdefault(mutator, {})
        stats[outcome] = stats.get(outcome, 0) + 1
        summary["cases"] += 1
        if outcome == "typed":
            summary["typed_errors"] += 1
        elif outcome == "built":
            summary["built"] += 1
        else:
            summary["failures"].append({"case": case, "mutation": what, "outcome": outcome, "detail": detail})
        shutil.rmtree(case_dir, ignore_errors=True)
    summary["seconds"] = round(time.monotonic() - started, 1)
    summary["distinct_compiles"] = len(compiled)
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    summary = run(args.cases, args.seed, args.work)
    args.json.write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}), f"{len(summary['failures'])} failures")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
