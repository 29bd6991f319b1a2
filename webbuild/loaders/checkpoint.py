"""The loader-neutral view of a source checkpoint that the build pipeline consumes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ExactSource:
    """A quantized source's own weights (GGUF), for `--quantization source`, by HF tensor name.

    format_of: the exact container (`quant.formats.WeightFormat`) of a tensor's stored type, or
        None when it has none (float tensors, types without a container).
    shape_of: the tensor's shape (rows, cols), without reading it.
    read: the tensor as a `quant.gguf_exact.ExactWeight` (rows in Hugging Face order).
    """

    format_of: Callable[[str], Any]
    shape_of: Callable[[str], tuple[int, ...]]
    read: Callable[[str], Any]


@dataclass
class Checkpoint:
    """A checkpoint after loading, whatever its on-disk format.

    config: a Hugging Face `config.json`-style dict (`model_type`, `hidden_size`, ...).
    tensor_names: every source tensor, by its Hugging Face name.
    read_tensor: returns one tensor as a numpy array (float32 or float16), read lazily.
    tokenizer_files: file name -> bytes to copy into the model folder
        (always `tokenizer.json`; `tokenizer_config.json` when the source has one).
    chat_template: the Jinja chat template, or None.
    generation_config: `generation_config.json`-style dict (may be empty).
    param_generator: synthetic checkpoints only (webbuild.loaders.synthetic): returns each model
        parameter directly, `(name, shape, dtype) -> array`, instead of float source tensors.
    context_window: the default context window when the build does not set one (None: the
        model's own limit).
    exact: the source's own quantized weights, when it has them (GGUF); None otherwise.
    shape_of: a source tensor's shape from the file's header (nothing read); None when unknown.
    """

    source: Path
    config: dict
    tensor_names: list[str]
    read_tensor: Callable[[str], np.ndarray]
    tokenizer_files: dict[str, bytes]
    chat_template: str | None = None
    generation_config: dict = field(default_factory=dict)
    param_generator: Callable[[str, tuple[int, ...], str], np.ndarray] | None = None
    context_window: int | None = None
    exact: ExactSource | None = None
    shape_of: Callable[[str], tuple[int, ...]] | None = None
