"""RWKV-4 ("Raven"; transformers' `RwkvForCausalLM`): a recurrent language model on TVM's RNN state.

Each block mixes every token with the previous one (time shift), runs the WKV recurrence (a
decaying, numerically stabilised weighted average of past values) in place of attention, then a
squared-ReLU channel mix. Per layer and sequence the runtime keeps five vectors: the previous
token's input to the channel mix and to the time mix, and the WKV numerator, denominator and
running maximum. Prefill and decode are the same computation over 1..n tokens.

Like transformers in inference mode, with `rescale_every = R > 0` the residual stream is halved
after every R-th block and the blocks' output projections are scaled to match (this keeps f16
in range); the final LayerNorm makes the result the same as without rescaling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from ..kernels.model_kernels import ModelKernels
from ..quant import layers
from ..quant.scheme import QuantScheme
from .base import Architecture, BuildOptions, ConfigReader, WeightMap, WeightSource, flag
from .kv_model import last_token
from .rnn_model import RNN_HISTORY, RNNState, StateVector, rnn_model_spec

FINAL_NORM_EPS = 1e-5  # transformers' ln_out uses LayerNorm's default eps, not layer_norm_epsilon
FFN_X, ATT_X, WKV = range(3)  # the state vectors of a layer


@dataclass(frozen=True)
class RwkvConfig:
    """The fields of a Hugging Face RWKV-4 `config.json` the model needs."""

    hidden_size: int
    attention_hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    vocab_size: int
    layer_norm_epsilon: float
    rescale_every: int
    tie_word_embeddings: bool
    context_window: int
    prefill_chunk: int

    @property
    def state_metadata(self) -> dict:
        return {"kv_state": "rnn_state", "sliding_window": None, "rnn_history": RNN_HISTORY}

    @property
    def state_vectors(self) -> list[StateVector]:
        h, a = self.hidden_size, self.attention_hidden_size
        # channel-mix input, time-mix input, then WKV numerator, denominator (0) and running max (-inf)
        return [StateVector(((h, 0.0),)), StateVector(((h, 0.0),)), StateVector(((2 * a, 0.0), (a, -1e38)))]

    def state_bytes(self, dsize: int, max_history: int = RNN_HISTORY) -> tuple[int, int]:
        """(bytes per layer, bytes in all) of one sequence's RNN state (f32 vectors)."""
        per_layer = sum(v.size for v in self.state_vectors) * 4 * max_history
        return per_layer, per_layer * self.num_hidden_layers

    @property
    def activation_width(self) -> int:
        return max(3 * self.attention_hidden_size, self.intermediate_size)


def parse_config(raw: dict, options: BuildOptions) -> RwkvConfig:
    """Validate an RWKV config dict (HF `config.json` style)."""
    cfg = ConfigReader(raw)
    hidden = cfg.require("hidden_size")
    trained = cfg.get("context_length", 1024)
    context = options.context_window or trained
    rescale = raw.get("rescale_every")
    return RwkvConfig(
        hidden_size=hidden,
        attention_hidden_size=cfg.get("attention_hidden_size", hidden),
        intermediate_size=cfg.get("intermediate_size", 4 * hidden),
        num_hidden_layers=cfg.require("num_hidden_layers"),
        vocab_size=cfg.require("vocab_size"),
        layer_norm_epsilon=cfg.get("layer_norm_epsilon", 1e-5, float),
        rescale_every=rescale if isinstance(rescale, int) and not isinstance(rescale, bool) and rescale > 0 else 0,
        tie_word_embeddings=flag(raw, "tie_word_embeddings", False),
        context_window=context,
        prefill_chunk=min(options.prefill_chunk, context),
    )


def time_shift(x: Tensor, previous: Tensor) -> Tensor:
    """(b, s, h), (b, h) -> (b, s, h): each position's previous token (the state for the first)."""

    def compute(x: te.Tensor, prev: te.Tensor):
        return te.compute(x.shape, lambda b, t, c: tirx.if_then_else(
            t == 0, prev[b, c], x[b, tirx.max(t, 1) - 1, c]), name="time_shift")

    return op.tensor_expr_op(compute, "time_shift", args=[x, previous])


def _mix(x: Tensor, shifted: Tensor, ratio: Tensor) -> Tensor:
    """x * ratio + shifted * (1 - ratio), per channel."""
    return shifted + (x - shifted) * ratio


def _flat(last: Tensor) -> Tensor:
    """(b, 1, h) -> (b, h) float32, as the state stores it."""
    b, _, h = last.shape
    flat = op.reshape(last, (b, h))
    return flat.astype("float32") if flat.dtype != "float32" else flat


class TimeMix(nn.Module):
    def __init__(self, c: RwkvConfig, scheme: QuantScheme, kernels: ModelKernels):
        h, a = c.hidden_size, c.attention_hidden_size
        self.kernels = kernels
        self.dtype = scheme.dtype
        self.time_wu = nn.Parameter((2, a), "float32")  # [-exp(time_decay); time_first]
        self.mix_k, self.mix_v, self.mix_r = (nn.Parameter((h,), scheme.dtype) for _ in range(3))
        self.key = layers.linear(h, a, scheme)
        self.value = layers.linear(h, a, scheme)
        self.receptance = layers.linear(h, a, scheme)
        self.output = layers.linear(a, h, scheme)

    def forward(self, x: Tensor, state: RNNState, layer_id: int) -> tuple[Tensor, RNNState]:
        b, s, h = x.shape
        a = self.time_wu.shape[1]
        shifted = time_shift(x, state.get(layer_id, ATT_X, b, h).astype(self.dtype))  # (b, s, h)
        k = self.key(_mix(x, shifted, self.mix_k)).astype("float32")  # (b, s, a)
        v = self.value(_mix(x, shifted, self.mix_v)).astype("float32")
        r = op.sigmoid(self.receptance(_mix(x, shifted, self.mix_r)))
        out, wkv_state = self.kernels.wkv(k, v, self.time_wu, state.get(layer_id, WKV, b, 3 * a))  # (b, s, a), (b, 3a)
        state = state.set(layer_id, ATT_X, _flat(last_token(x)))
        state = state.set(layer_id, WKV, wkv_state)
        return self.output(r * out.astype(self.dtype)), state  # (b, s, h)


class ChannelMix(nn.Module):
    def __init__(self, c: RwkvConfig, scheme: QuantScheme):
        h = c.hidden_size
        self.dtype = scheme.dtype
        self.mix_k, self.mix_r = nn.Parameter((h,), scheme.dtype), nn.Parameter((h,), scheme.dtype)
        self.key = layers.linear(h, c.intermediate_size, scheme)
        self.receptance = layers.linear(h, h, scheme)
        self.value = layers.linear(c.intermediate_size, h, scheme)

    def forward(self, x: Tensor, state: RNNState, layer_id: int) -> tuple[Tensor, RNNState]:
        b, _, h = x.shape
        shifted = time_shift(x, state.get(layer_id, FFN_X, b, h).astype(self.dtype))  # (b, s, h)
        k = op.relu(self.key(_mix(x, shifted, self.mix_k)))  # (b, s, intermediate)
        r = op.sigmoid(self.receptance(_mix(x, shifted, self.mix_r)))
        state = state.set(layer_id, FFN_X, _flat(last_token(x)))
        return r * self.value(k * k), state


class RwkvBlock(nn.Module):
    def __init__(self, c: RwkvConfig, scheme: QuantScheme, kernels: ModelKernels, layer_id: int):
        eps = c.layer_norm_epsilon
        self.pre_ln = nn.LayerNorm(c.hidden_size, eps, dtype=scheme.dtype) if layer_id == 0 else None
        self.ln1 = nn.LayerNorm(c.hidden_size, eps, dtype=scheme.dtype)
        self.ln2 = nn.LayerNorm(c.hidden_size, eps, dtype=scheme.dtype)
        self.att = TimeMix(c, scheme, kernels)
        self.ffn = ChannelMix(c, scheme)

    def forward(self, x: Tensor, state: RNNState, layer_id: int) -> tuple[Tensor, RNNState]:
        if self.pre_ln is not None:
            x = self.pre_ln(x)
        att, state = self.att(self.ln1(x), state, layer_id)
        x = x + att  # (b, s, h)
        ffn, state = self.ffn(self.ln2(x), state, layer_id)
        return x + ffn, state


class RwkvForCausalLM(nn.Module):
    """The exported model: embed, prefill, decode (any number of tokens) and create_rnn_state."""

    def __init__(self, c: RwkvConfig, scheme: QuantScheme, kernels: ModelKernels):
        self.config = c
        self.dtype = scheme.dtype
        self.kernels = kernels
        self.tok_embed = layers.embedding(c.vocab_size, c.hidden_size, scheme)
        self.blocks = nn.ModuleList([RwkvBlock(c, scheme, kernels, i) for i in range(c.num_hidden_layers)])
        self.ln_out = nn.LayerNorm(c.hidden_size, FINAL_NORM_EPS, dtype=scheme.dtype)
        self.head = None if c.tie_word_embeddings else layers.linear(c.hidden_size, c.vocab_size, scheme)

    def _forward(self, x: Tensor, state: RNNState) -> tuple[Tensor, RNNState]:
        every = self.config.rescale_every
        for layer_id, block in enumerate(self.blocks):
            x, state = block(x, state, layer_id)
            if every and (layer_id + 1) % every == 0:
                x = x * 0.5
        x = self.ln_out(last_token(x))  # (b, 1, h)
        logits = layers.tied_lm_head(self.tok_embed, x) if self.head is None else self.head(x)
        return (logits.astype("float32") if logits.dtype != "float32" else logits), state  # (b, 1, vocab)

    def embed(self, input_ids: Tensor) -> Tensor:
        return self.tok_embed(input_ids)  # (seq, hidden)

    def prefill(self, input_embed: Tensor, rnn_state: RNNState):
        return self._forward(input_embed, rnn_state)

    def decode(self, input_embed: Tensor, rnn_state: RNNState):
        return self._forward(input_embed, rnn_state)

    def create_rnn_state(self, max_batch_size, max_history) -> RNNState:
        return RNNState.create(self.config.num_hidden_layers, self.config.state_vectors, max_batch_size, max_history)

    def argmax(self, logits: Tensor) -> Tensor:
        return self.kernels.argmax(logits)  # (1, 1, vocab) -> (1,) int32

    def apply_token_bitmask(self, logits: Tensor, bitmask: Tensor) -> Tensor:
        return self.kernels.apply_token_bitmask(logits, bitmask)  # in place: (1, 1, vocab), (vocab / 32,) int32

    def get_default_spec(self):
        return rnn_model_spec(self.config.hidden_size, self.dtype, self.config.vocab_size)


def weight_map(c: RwkvConfig) -> WeightMap:
    """Model weight -> HF tensor names; time_decay and time_first become [-exp(decay); first], mixes vectors,
    and output projections carry the inference-time rescaling."""
    def flat(arrays):
        return arrays[0].reshape(-1)

    def wu(arrays):
        decay, first = arrays
        return np.stack([-np.exp(decay.astype(np.float64)).astype(np.float32), first])  # (2, a)

    def scaled(factor: float):
        return lambda arrays: arrays[0] / np.float32(factor)

    weights = {"tok_embed.weight": WeightSource(("rwkv.embeddings.weight",))}
    for kind in ("weight", "bias"):
        weights[f"ln_out.{kind}"] = WeightSource((f"rwkv.ln_out.{kind}",))
    if not c.tie_word_embeddings:
        weights["head.weight"] = WeightSource(("head.weight",))
    for i in range(c.num_hidden_layers):
        src, dst = f"rwkv.blocks.{i}.", f"blocks.{i}."
        norms = ("pre_ln", "ln1", "ln2") if i == 0 else ("ln1", "ln2")
        for norm in norms:
            for kind in ("weight", "bias"):
                weights[f"{dst}{norm}.{kind}"] = WeightSource((f"{src}{norm}.{kind}",))
        factor = 2.0 ** (i // c.rescale_every) if c.rescale_every else 1.0
        weights[dst + "att.time_wu"] = WeightSource((src + "attention.time_decay", src + "attention.time_first"), wu)
        for mix, name in (("mix_k", "key"), ("mix_v", "value"), ("mix_r", "receptance")):
            weights[f"{dst}att.{mix}"] = WeightSource((f"{src}attention.time_mix_{name}",), flat)
        for proj in ("key", "value", "receptance"):
            weights[f"{dst}att.{proj}.weight"] = WeightSource((f"{src}attention.{proj}.weight",))
        weights[dst + "att.output.weight"] = WeightSource((src + "attention.output.weight",), scaled(factor))
        for mix, name in (("mix_k", "key"), ("mix_r", "receptance")):
            weights[f"{dst}ffn.{mix}"] = WeightSource((f"{src}feed_forward.time_mix_{name}",), flat)
        for proj in ("key", "receptance"):
            weights[f"{dst}ffn.{proj}.weight"] = WeightSource((f"{src}feed_forward.{proj}.weight",))
        weights[dst + "ffn.value.weight"] = WeightSource((src + "feed_forward.value.weight",), scaled(factor))

    def unused(name: str) -> bool:
        return c.tie_word_embeddings and name == "head.weight"

    return WeightMap(weights, unused)


ARCH = Architecture(
    name="rwkv",
    hf_model_types=("rwkv",),
    parse_config=parse_config,
    build_model=RwkvForCausalLM,
    weight_map=weight_map,
)
