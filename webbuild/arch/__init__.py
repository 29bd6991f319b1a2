"""The architecture registry: HF `model_type` -> Architecture. Adding one is one file + one line."""

from __future__ import annotations

from ..errors import UnknownArchitectureError
from . import (
    bert,
    gemma,
    gemma2,
    gemma3,
    glm,
    gpt_bigcode,
    gpt_neox,
    gptj,
    llama,
    mistral,
    phi,
    phi3,
    qwen2,
    qwen3,
    rwkv,
    stablelm,
)
from .base import Architecture

REGISTRY: dict[str, Architecture] = {
    "llama": llama.ARCH,
    "rwkv": rwkv.ARCH,
    "gpt_bigcode": gpt_bigcode.ARCH,
    "gemma": gemma.ARCH,
    "gemma2": gemma2.ARCH,
    "gemma3": gemma3.ARCH,
    "stablelm": stablelm.ARCH,
    "glm": glm.ARCH,
    "gpt_neox": gpt_neox.ARCH,
    "gptj": gptj.ARCH,
    "phi": phi.ARCH,
    "phi3": phi3.ARCH,
    "mistral": mistral.ARCH,
    "qwen2": qwen2.ARCH,
    "qwen3": qwen3.ARCH,
    "bert": bert.ARCH,
}


def get_architecture(model_type: str | None, where: str = "config.json: model_type") -> Architecture:
    """Find the architecture for a checkpoint's `model_type`."""
    for arch in REGISTRY.values():
        if model_type in arch.hf_model_types:
            return arch
    known = sorted({t for a in REGISTRY.values() for t in a.hf_model_types})
    raise UnknownArchitectureError(
        f"architecture {model_type!r} is not supported",
        where=where,
        fix=f"supported model_type values: {', '.join(known)}",
    )
