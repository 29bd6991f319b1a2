"""TVM's paged KV cache for a model's attention geometry: its TIR kernels (prefill, decode, RoPE,
append) generated for an explicit target, optionally with webbuild's fused decode attention.

Pages hold `kv_page.KV_PAGE_SIZE` tokens (the build/runtime contract, written into `_metadata`).
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import relax as rx
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache, RopeMode, TIRPagedKVCache
from tvm.target import Target

from ..tvm_patches.attention_softcap import softcap_cache_kernels
from ..tvm_patches.fused_decode_entry import FusedDecodeKVCache
from .decode_attention import supports
from .rope import rope_kernel_args


@dataclass(frozen=True)
class KVCacheSpec:
    """Attention geometry and RoPE settings the paged KV cache kernels are generated for."""

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float
    rope_scaling: dict | None
    rotary_dim: int
    rope_mode: RopeMode = RopeMode.NORMAL
    # layers whose attention sees only the last `sliding_window` positions (masked per query)
    sliding_layers: tuple[int, ...] = ()
    sliding_window: int = 0
    # Gemma 2: every attention score s becomes cap * tanh(s / cap) before the softmax
    attn_softcap: float | None = None


def create_kv_cache(spec: KVCacheSpec, dtype: str, max_batch_size, max_total_seq_len, prefill_chunk_size,
                    page_size, support_sliding_window, *, target: Target, fused_decode: bool) -> PagedKVCache:
    """A TIR paged KV cache; RoPE is applied to q and k inside the fused-qkv attention call.
    Its kernels are generated for `target`.

    Sliding-window layers use TVM's per-layer `mha_sliding` attention, which is exactly
    transformers' window (query i attends keys (i - window, i]) as long as one forward call appends
    at most `window - 1` tokens: the cache keeps every token (RoPE applied on append, positions
    exact); the decode kernel reads only the window's last `window` keys; the prefill kernel masks
    the cached keys per query, while the new tokens attend each other causally with no window (so
    the chunk must fit inside it), and with a chunk of `window` tokens the CPU kernel turns its
    last, fully masked row into NaN. Runtimes therefore prefill in chunks of at most `window - 1`.
    The CPU prefill kernel also reads its running max uninitialized when a call's first query has
    a masked cached key (any multi-token call once `window` tokens are cached), so the CPU runner
    appends one token per call from there (webbuild/runner.py); the WebGPU kernels are not affected.
    The runtime sliding mode (`support_sliding_window`=1 plus
    `attention_kv_cache_enable_sliding_window_for_seq`) is forced off for such models: it trims
    the history to the window with no per-query mask (exact only with the cache window set to
    `window - 1` and one token per call past the first `window - 1`), and its inline RoPE uses
    theta 10000 for `mha_sliding` layers.

    With `fused_decode` (the WebGPU backend) the cache also gets webbuild's fused one-token
    attention kernel (webbuild.kernels.decode_attention, hooked in by
    webbuild.tvm_patches.fused_decode_entry) where it computes the model's RoPE exactly; the
    runtime uses it for decode calls on plain MHA layers.

    With `spec.attn_softcap` every attention kernel of the cache (the fused one included) caps its
    scores (webbuild.tvm_patches.attention_softcap)."""
    attn_kind: str | list[str] = "mha"
    window_kwargs = {}
    if spec.sliding_layers:
        attn_kind = ["mha_sliding" if i in spec.sliding_layers else "mha" for i in range(spec.num_layers)]
        # TVM 0.27 allocates the fused-qkv split buffers only when some entry is plain "mha"; one
        # entry past the layer partition satisfies that without adding a layer (no pages for it).
        attn_kind.append("mha")
        window_kwargs = {"layer_sliding_window_size": spec.sliding_window}
        support_sliding_window = 0
    scale, scaling = rope_kernel_args(spec.rope_scaling)  # linear scaling: positions / factor
    cache_class, extra = TIRPagedKVCache, {}
    if fused_decode and supports(spec.rope_mode, scaling):
        cache_class = FusedDecodeKVCache
        extra = {"kernel": {"num_heads": spec.num_heads, "num_kv_heads": spec.num_kv_heads,
                            "head_dim": spec.head_dim, "dtype": dtype, "rotary_dim": spec.rotary_dim,
                            "rope_theta": spec.rope_theta, "rope_scale": scale, "rope_scaling": scaling}}
    cache = cache_class(
        attn_kind=attn_kind,
        max_batch_size=max_batch_size,
        max_total_seq_len=max_total_seq_len,
        prefill_chunk_size=prefill_chunk_size,
        page_size=page_size,
        support_sliding_window=support_sliding_window,
        layer_partition=rx.ShapeExpr([0, spec.num_layers]),
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        qk_head_dim=spec.head_dim,
        v_head_dim=spec.head_dim,
        mla_original_qk_head_dim=0,
        mla_original_v_head_dim=0,
        rope_mode=spec.rope_mode,
        rope_scale=scale,
        rope_theta=spec.rope_theta,
        rope_scaling=scaling,
        rope_ext_factors=rx.prim_value(0),
        rotary_dim=spec.rotary_dim,
        enable_disaggregation=False,
        dtype=dtype,
        target=target,
        **window_kwargs,
        **extra,
    )
    if spec.attn_softcap is not None:
        softcap_cache_kernels(cache._expr, spec.attn_softcap)
    return cache
