"""Applies an architecture's weight map to a checkpoint: checks coverage and shapes, reads lazily."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .arch.base import WeightMap
from .errors import WeightMappingError
from .loaders.checkpoint import Checkpoint

_SHOWN = 8


def _listing(names: list[str]) -> str:
    head = ", ".join(names[:_SHOWN])
    return head + (f", ... ({len(names)} in all)" if len(names) > _SHOWN else "")


def check_coverage(checkpoint: Checkpoint, wmap: WeightMap) -> None:
    """Every source tensor the map needs exists, and every source tensor is used or declared unused."""
    available = set(checkpoint.tensor_names)
    needed = {s for w in wmap.weights.values() for s in w.sources}
    missing = sorted(needed - available)
    if missing:
        raise WeightMappingError(
            f"{len(missing)} tensors the architecture needs are missing: {_listing(missing)}",
            where=str(checkpoint.source),
            fix="check that the checkpoint is complete and matches config.json (model_type, layer count)",
        )
    leftover = sorted(n for n in available - needed if not wmap.unused(n))
    if leftover:
        raise WeightMappingError(
            f"{len(leftover)} source tensors are not used by the architecture: {_listing(leftover)}",
            where=str(checkpoint.source),
            fix="the checkpoint does not match its config.json model_type; use the right architecture",
        )


def float_reader(checkpoint: Checkpoint, wmap: WeightMap,
                 expected_shapes: dict[str, tuple[int, ...]]) -> Callable[[str], np.ndarray]:
    """A function returning one model float weight (float32), combined from its source tensors."""

    def read(name: str) -> np.ndarray:
        source = wmap.weights.get(name)
        if source is None:
            raise WeightMappingError(f"the weight map has no entry for model weight {name!r}",
                                     where="webbuild/arch", fix="this is a webbuild bug; please report it")
        arrays = [np.asarray(checkpoint.read_tensor(s), dtype=np.float32) for s in source.sources]
        value = source.combine(arrays)
        expected = expected_shapes.get(name)
        if expected is not None and tuple(value.shape) != tuple(expected):
            raise WeightMappingError(
                f"tensor shape {tuple(value.shape)} does not match the expected {tuple(expected)} "
                f"(from {', '.join(source.sources)})",
                where=f"{checkpoint.source}: {source.sources[0]}",
                fix="config.json does not describe these weights; check hidden_size, heads and layer counts",
            )
        return value

    return read
