"""An independent float32 numpy Llama forward pass (HF tensor names, rotate-half RoPE), for parity tests."""

from __future__ import annotations

import numpy as np


def _rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    var = np.mean(x * x, axis=-1, keepdims=True)
    return (x / np.sqrt(var + np.float32(eps))).astype(np.float32) * w


def _rope(x: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
    # x: (seq, heads, head_dim)
    hd = x.shape[-1]
    inv = (1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))).astype(np.float32)  # (hd/2,)
    ang = positions[:, None].astype(np.float32) * inv[None, :]  # (seq, hd/2)
    cos = np.cos(np.concatenate([ang, ang], -1))[:, None, :]  # (seq, 1, hd)
    sin = np.sin(np.concatenate([ang, ang], -1))[:, None, :]
    half = hd // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return (x * cos + rotated * sin).astype(np.float32)


def _linear(w: dict, name: str, x: np.ndarray) -> np.ndarray:
    """x @ W^T (+ b when the checkpoint has a bias for this projection)."""
    y = x @ w[name + ".weight"].T
    return y + w[name + ".bias"] if name + ".bias" in w else y


def llama_logits(weights: dict[str, np.ndarray], cfg: dict, ids: list[int]) -> np.ndarray:
    """Logits (seq, vocab) for every position of `ids`, causal attention, float32 throughout."""
    w = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
    hidden = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads", heads)
    hd = cfg.get("head_dim") or hidden // heads
    eps = cfg.get("rms_norm_eps", 1e-6)
    theta = cfg.get("rope_theta", 10000.0)
    seq = len(ids)
    pos = np.arange(seq)
    x = w["model.embed_tokens.weight"][np.asarray(ids)]  # (seq, hidden)
    mask = np.triu(np.full((seq, seq), -np.inf, dtype=np.float32), 1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = _rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = (_linear(w, p + "self_attn.q_proj", h)).reshape(seq, heads, hd)
        k = (_linear(w, p + "self_attn.k_proj", h)).reshape(seq, kv_heads, hd)
        v = (_linear(w, p + "self_attn.v_proj", h)).reshape(seq, kv_heads, hd)
        q, k = _rope(q, pos, theta), _rope(k, pos, theta)
        group = heads // kv_heads
        k = np.repeat(k, group, axis=1)  # (seq, heads, hd)
        v = np.repeat(v, group, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.float32(np.sqrt(hd)) + mask  # (heads, seq, seq)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        attn = np.einsum("hqk,khd->qhd", probs, v).reshape(seq, heads * hd)
        x = x + _linear(w, p + "self_attn.o_proj", attn)
        h = _rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = _linear(w, p + "mlp.gate_proj", h)
        up = _linear(w, p + "mlp.up_proj", h)
        act = gate / (1.0 + np.exp(-gate)) * up
        x = x + _linear(w, p + "mlp.down_proj", act)
    x = _rms_norm(x, w["model.norm.weight"], eps)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return (x @ head.T).astype(np.float32)
