"""Quantization agreement: top-1 next-token agreement and mean KL (nats) of built models' logits
against the float32 model, teacher-forced over a fixed text.

Usage: python bench/quant_agreement.py [--tokens 256] [--skip-smollm] [--json bench/results/quant-agreement.json]
Models: SmolLM2-135M as a float32 Hugging Face folder written from its GGUF's tensors (dequantized
by the loader with the `gguf` package; reference: its q0f32 CPU build), and one tiny random model
per architecture of tests/arch_cases.py (reference: transformers, float32 on the CPU). Schemes:
q4f32_1 and q4f32_min, each also with --embedding-bits 8. Every build is a `--target cpu` build
run from Python (webbuild.runner.CpuModel): one prefill token, then one decode call per token.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import REPO, write_result

sys.path.insert(0, str(REPO / "tests"))

VARIANTS = [("q4f32_1", None), ("q4f32_1", 8), ("q4f32_min", None), ("q4f32_min", 8)]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)  # (seq, vocab)
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def compare(ours: np.ndarray, ref: np.ndarray) -> dict:
    """Top-1 agreement and mean KL(ref || ours) in nats over (seq, vocab) logits."""
    lp, lq = _log_softmax(ref), _log_softmax(ours)
    kl = (np.exp(lp) * (lp - lq)).sum(axis=1)  # (seq,)
    return {"top1": round(float((ours.argmax(1) == ref.argmax(1)).mean()), 4), "kl": round(float(kl.mean()), 5)}


def teacher_forced(folder: Path, ids: list[int]) -> np.ndarray:
    """(len(ids), vocab) logits of a CPU build: the next-token logits after each prefix."""
    from webbuild.runner import CpuModel

    model = CpuModel(folder)
    first = model.prefill(ids[:1])
    return np.stack([first] + [model.decode(t) for t in ids[1:]])


def build_cpu(source: Path, quantization: str, out: Path, name: str, embedding_bits: int | None) -> Path:
    from webbuild.build import BuildRequest, build

    return build(BuildRequest(str(source), quantization, out, target="cpu", name=name,
                              embedding_bits=embedding_bits)).folder


def write_smollm_folder(folder: Path) -> tuple[Path, list[int]]:
    """SmolLM2's GGUF tensors, dequantized to float32, as a Hugging Face folder; and the story's ids."""
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer

    from smollm_facts import STORY
    from webbuild.catalog import resolve_source
    from webbuild.loaders import load_checkpoint

    ckpt = load_checkpoint(resolve_source("smollm2-135m-instruct"))
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {n: np.ascontiguousarray(ckpt.read_tensor(n), dtype=np.float32) for n in ckpt.tensor_names}
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(ckpt.config))
    for fname, data in ckpt.tokenizer_files.items():
        (folder / fname).write_bytes(data)
    ids = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(STORY, add_special_tokens=False).ids
    return folder, ids


def measure_smollm(work: Path, tokens: int) -> dict:
    folder, ids = write_smollm_folder(work / "smollm2-f32")
    ids = ids[:tokens]
    ref = teacher_forced(build_cpu(folder, "q0f32", work / "out", "smollm-q0f32", None), ids)
    rows = {}
    for quantization, bits in VARIANTS:
        label = quantization + ("+e8" if bits else "")
        built = build_cpu(folder, quantization, work / "out", f"smollm-{label}", bits)
        rows[label] = {**compare(teacher_forced(built, ids), ref), **_sizes(built)}
        print(f"smollm2-135m {label}: {rows[label]}", flush=True)
    return {"tokens": len(ids), "results": rows}


def _sizes(folder: Path) -> dict:
    build = json.loads((folder / "chat-config.json").read_text())["build"]
    return {"bits_per_param": build["bits_per_param"], "weight_formats": build["weight_formats"]}


def measure_tiny(work: Path, tokens: int) -> dict:
    from arch_cases import CASES, save_case
    from tiny_models import hf_logits

    seen: set[str] = set()
    out: dict = {}
    for case in CASES:
        if case.model_class in seen:
            continue  # one tiny model per architecture
        seen.add(case.model_class)
        folder = save_case(case, work / "tiny" / case.name)
        count = min(tokens, case.max_tokens - 1)
        ids = [int(i) for i in np.random.default_rng(0).integers(3, case.config["vocab_size"], count)]
        ref = hf_logits(folder, ids)
        rows = {}
        for quantization, bits in VARIANTS:
            label = quantization + ("+e8" if bits else "")
            built = build_cpu(folder, quantization, work / "out", f"{case.name}-{label}", bits)
            rows[label] = compare(teacher_forced(built, ids), ref)
        out[case.name] = {"tokens": count, "results": rows}
        print(f"{case.name}: {rows}", flush=True)
    return out


def table(result: dict) -> str:
    labels = [q + ("+e8" if b else "") for q, b in VARIANTS]
    lines = ["| model | tokens | " + " | ".join(f"{label} top-1 / KL" for label in labels) + " |",
             "| --- | --- |" + " --- |" * len(labels)]
    models = ({"smollm2-135m (f32 from GGUF)": result["smollm"]} if "smollm" in result else {}) | result["tiny"]
    for model, entry in models.items():
        cells = [f"{entry['results'][label]['top1']:.3f} / {entry['results'][label]['kl']:.4f}" for label in labels]
        lines.append(f"| {model} | {entry['tokens']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256, help="teacher-forced tokens per model")
    parser.add_argument("--skip-smollm", action="store_true", help="only the tiny random models")
    parser.add_argument("--json", default=str(REPO / "bench" / "results" / "quant-agreement.json"))
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="quant-agreement-") as tmp:
        work = Path(tmp)
        result: dict = {}
        if not args.skip_smollm:
            result["smollm"] = measure_smollm(work, args.tokens)
        result["tiny"] = measure_tiny(work, args.tokens)
    result["seconds"] = round(time.monotonic() - started, 1)
    print(table(result))
    write_result(args.json, result, echo=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
