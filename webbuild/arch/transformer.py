"""The decoder-only transformer every attention architecture is built from, configured by data.

An architecture module turns its Hugging Face config into a `TransformerConfig` (norm kind,
biases, rotary fraction, MLP kind, residual wiring, positions, head) and names where its
checkpoint keeps each weight in an `HFLayout`; this module supplies the Relax model and the
weight map. Attention always goes through TVM's paged KV cache with one fused q/k/v matmul;
RoPE (full or partial, rotate-half) is applied by the cache's kernels, or per layer by
webbuild.kernels.rope where the layers' bases differ (Gemma 3). Checkpoints with
interleaved ("rotate every two") rotary get their q/k rows permuted at build time, which is
exact: q.k is unchanged when both are permuted alike.

On WebGPU the one-token `decode` runs each block in four fused GEMV kernels
(webbuild.kernels.decode_gemv: norm + qkv, output + residual, norm + gate/up, activation + down +
residual) plus one attention kernel (webbuild.kernels.decode_attention: RoPE, KV append and
paged attention), and the output head applies the final norm itself; `prefill` and the CPU modules
keep the separate norm and activation ops. Blocks with post norms (Gemma 2/3: a norm on each
sublayer's output before the residual add) keep those norms and adds outside the GEMVs.
Soft-capping (Gemma 2: x -> cap * tanh(x / cap)) applies to the output logits here and to the
attention scores inside the cache's kernels (webbuild.tvm_patches.attention_softcap).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache, RopeMode

from ..errors import ConfigError
from ..kernels import decode_gemv
from ..kernels.activations import activate
from ..kernels.kv_page import KV_PAGE_SIZE
from ..kernels.model_kernels import ModelKernels
from ..kernels.paged_kv_cache import KVCacheSpec
from ..kernels.rope import apply_rope
from ..quant import layers
from ..quant.scheme import QuantScheme
from .base import BuildOptions, ConfigReader, WeightMap, WeightSource, concat_rows
from .kv_model import kv_model_spec, last_token

Norm = Literal["rms", "layer"]
# sequential: x += attn(n1(x)); x += mlp(n2(x)).  parallel: x + attn(n1(x)) + mlp(n2(x)).
# parallel_shared: x + attn(n1(x)) + mlp(n1(x)) (one norm per layer).
Residual = Literal["sequential", "parallel", "parallel_shared"]
ACTIVATIONS = ("silu", "gelu", "gelu_tanh", "relu")
_HF_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_new": "gelu_tanh",
                   "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh", "relu": "relu"}


@dataclass(frozen=True)
class TransformerConfig:
    """Everything the shared decoder needs; architecture modules fill it from their configs."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    norm: Norm
    norm_eps: float
    hidden_act: str
    gated_mlp: bool
    residual: Residual
    max_position_embeddings: int
    context_window: int
    prefill_chunk: int
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False  # per-head norm of q and k before RoPE (StableLM, Phi: LayerNorm; Qwen3: RMSNorm)
    qk_norm_bias: bool = False
    qk_norm_kind: Norm = "layer"  # "layer": a weight per head; "rms": one (head_dim,) weight for all heads
    rope: bool = True  # False: learned absolute position embeddings
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    rotary_dim: int = 0  # 0 means the whole head
    rotary_interleaved: bool = False  # source rotates pairs (2i, 2i+1)
    # attention window: query i sees keys (i - sliding_window, i]; None: the whole context
    sliding_window: int | None = None
    sliding_layers: tuple[int, ...] | None = None  # the windowed layers; None: all of them
    tie_word_embeddings: bool = False
    lm_head_bias: bool = False
    embed_scale: float | None = None
    attn_scale: float | None = None  # attention score scale; None: head_dim ** -0.5
    # Gemma 2/3: an RMSNorm on the attention output and on the MLP output, before each residual add
    post_norms: bool = False
    # (theta, scaling) of each layer when the layers' RoPE differs (Gemma 3's local and global
    # layers): the model then rotates q and k itself (webbuild.kernels.rope), the cache does not
    layer_rope: tuple[tuple[float, dict | None], ...] | None = None
    # Gemma 2: attention scores and output logits soft-capped, x -> cap * tanh(x / cap); None: not capped
    attn_softcap: float | None = None
    final_softcap: float | None = None

    def __post_init__(self):
        # A window no shorter than the context excludes nothing: plain causal attention. Otherwise
        # one forward call may append at most `sliding_window - 1` tokens (see create_kv_cache),
        # so the prefill chunk is capped there.
        if self.sliding_window is not None and self.sliding_window < 2:
            raise ConfigError(f"sliding_window {self.sliding_window} leaves no room for any earlier token",
                              where="config.json: sliding_window",
                              fix="set it to the window the model was trained with, or null for none")
        if self.sliding_window is not None and (self.sliding_window >= self.context_window
                                                or self.sliding_layers == ()):
            object.__setattr__(self, "sliding_window", None)
        if self.sliding_window is None:
            object.__setattr__(self, "sliding_layers", None)
        elif self.prefill_chunk >= self.sliding_window:
            object.__setattr__(self, "prefill_chunk", self.sliding_window - 1)

    @property
    def rotary(self) -> int:
        return self.rotary_dim or self.head_dim

    @property
    def windowed_layers(self) -> tuple[int, ...]:
        """The layers whose attention is limited to the sliding window (none without a window)."""
        if self.sliding_window is None:
            return ()
        return tuple(range(self.num_hidden_layers)) if self.sliding_layers is None else self.sliding_layers

    @property
    def kv(self) -> KVCacheSpec:
        return KVCacheSpec(
            num_layers=self.num_hidden_layers,
            num_heads=self.num_attention_heads,
            num_kv_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            rope_theta=self.rope_theta,
            rope_scaling=self.rope_scaling,
            rotary_dim=self.rotary,
            rope_mode=RopeMode.NORMAL if self.rope and self.layer_rope is None else RopeMode.NONE,
            sliding_layers=self.windowed_layers,
            sliding_window=self.sliding_window or 0,
            attn_softcap=self.attn_softcap,
        )

    @property
    def state_metadata(self) -> dict:
        """What the runtimes must know about this model's KV state."""
        return {"kv_state": "paged_kv_cache", "sliding_window": self.sliding_window}

    def state_bytes(self, dsize: int, page_size: int = KV_PAGE_SIZE) -> tuple[int, int]:
        """(bytes per layer, bytes in all) of a KV cache for the whole context window, in pages of
        the backends' KV page size."""
        pages = -(-self.context_window // page_size)
        per_layer = 2 * self.num_key_value_heads * self.head_dim * pages * page_size * dsize
        return per_layer, per_layer * self.num_hidden_layers

    @property
    def activation_width(self) -> int:
        """The widest per-token activation (for the prefill memory bound)."""
        return max(self.hidden_size * 3, 2 * self.intermediate_size,
                   (self.num_attention_heads + 2 * self.num_key_value_heads) * self.head_dim)


def activation(name: str, where: str) -> str:
    """A Hugging Face activation name as one of ACTIVATIONS (ConfigError otherwise)."""
    if name not in _HF_ACTIVATIONS:
        raise ConfigError(f"activation {name!r} is not supported", where=where,
                          fix=f"supported: {', '.join(sorted(_HF_ACTIVATIONS))}")
    return _HF_ACTIVATIONS[name]


def heads_geometry(cfg: ConfigReader, hidden: int, heads_key: str = "num_attention_heads",
                   kv_key: str | None = "num_key_value_heads") -> tuple[int, int, int]:
    """(heads, kv_heads, head_dim) with the divisibility checks every attention model needs."""
    heads = cfg.require(heads_key)
    kv_heads = cfg.get(kv_key, heads) if kv_key else heads
    if heads % kv_heads:
        raise ConfigError(
            f"{heads_key} ({heads}) is not a multiple of {kv_key} ({kv_heads})",
            where=f"{cfg.where}: {kv_key}",
            fix="use a checkpoint whose query heads divide evenly into key/value heads",
        )
    head_dim = cfg.get("head_dim", None) or hidden // heads
    return heads, kv_heads, head_dim


def rotary_dim_of(head_dim: int, fraction: float, where: str) -> int:
    """The rotated part of each head for a partial-rotary `fraction` (must be even)."""
    dim = int(head_dim * fraction)
    if dim <= 0 or dim % 2 or dim > head_dim:
        raise ConfigError(f"rotary fraction {fraction} of head_dim {head_dim} gives {dim} dims", where=where,
                          fix="the rotated part of a head must be a positive even number of dims")
    return dim


def rope_setting(raw: dict, key: str, default: float) -> float:
    """A numeric RoPE field (`rope_theta`, `partial_rotary_factor`) from `rope_parameters`, where
    transformers >= 5 writes it, else from the top level of the config (older checkpoints)."""
    params = raw.get("rope_parameters")
    if isinstance(params, dict) and params.get(key) is not None:
        return ConfigReader(params, "config.json: rope_parameters").get(key, default, float)
    return ConfigReader(raw).get(key, default, float)


def rope_scaling_of(raw: dict, where: str = "config.json: rope_scaling") -> dict | None:
    """`rope_scaling` as given (None or an object), else the scaling kept in `rope_parameters`
    (transformers >= 5); default RoPE types count as None."""
    scaling = raw.get("rope_scaling")
    if scaling is None and isinstance(raw.get("rope_parameters"), dict):
        scaling = raw["rope_parameters"]
    if scaling is None:
        return None
    if not isinstance(scaling, dict):
        raise ConfigError("rope_scaling must be an object", where=where,
                          fix="remove it or give it as in the original config")
    if scaling.get("rope_type", scaling.get("type")) == "default":
        return None
    return scaling


ROPE_SCALINGS = {"linear": ("factor",),
                 "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}


def check_rope_scaling(scaling: dict | None, where: str = "config.json: rope_scaling") -> dict | None:
    """A RoPE scaling the kernels compile (linear, llama3) with its fields present, finite and
    positive (llama3: high_freq_factor above low_freq_factor); a ConfigError naming the field
    otherwise, before TVM sees it."""
    if scaling is None:
        return None
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind not in ROPE_SCALINGS:
        raise ConfigError(f"RoPE scaling {kind!r} is not supported", where=f"{where}: rope_type",
                          fix=f"supported: {', '.join(ROPE_SCALINGS)} (or none); dynamic and yarn scaling "
                              "are not compiled by webbuild")
    for key in ROPE_SCALINGS[kind]:
        value = scaling.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{kind} RoPE scaling needs a positive number for {key}, not {value!r}",
                              where=f"{where}: {key}", fix="give the value from the original checkpoint's config")
    if kind == "llama3" and scaling["high_freq_factor"] <= scaling["low_freq_factor"]:
        raise ConfigError("llama3 RoPE scaling needs high_freq_factor above low_freq_factor",
                          where=f"{where}: high_freq_factor", fix="give the values from the original config")
    return scaling


def window_of(max_pos: int, options: BuildOptions) -> tuple[int, int]:
    """(context window, prefill chunk) from the model's limit and the user's options."""
    context = min(options.context_window or max_pos, max_pos)
    return context, min(options.prefill_chunk, context)


def make_norm(c: TransformerConfig, dim: int, dtype: str) -> nn.Module:
    if c.norm == "rms":
        return nn.RMSNorm(dim, -1, c.norm_eps, bias=False, dtype=dtype)
    return nn.LayerNorm(dim, c.norm_eps, dtype=dtype)


class HeadNorm(nn.Module):
    """A norm over head_dim of each head: LayerNorm with its own weight (and bias) per head,
    (heads, head_dim); or RMSNorm with one (head_dim,) weight shared by the heads."""

    def __init__(self, heads: int, head_dim: int, eps: float, bias: bool, dtype: str, kind: Norm = "layer"):
        self.head_dim, self.eps, self.kind = head_dim, eps, kind
        self.weight = nn.Parameter((head_dim,) if kind == "rms" else (heads, head_dim), dtype=dtype)
        self.bias = nn.Parameter((heads, head_dim), dtype=dtype) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "rms":
            return op.rms_norm(x, self.weight, axes=-1, epsilon=self.eps)  # (b, s, heads, head_dim)
        y = op.layer_norm(x, self.head_dim, eps=self.eps) * self.weight  # (b, s, heads, head_dim)
        return y + self.bias if self.bias is not None else y


class Attention(nn.Module):
    def __init__(self, c: TransformerConfig, scheme: QuantScheme, layer_id: int):
        self.heads, self.kv_heads, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.sm_scale = c.attn_scale if c.attn_scale is not None else c.head_dim**-0.5
        self.rotary = c.rotary
        self.rope = c.layer_rope[layer_id] if c.layer_rope is not None else None  # (theta, scaling)
        rows = (self.heads + 2 * self.kv_heads) * self.head_dim
        self.qkv = layers.linear(c.hidden_size, rows, scheme, bias=c.qkv_bias)
        self.o = layers.linear(self.heads * self.head_dim, c.hidden_size, scheme, bias=c.o_bias)
        self.q_norm: HeadNorm | None = None
        self.k_norm: HeadNorm | None = None
        if c.qk_norm:
            self.q_norm = HeadNorm(self.heads, self.head_dim, c.norm_eps, c.qk_norm_bias, scheme.dtype, c.qk_norm_kind)
            self.k_norm = HeadNorm(self.kv_heads, self.head_dim, c.norm_eps, c.qk_norm_bias, scheme.dtype,
                                   c.qk_norm_kind)

    def forward(self, x: Tensor, cache: PagedKVCache, layer_id: int) -> Tensor:
        return self.o(self.attend(self.qkv(x), cache, layer_id))  # (b, s, hidden)

    def attend(self, qkv: Tensor, cache: PagedKVCache, layer_id: int) -> Tensor:
        """(b, s, (heads + 2 kv_heads) * head_dim) projections -> (b, s, heads * head_dim) attention."""
        b, s, _ = qkv.shape
        qkv = op.reshape(qkv, (b, s, self.heads + 2 * self.kv_heads, self.head_dim))
        if self.q_norm is not None and self.k_norm is not None:
            q, k, v = op.split(qkv, [self.heads, self.heads + self.kv_heads], axis=2)
            qkv = op.concat([self.q_norm(q), self.k_norm(k), v], dim=2)  # (b, s, heads + 2 kv_heads, head_dim)
        if self.rope is not None:
            flat = op.reshape(qkv, (b * s, self.heads + 2 * self.kv_heads, self.head_dim))
            rotated = apply_rope(flat, cache.get_query_positions(b * s), self.heads, self.kv_heads, self.rotary,
                                 *self.rope)  # (b * s, heads + 2 kv_heads, head_dim)
            qkv = op.reshape(rotated, (b, s, self.heads + 2 * self.kv_heads, self.head_dim))
        out = cache.attention_with_fused_qkv(layer_id, qkv, self.heads, sm_scale=self.sm_scale)
        return op.reshape(out, (b, s, self.heads * self.head_dim))


class MLP(nn.Module):
    """Gated (act(gate) * up, one fused [gate; up] matmul) or plain (act(up)) feed-forward."""

    def __init__(self, c: TransformerConfig, scheme: QuantScheme):
        self.gated, self.act = c.gated_mlp, c.hidden_act
        rows = (2 if c.gated_mlp else 1) * c.intermediate_size
        self.up = layers.linear(c.hidden_size, rows, scheme, bias=c.mlp_bias)
        self.down = layers.linear(c.intermediate_size, c.hidden_size, scheme, bias=c.mlp_bias)

    def forward(self, x: Tensor) -> Tensor:
        up = self.up(x)  # (b, s, 2 * intermediate) when gated, else (b, s, intermediate)
        if self.gated:
            gate, up = op.split(up, 2, axis=-1)
            return self.down(activate(gate, self.act) * up)
        return self.down(activate(up, self.act))


class Block(nn.Module):
    def __init__(self, c: TransformerConfig, scheme: QuantScheme, layer_id: int):
        self.residual = c.residual
        self.attn_norm = make_norm(c, c.hidden_size, scheme.dtype)
        self.attn = Attention(c, scheme, layer_id)
        self.mlp_norm = None if c.residual == "parallel_shared" else make_norm(c, c.hidden_size, scheme.dtype)
        self.mlp = MLP(c, scheme)
        self.post_attn_norm = make_norm(c, c.hidden_size, scheme.dtype) if c.post_norms else None
        self.post_mlp_norm = make_norm(c, c.hidden_size, scheme.dtype) if c.post_norms else None

    def _post(self, norm: nn.Module | None, x: Tensor) -> Tensor:
        return x if norm is None else norm(x)

    def forward(self, x: Tensor, cache: PagedKVCache, layer_id: int) -> Tensor:
        h = self.attn_norm(x)  # (b, s, hidden)
        attn = self._post(self.post_attn_norm, self.attn(h, cache, layer_id))
        if self.residual == "sequential":
            assert self.mlp_norm is not None  # only "parallel_shared" blocks have none
            x = x + attn
            return x + self._post(self.post_mlp_norm, self.mlp(self.mlp_norm(x)))
        return x + attn + self.mlp(h if self.mlp_norm is None else self.mlp_norm(x))

    def decode_step(self, x: Tensor, cache: PagedKVCache, layer_id: int) -> Tensor:
        """`forward` for one token, in the fused decode kernels: the norms run inside the
        projections that read them, the activation inside the down projection, the residual adds
        in the epilogues of the output and down projections. (1, 1, hidden) -> (1, 1, hidden)."""
        qkv = decode_gemv.fused_linear(x, self.attn.qkv, norm=self.attn_norm)  # (1, 1, (heads + 2 kv) * head_dim)
        attn = self.attn.attend(qkv, cache, layer_id)  # (1, 1, heads * head_dim)
        if self.post_attn_norm is not None:  # the norm comes between o(attn) and the residual add
            x_attn = x + self.post_attn_norm(decode_gemv.fused_linear(attn, self.attn.o))  # (1, 1, hidden)
        else:
            x_attn = decode_gemv.fused_linear(attn, self.attn.o, residual=x)  # x + o(attn): (1, 1, hidden)
        if self.residual == "sequential":
            up_in, up_norm = x_attn, self.mlp_norm
        else:
            up_in, up_norm = x, self.attn_norm if self.mlp_norm is None else self.mlp_norm
        mlp = self.mlp
        up = decode_gemv.fused_linear(up_in, mlp.up, norm=up_norm)  # (1, 1, (2 if gated else 1) * intermediate)
        if self.post_mlp_norm is not None:
            return x_attn + self.post_mlp_norm(decode_gemv.fused_linear(up, mlp.down, act=mlp.act, gated=mlp.gated))
        return decode_gemv.fused_linear(up, mlp.down, act=mlp.act, gated=mlp.gated, residual=x_attn)


class TransformerLM(nn.Module):
    """The exported model: embed, prefill, decode, argmax, apply_token_bitmask and create_paged_kv_cache."""

    def __init__(self, c: TransformerConfig, scheme: QuantScheme, kernels: ModelKernels):
        self.config = c
        self.dtype = scheme.dtype
        self.kernels = kernels
        self.tok_embed = layers.embedding(c.vocab_size, c.hidden_size, scheme)
        self.pos_embed = None if c.rope else nn.Embedding(c.max_position_embeddings, c.hidden_size, dtype=scheme.dtype)
        self.layers = nn.ModuleList([Block(c, scheme, i) for i in range(c.num_hidden_layers)])
        self.final_norm = make_norm(c, c.hidden_size, scheme.dtype)
        self.lm_head = None if c.tie_word_embeddings else layers.linear(
            c.hidden_size, c.vocab_size, scheme, bias=c.lm_head_bias)

    def _body(self, x: Tensor, cache: PagedKVCache, fused: bool = False) -> Tensor:
        """The blocks, (b, s, hidden) -> (b, s, hidden); then the final norm unless `fused` (one-token
        decode kernels, where the output head applies it)."""
        b, s, hidden = x.shape
        if self.pos_embed is not None:
            positions = cache.get_query_positions(b * s)  # (s,) int32, from the cache's sequence lengths
            x = x + op.reshape(self.pos_embed(positions), (b, s, hidden))
        for layer_id, layer in enumerate(self.layers):
            x = layer.decode_step(x, cache, layer_id) if fused else layer(x, cache, layer_id)
        return x if fused else self.final_norm(x)

    def _logits(self, hidden: Tensor) -> Tensor:
        if self.lm_head is None:
            logits = layers.tied_lm_head(self.tok_embed, hidden)
        else:
            logits = self.lm_head(hidden)
        return self._capped(logits.astype("float32") if logits.dtype != "float32" else logits)  # (b, s, vocab)

    def _capped(self, logits: Tensor) -> Tensor:
        """float32 logits, soft-capped where the model does it (Gemma 2's final_logit_softcapping)."""
        cap = self.config.final_softcap
        return logits if cap is None else op.tanh(logits / cap) * cap

    def embed(self, input_ids: Tensor) -> Tensor:
        x = self.tok_embed(input_ids)  # (seq, hidden)
        return x * self.config.embed_scale if self.config.embed_scale else x

    def prefill(self, input_embed: Tensor, paged_kv_cache: PagedKVCache):
        hidden = self._body(input_embed, paged_kv_cache)  # (1, seq, hidden)
        return self._logits(last_token(hidden)), paged_kv_cache  # logits: (1, 1, vocab)

    def decode(self, input_embed: Tensor, paged_kv_cache: PagedKVCache):
        if self.kernels.fused_decode:
            x = self._body(input_embed, paged_kv_cache, fused=True)  # (1, 1, hidden), before the final norm
            head = self.tok_embed if self.lm_head is None else self.lm_head
            logits = decode_gemv.fused_linear(x, head, norm=self.final_norm, out_dtype="float32")  # (1, 1, vocab)
            return self._capped(logits), paged_kv_cache
        hidden = self._body(input_embed, paged_kv_cache)  # (1, 1, hidden)
        return self._logits(hidden), paged_kv_cache

    def create_paged_kv_cache(self, max_batch_size, max_total_seq_len, prefill_chunk_size, page_size,
                              support_sliding_window) -> PagedKVCache:
        return self.kernels.kv_cache(self.config.kv, self.dtype, max_batch_size, max_total_seq_len,
                                     prefill_chunk_size, page_size, support_sliding_window)

    def argmax(self, logits: Tensor) -> Tensor:
        return self.kernels.argmax(logits)  # (1, 1, vocab) -> (1,) int32

    def apply_token_bitmask(self, logits: Tensor, bitmask: Tensor) -> Tensor:
        return self.kernels.apply_token_bitmask(logits, bitmask)  # in place: (1, 1, vocab), (vocab / 32,) int32

    def get_default_spec(self):
        return kv_model_spec(self.config.hidden_size, self.dtype, vocab_size=self.config.vocab_size)


# ---------------------------------------------------------------------------------------------
# Weight maps


@dataclass(frozen=True)
class HFLayout:
    """Where a checkpoint keeps each weight, as module paths without `.weight` / `.bias`.

    Per-layer paths are relative to `layer` (which contains `{i}`). `qkv` lists the q, k and v
    projections in order, or one fused projection already laid out as [q; k; v]; `mlp_in` lists
    gate and up (gated MLPs; or one fused [gate; up]) or the single input projection.
    """

    embed: str
    final_norm: str
    lm_head: str
    layer: str
    attn_norm: str
    qkv: tuple[str, ...]
    o: str
    mlp_in: tuple[str, ...]
    down: str
    mlp_norm: str | None = None
    post_attn_norm: str | None = None  # norms on the attention / MLP outputs (TransformerConfig.post_norms)
    post_mlp_norm: str | None = None
    q_norm: str | None = None
    k_norm: str | None = None
    pos_embed: str | None = None
    # rearranges a fused qkv weight/bias (rows first) into [q; k; v] (e.g. GPT-NeoX's per-head order)
    qkv_rows: Callable[[np.ndarray], np.ndarray] | None = None
    # applied to every norm weight (Gemma stores w - 1)
    norm_weight: Callable[[np.ndarray], np.ndarray] | None = None
    # source tensors that carry nothing the model needs (buffers, cached tables)
    unused_suffixes: tuple[str, ...] = field(default=("rotary_emb.inv_freq",))


def deinterleave_rotary(rows: np.ndarray, heads: int, head_dim: int, rotary_dim: int) -> np.ndarray:
    """Reorder each head's first `rotary_dim` rows from pairs (2i, 2i+1) to halves (i, i + r/2)."""
    order = np.concatenate([np.arange(0, rotary_dim, 2), np.arange(1, rotary_dim, 2),
                            np.arange(rotary_dim, head_dim)])
    shaped = rows.reshape(heads, head_dim, *rows.shape[1:])  # (heads, head_dim, ...)
    return shaped[:, order].reshape(rows.shape)


def _qkv_combine(c: TransformerConfig, layout: HFLayout):
    def combine(arrays: list[np.ndarray]) -> np.ndarray:
        rows = concat_rows(arrays)  # ((heads + 2 kv_heads) * head_dim, ...)
        if layout.qkv_rows is not None:
            rows = layout.qkv_rows(rows)
        if not c.rotary_interleaved:
            return rows
        q_rows, k_rows = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
        q = deinterleave_rotary(rows[:q_rows], c.num_attention_heads, c.head_dim, c.rotary)
        k = deinterleave_rotary(rows[q_rows:q_rows + k_rows], c.num_key_value_heads, c.head_dim, c.rotary)
        return np.concatenate([q, k, rows[q_rows + k_rows:]], axis=0)

    return combine


def _head_norm_combine(heads: int, layout: HFLayout):
    """Per-head norm weights as (heads, head_dim): stacked per-head tensors, or one shared row tiled."""

    def combine(arrays: list[np.ndarray]) -> np.ndarray:
        stacked = np.stack(arrays) if len(arrays) > 1 else arrays[0]
        return np.broadcast_to(stacked, (heads, stacked.shape[-1])).copy()

    return combine


def weight_map_for(c: TransformerConfig, layout: HFLayout, head_norm_sources: Callable[[str, int], tuple[str, ...]]
                   | None = None) -> WeightMap:
    """The WeightMap of a TransformerLM for checkpoints laid out as `layout`.

    `head_norm_sources(path, heads)` lists the source tensors of a per-head norm (default: one
    shared `path.weight` tiled over the heads)."""
    weights: dict[str, WeightSource] = {}
    norm_fn = layout.norm_weight

    def add(name: str, sources: tuple[str, ...], combine=None) -> None:
        weights[name] = WeightSource(sources, combine) if combine else WeightSource(sources)

    def add_norm(name: str, path: str) -> None:
        add(name + ".weight", (path + ".weight",), (lambda a: norm_fn(a[0])) if norm_fn else None)
        if c.norm == "layer":
            add(name + ".bias", (path + ".bias",))

    def add_linear(name: str, paths: tuple[str, ...], bias: bool, combine=concat_rows) -> None:
        for kind in ("weight", "bias") if bias else ("weight",):
            add(f"{name}.{kind}", tuple(f"{p}.{kind}" for p in paths), combine)

    add("tok_embed.weight", (layout.embed + ".weight",))
    if layout.pos_embed:
        add("pos_embed.weight", (layout.pos_embed + ".weight",))
    add_norm("final_norm", layout.final_norm)
    if not c.tie_word_embeddings:
        add_linear("lm_head", (layout.lm_head,), c.lm_head_bias)
    for i in range(c.num_hidden_layers):
        src, dst = layout.layer.format(i=i), f"layers.{i}."
        add_norm(dst + "attn_norm", src + layout.attn_norm)
        for name, path in (("mlp_norm", layout.mlp_norm), ("post_attn_norm", layout.post_attn_norm),
                           ("post_mlp_norm", layout.post_mlp_norm)):
            if path:
                add_norm(dst + name, src + path)
        add_linear(dst + "attn.qkv", tuple(src + p for p in layout.qkv), c.qkv_bias, _qkv_combine(c, layout))
        add_linear(dst + "attn.o", (src + layout.o,), c.o_bias)
        add_linear(dst + "mlp.up", tuple(src + p for p in layout.mlp_in), c.mlp_bias)
        add_linear(dst + "mlp.down", (src + layout.down,), c.mlp_bias)
        if c.qk_norm:
            for part, heads, path in (("q", c.num_attention_heads, layout.q_norm),
                                      ("k", c.num_key_value_heads, layout.k_norm)):
                assert path is not None  # the layouts of qk_norm architectures name both norms
                if c.qk_norm_kind == "rms":  # one weight for all heads, stored like the other RMSNorms
                    add(f"{dst}attn.{part}_norm.weight", (src + path + ".weight",),
                        (lambda a: norm_fn(a[0])) if norm_fn else None)
                    continue
                sources = (head_norm_sources(src + path, heads) if head_norm_sources else (src + path + ".weight",))
                add(f"{dst}attn.{part}_norm.weight", sources, _head_norm_combine(heads, layout))
                if c.qk_norm_bias:
                    add(f"{dst}attn.{part}_norm.bias", (src + path + ".bias",), _head_norm_combine(heads, layout))

    def unused(name: str) -> bool:
        return name.endswith(layout.unused_suffixes) or (c.tie_word_embeddings and name == layout.lm_head + ".weight")

    return WeightMap(weights, unused)
