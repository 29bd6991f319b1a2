"""Quantizing float weights into a `formats` container (the float schemes `q4f32_min` and
`--embedding-bits 8`), checked against `formats.dequantize`.

With a min (value = scale * code + min, codes 0..max_code): start from min = group min and
scale = (max - min) / max_code, then alternate rounding the codes with a least-squares refit of
(scale, min) for those codes, keeping each group's best (lowest squared error) of the rounds.
Symmetric (value = scale * (code - offset)): the group's value of largest magnitude maps to code 0
(scale = extreme / -offset); `group_quant.quantize_int4` (q4f32_1 / q4f16_1) is this rule.
Every error is measured on the float32 values the kernels compute.
"""

from __future__ import annotations

import numpy as np

from ..errors import WeightMappingError
from .formats import WeightFormat, pack_codes

REFIT_ROUNDS = 4


def _codes(groups: np.ndarray, scale: np.ndarray, low: np.ndarray, max_code: int) -> np.ndarray:
    """Nearest codes in 0..max_code of (rows, n, group) values for per-group scale and min."""
    safe = np.where(scale == 0, np.float32(1), scale)[:, :, None]  # (rows, n, 1)
    return np.clip(np.rint((groups - low[:, :, None]) / safe), 0, max_code)  # (rows, n, group)


def _error(groups: np.ndarray, codes: np.ndarray, scale: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Per-group squared error of scale * code + min (float32, the kernels' order): (rows, n)."""
    values = scale[:, :, None] * codes.astype(np.float32) + low[:, :, None]  # (rows, n, group)
    return np.square(values - groups).sum(axis=2, dtype=np.float64)


def _refit(groups: np.ndarray, codes: np.ndarray, scale: np.ndarray, low: np.ndarray):
    """Least-squares (scale, min) for fixed codes; groups whose codes are all equal keep theirs."""
    c = codes.astype(np.float64)  # (rows, n, group)
    w = groups.astype(np.float64)
    n = groups.shape[2]
    sc, sw, scc, scw = c.sum(2), w.sum(2), (c * c).sum(2), (c * w).sum(2)  # (rows, n) each
    det = n * scc - sc * sc
    ok = det > 0
    new_scale = np.where(ok, (n * scw - sc * sw) / np.where(ok, det, 1), scale)
    new_low = np.where(ok, (sw - new_scale * sc) / n, low)
    return new_scale.astype(np.float32), new_low.astype(np.float32)


def quantize_min(groups: np.ndarray, max_code: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, n, group) float32 -> (codes (rows, n, group), scale (rows, n), min (rows, n))."""
    low = groups.min(axis=2)  # (rows, n)
    scale = ((groups.max(axis=2) - low) / np.float32(max_code)).astype(np.float32)
    best_codes = _codes(groups, scale, low, max_code)
    best_scale, best_low = scale, low
    best_err = _error(groups, best_codes, scale, low)
    codes = best_codes
    for _ in range(REFIT_ROUNDS):
        scale, low = _refit(groups, codes, scale, low)
        codes = _codes(groups, scale, low, max_code)
        err = _error(groups, codes, scale, low)
        better = err < best_err  # (rows, n)
        best_codes = np.where(better[:, :, None], codes, best_codes)
        best_scale = np.where(better, scale, best_scale)
        best_low = np.where(better, low, best_low)
        best_err = np.minimum(err, best_err)
    return best_codes, best_scale, best_low


def quantize_symmetric(groups: np.ndarray, offset: int,
                       scale_dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """(rows, n, group) float32 -> (codes (rows, n, group) in 0..2*offset-1, scale (rows, n) in
    `scale_dtype`); codes are rounded against the scale as stored (a float16 scale rounds first)."""
    extreme = np.take_along_axis(groups, np.abs(groups).argmax(axis=2)[:, :, None], axis=2)[:, :, 0]
    scale = (extreme / np.float32(-offset)).astype(scale_dtype)  # (rows, n)
    safe = np.where(scale == 0, np.float32(1), scale.astype(np.float32))[:, :, None]
    return np.clip(np.rint(groups / safe), -offset, offset - 1) + offset, scale


def quantize(w: np.ndarray, fmt: WeightFormat) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A float (rows, cols) weight in `fmt`: (q_weight (rows, cols / values_per_word) uint32,
    q_scale (rows, cols / group_size) float32, q_min like q_scale or None)."""
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2 or w.shape[1] % fmt.group_size or not np.isfinite(w).all():
        raise WeightMappingError(
            f"a {w.dtype} weight of shape {w.shape} cannot be quantized to {fmt.name}", where=fmt.name,
            fix=f"pass a finite 2-D weight whose column count is a multiple of {fmt.group_size}")
    rows, cols = w.shape
    groups = w.reshape(rows, cols // fmt.group_size, fmt.group_size)  # (rows, n, group)
    q_min = None
    if fmt.has_min:
        codes, scale, q_min = quantize_min(groups, fmt.max_code)
    else:
        codes, scale = quantize_symmetric(groups, fmt.offset)
    q_weight = pack_codes(codes.astype(np.uint32).reshape(rows, cols), fmt)  # (rows, cols / vpw)
    return q_weight, np.ascontiguousarray(scale), None if q_min is None else np.ascontiguousarray(q_min)
