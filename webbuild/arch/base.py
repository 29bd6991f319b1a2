"""What every architecture module provides, and the helpers they share (config fields, weight maps)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tvm.relax.frontend import nn

from ..errors import ConfigError
from ..quant.scheme import QuantScheme
from .gguf_layout import GGUFLayout

if TYPE_CHECKING:
    from ..kernels.model_kernels import ModelKernels

Combine = Callable[[list[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class WeightSource:
    """How one float model weight is made from source tensors (by Hugging Face name)."""

    sources: tuple[str, ...]
    combine: Combine = staticmethod(lambda arrays: arrays[0])


@dataclass
class WeightMap:
    """model float weight name -> WeightSource, plus the source tensors deliberately ignored."""

    weights: dict[str, WeightSource]
    unused: Callable[[str], bool] = staticmethod(lambda name: False)


def concat_rows(arrays: list[np.ndarray]) -> np.ndarray:
    """Fuse projections that read the same input into one (sum of rows, cols) weight."""
    return np.concatenate(arrays, axis=0)


@dataclass(frozen=True)
class Architecture:
    """A registry entry: parse a config, build the Relax model, map the weights."""

    name: str
    hf_model_types: tuple[str, ...]
    parse_config: Callable[[dict, BuildOptions], Any]
    build_model: Callable[[Any, QuantScheme, ModelKernels], nn.Module]  # config, scheme, the backend's kernels
    weight_map: Callable[[Any], WeightMap]
    gguf: GGUFLayout | None = None  # how llama.cpp writes it (None: no GGUF loader)
    model_kind: str = "chat"  # "chat": a language model (embed/prefill/decode); "embedding": `encode`
    # reads what a source folder holds beyond config.json into the parsed config (config, folder) -> config
    source_extras: Callable[[Any, Path], Any] | None = None


@dataclass(frozen=True)
class BuildOptions:
    """User choices that shape the compiled model (not the weights)."""

    context_window: int | None = None
    prefill_chunk: int = 512


#: The largest whole number a config field may hold (sizes beyond it would overflow int32 indexing).
MAX_CONFIG_INT = (1 << 31) - 1
#: Tighter limits where a huge value would make the build allocate without end before failing.
FIELD_LIMITS = {"num_hidden_layers": 1024, "n_layer": 1024, "num_layers": 1024}


def flag(raw: dict, key: str, default: bool, where: str = "config.json") -> bool:
    """A true/false config field: JSON true or false (null or absent: `default`), else ConfigError
    (a string "false" must not read as true)."""
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"field {key!r} should be true or false, got {value!r}", where=f"{where}: {key}",
                          fix=f"set {key!r} to true or false (JSON booleans, not strings)")
    return value


@dataclass
class ConfigReader:
    """Reads fields of a config dict with typed errors that name the file and field."""

    raw: dict
    where: str = "config.json"
    _used: set = field(default_factory=set)

    def require(self, key: str, kind: type = int):
        if key not in self.raw or self.raw[key] is None:
            raise ConfigError(
                f"required field {key!r} is missing",
                where=f"{self.where}: {key}",
                fix=f"add {key!r} to {self.where} (see the model's original config)",
            )
        return self._check(key, self.raw[key], kind)

    def get(self, key: str, default, kind: type = int):
        value = self.raw.get(key)
        if value is None:
            return default
        return self._check(key, value, kind)

    def _check(self, key: str, value, kind: type):
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(
                f"field {key!r} should be {kind.__name__}, got {value!r}",
                where=f"{self.where}: {key}",
                fix=f"set {key!r} to a {kind.__name__}",
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"field {key!r} must be a finite number, got {value!r}", where=f"{self.where}: {key}",
                              fix=f"set {key!r} to the model's real value")
        limit = FIELD_LIMITS.get(key, MAX_CONFIG_INT)
        if isinstance(value, int) and kind is int and value > limit:
            raise ConfigError(f"field {key!r} is {value}, more than webbuild accepts ({limit})",
                              where=f"{self.where}: {key}", fix=f"check {key!r}: no real model has that many")
        if (kind in (int, float) and isinstance(value, (int, float)) and value <= 0
                and key not in ("bos_token_id", "eos_token_id")):
            raise ConfigError(
                f"field {key!r} must be positive, got {value!r}",
                where=f"{self.where}: {key}",
                fix=f"set {key!r} to a positive value",
            )
        return value
