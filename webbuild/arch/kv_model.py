"""Shared pieces of the exported language models: the function spec every model exports, and the
last-token slice before the output head. (The paged KV cache itself: webbuild.kernels.paged_kv_cache.)"""

from __future__ import annotations

from tvm import te
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache

from ..kernels.token_bitmask import mask_words


def last_token(hidden: Tensor) -> Tensor:
    """(b, seq, hidden) -> (b, 1, hidden): the last position, for last-token-only logits."""

    def compute(x: te.Tensor):
        b, seq, dim = x.shape
        return te.compute((b, 1, dim), lambda i, _, k: x[i, seq - 1, k], name="last_token")

    return op.tensor_expr_op(compute, "last_token", args=[hidden])


def model_spec(hidden_size: int, dtype: str, state_arg: str, state_type: type, create: dict[str, dict],
               param_mode: str = "packed", vocab_size: int | None = None) -> dict:
    """The `export_tvm` spec every language model exports: embed, prefill and decode over a sequence
    state object (`state_arg` of `state_type`), with `vocab_size` the `argmax` of a logits vector
    (webbuild.kernels.argmax) and `apply_token_bitmask` (a grammar's mask applied to it in place,
    webbuild.kernels.token_bitmask), plus the functions in `create` that make that state (name -> its
    integer arguments). Parameters are one tuple argument by default, as the runtimes pass them."""
    packed = {"param_mode": param_mode, "effect_mode": "none"}
    no_params = {"param_mode": "none", "effect_mode": "none"}
    spec = {
        "embed": {"input_ids": nn.spec.Tensor(["seq_len"], "int32"), "$": packed},
        "prefill": {
            "input_embed": nn.spec.Tensor([1, "seq_len", hidden_size], dtype),
            state_arg: nn.spec.Object(object_type=state_type),
            "$": packed,
        },
        "decode": {
            "input_embed": nn.spec.Tensor([1, 1, hidden_size], dtype),
            state_arg: nn.spec.Object(object_type=state_type),
            "$": packed,
        },
    }
    if vocab_size is not None:
        spec["argmax"] = {"logits": nn.spec.Tensor([1, 1, vocab_size], "float32"), "$": no_params}
        spec["apply_token_bitmask"] = {"logits": nn.spec.Tensor([1, 1, vocab_size], "float32"),
                                       "bitmask": nn.spec.Tensor([mask_words(vocab_size)], "int32"), "$": no_params}
    for name, args in create.items():
        spec[name] = {**args, "$": no_params}
    return spec


def kv_model_spec(hidden_size: int, dtype: str, param_mode: str = "packed", vocab_size: int | None = None) -> dict:
    """The spec of a paged-KV-cache model (see `model_spec`)."""
    create = {"create_paged_kv_cache": dict.fromkeys(
        ("max_batch_size", "max_total_seq_len", "prefill_chunk_size", "page_size", "support_sliding_window"), int)}
    return model_spec(hidden_size, dtype, "paged_kv_cache", PagedKVCache, create, param_mode, vocab_size)
