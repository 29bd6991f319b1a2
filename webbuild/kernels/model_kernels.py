"""The kernels a backend hands to an architecture's model: argmax, the grammar's token mask, WKV, the
paged KV cache, encoder attention and Linear layers.

Architecture modules are target-free: everything about a model that differs per target (which
argmax, token-mask and WKV kernels, whether encoders' attention and Linear layers run in TIR kernels, whether the
one-token decode runs in webbuild's fused kernels, which target the KV cache's kernels are generated
for) comes in through one `ModelKernels`, made by the
build's backend (webbuild.backends).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tvm import tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache
from tvm.target import Target

from .encoder_gemm import covers as encoder_gemm_covers
from .paged_kv_cache import KVCacheSpec, create_kv_cache


@dataclass(frozen=True)
class ModelKernels:
    """Per-target kernel choices for one model export."""

    target: Target  # the target the KV cache's kernels are generated for
    argmax_func: Callable[[int], tirx.PrimFunc]  # vocab -> PrimFunc (1, 1, vocab) f32 -> (1,) i32
    wkv_func: Callable[[int], tirx.PrimFunc]  # channels -> the WKV recurrence (webbuild.kernels.wkv)
    # vocab -> in-place PrimFunc: logits (1, 1, vocab) f32, bitmask (ceil(vocab / 32),) i32
    token_bitmask_func: Callable[[int], tirx.PrimFunc]
    fused_decode: bool  # one-token decode in webbuild.kernels.decode_gemv / decode_attention
    # (heads, head_dim, dtype) -> webbuild.kernels.encoder_attention's PrimFunc; None: Relax matmuls + softmax
    encoder_attention_func: Callable[[int, int, str], tirx.PrimFunc] | None = None
    # (rows, cols) -> webbuild.kernels.encoder_gemm's float32 Linear PrimFunc; None: the layer's own matmul
    encoder_linear_func: Callable[[int, int], tirx.PrimFunc] | None = None

    def argmax(self, logits: Tensor) -> Tensor:
        """(1, 1, vocab) float32 logits -> (1,) int32 token id."""
        vocab = int(logits.shape[-1])
        return op.tensor_ir_op(self.argmax_func(vocab), "argmax", [logits], Tensor.placeholder((1,), "int32"))

    def apply_token_bitmask(self, logits: Tensor, bitmask: Tensor) -> Tensor:
        """In place: (1, 1, vocab) float32 logits, (ceil(vocab / 32),) int32 bitmask -> the logits,
        disallowed tokens' set to -inf (-FLT_MAX on WebGPU; webbuild.kernels.token_bitmask)."""
        vocab = int(logits.shape[-1])
        return op.tensor_ir_inplace_op(self.token_bitmask_func(vocab), "apply_token_bitmask", [logits, bitmask], 0,
                                       Tensor.placeholder((1, 1, vocab), "float32"))

    def wkv(self, k: Tensor, v: Tensor, wu: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """RWKV's WKV over a chunk: k, v (b, s, a), wu (2, a), state (b, 3a) -> out (b, s, a), state (b, 3a)."""
        b, s, a = k.shape
        out, new_state = op.tensor_ir_op(
            self.wkv_func(int(a)), "wkv", [k, v, wu, state],
            [Tensor.placeholder((b, s, a), "float32"), Tensor.placeholder((b, 3 * a), "float32")])
        return out, new_state

    def encoder_attention(self, qkv: Tensor, mask: Tensor, heads: int) -> Tensor:
        """Encoder self-attention in `encoder_attention_func`'s kernel: qkv (b, s, 3 * hidden) fused
        [q | k | v], mask (b, s) int32 1 real / 0 padding -> (b, s, hidden)."""
        if self.encoder_attention_func is None:
            raise ValueError("this target has no encoder attention kernel")
        b, s, width = qkv.shape
        hidden = int(width) // 3
        func = self.encoder_attention_func(heads, hidden // heads, qkv.dtype)
        return op.tensor_ir_op(func, "encoder_attention", [qkv, mask], Tensor.placeholder((b, s, hidden), qkv.dtype))

    def encoder_linear(self, layer: nn.Module, x: Tensor) -> Tensor:
        """An encoder's Linear layer on x (b, s, cols) -> (b, s, rows): `encoder_linear_func`'s kernel
        for a float32 nn.Linear with a bias that it covers, else the layer itself."""
        weight = getattr(layer, "weight", None)
        if (self.encoder_linear_func is None or not isinstance(layer, nn.Linear) or layer.bias is None
                or weight is None or weight.dtype != "float32" or not encoder_gemm_covers(*map(int, weight.shape))):
            return layer(x)
        b, s, cols = x.shape
        rows = int(weight.shape[0])
        out = op.tensor_ir_op(self.encoder_linear_func(rows, int(cols)), "encoder_linear",
                              [op.reshape(x, (b * s, cols)), weight, layer.bias],
                              Tensor.placeholder((b * s, rows), "float32"))
        return op.reshape(out, (b, s, rows))

    def kv_cache(self, spec: KVCacheSpec, dtype: str, max_batch_size, max_total_seq_len, prefill_chunk_size,
                 page_size, support_sliding_window) -> PagedKVCache:
        """The paged KV cache for `spec`, its kernels generated for this target."""
        return create_kv_cache(spec, dtype, max_batch_size, max_total_seq_len, prefill_chunk_size, page_size,
                               support_sliding_window, target=self.target, fused_decode=self.fused_decode)
