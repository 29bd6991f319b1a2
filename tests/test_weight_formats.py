"""Weight containers (webbuild.quant.formats) and the exact GGUF conversion into them (gguf_exact).

The decisive check: for every supported GGUF block type, on random valid blocks, the container's
numpy dequantization equals `gguf.quants.dequantize` of the same bytes bit for bit (the float32
operations are the same ones, see gguf_exact's docstring).
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf.quants import dequantize as gguf_dequantize, quantize as gguf_quantize

from synthetic_gguf import random_blocks, write_typed_gguf
from webbuild.errors import (
    CorruptFileError,
    UnsupportedQuantizationError,
    UnsupportedTensorTypeError,
    WeightMappingError,
)
from webbuild.loaders.gguf_loader import read_gguf
from webbuild.quant.formats import (
    FORMATS,
    WeightFormat,
    dequantize,
    format_by_name,
    pack_codes,
    pack_halves,
    store_groups,
    unpack_codes,
    unpack_halves,
)
from webbuild.quant.gguf_exact import ExactWeight, convert_exact, exact_format

CONTAINERS = {
    T.Q4_0: "int4_g32_f16", T.Q4_1: "int4_g32_min_f16", T.Q5_0: "int8_g32_f16", T.Q5_1: "int8_g32_min_f16",
    T.Q8_0: "int8_g32_f16", T.Q2_K: "int4_g16_min", T.Q3_K: "int4_g16", T.Q4_K: "int4_g32_min",
    T.Q5_K: "int8_g32_min", T.Q6_K: "int8_g16",
}
K_QUANTS = (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K)
SHAPES_K = [(1, 256), (3, 512), (5, 768)]
SHAPES_LEGACY = [(1, 32), (4, 96), (7, 256)]
CASES = [(kind, shape) for kind in CONTAINERS for shape in (SHAPES_K if kind in K_QUANTS else SHAPES_LEGACY)]


def reference(raw: np.ndarray, kind: T, shape: tuple[int, int]) -> np.ndarray:
    """gguf-py's own float32 dequantization of the bytes, (rows, cols)."""
    return np.asarray(gguf_dequantize(raw, kind), dtype=np.float32).reshape(shape)


def container_values(weight: ExactWeight) -> np.ndarray:
    return dequantize(weight.q_weight, weight.q_scale, weight.q_min, weight.fmt)


def assert_bit_equal(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


# --- formats ---------------------------------------------------------------------------------

def test_formats_cover_every_combination():
    assert len(FORMATS) == 16
    for name, fmt in FORMATS.items():
        assert fmt.name == name and format_by_name(name) is fmt
        assert fmt.values_per_word == 32 // fmt.bits
        assert fmt.offset == (0 if fmt.has_min else 1 << (fmt.bits - 1))
        assert fmt.group_dtype == ("uint32" if fmt.half_scales else "float32")
    assert {fmt.name for fmt in FORMATS.values()} == {
        f"int{b}_g{g}{m}{h}" for b in (4, 8) for g in (16, 32) for m in ("", "_min") for h in ("", "_f16")}
    assert FORMATS["int4_g32"] == WeightFormat(bits=4, group_size=32, has_min=False)
    assert (FORMATS["int4_g32"].offset, FORMATS["int8_g16"].offset, FORMATS["int8_g32_min"].offset) == (8, 128, 0)


def test_unknown_formats_are_typed_errors():
    with pytest.raises(UnsupportedQuantizationError):
        format_by_name("int3_g32")
    with pytest.raises(UnsupportedQuantizationError):
        WeightFormat(bits=2, group_size=32, has_min=False)
    with pytest.raises(UnsupportedQuantizationError):
        WeightFormat(bits=4, group_size=64, has_min=False)


def test_bits_per_weight():
    assert FORMATS["int8_g16"].bits_per_weight == 10.0
    assert FORMATS["int4_g32"].bits_per_weight == 5.0
    assert FORMATS["int4_g16_min"].bits_per_weight == 8.0
    assert FORMATS["int8_g32_min"].bits_per_weight == 10.0
    assert FORMATS["int4_g32_min_f16"].bits_per_weight == 5.0
    assert FORMATS["int8_g32_f16"].bits_per_weight == 8.5


def test_half_scales_round_trip():
    # zero, -0, float16 subnormals, the largest float16, odd group counts (a padded last word)
    values = np.array([[0.0, -0.0, 2.0 ** -24, -(2.0 ** -14) * 0.5, 65504.0],
                       [1.0, -1.5, 0.000123, 3.14, -65504.0]], dtype=np.float16).astype(np.float32)
    words = pack_halves(values)
    assert words.shape == (2, 3) and words.dtype == np.uint32
    assert words[0, 0] == 0x80000000  # group 0 (+0) low, group 1 (-0) high
    assert_bit_equal(unpack_halves(words, 5), values)
    assert fmt_shape("int4_g32_min_f16", 2, 5 * 32) == (2, 3) and fmt_shape("int4_g32_min", 2, 160) == (2, 5)


def fmt_shape(name: str, rows: int, cols: int) -> tuple[int, int]:
    return FORMATS[name].group_shape(rows, cols)


def test_half_scales_reject_inexact_values():
    for bad in (0.1, 70000.0, np.inf, np.nan):
        with pytest.raises(WeightMappingError):
            pack_halves(np.array([[1.0, bad]], dtype=np.float32))
    with pytest.raises(WeightMappingError):
        store_groups(np.array([[0.1]], dtype=np.float32), FORMATS["int8_g32_f16"])
    assert store_groups(np.array([[0.1]], dtype=np.float32), FORMATS["int8_g32"]).dtype == np.float32


def test_word_layout():
    # value k of word j is column vpw*j + k at bits [bits*k, bits*k + bits)
    int4 = pack_codes(np.arange(16, dtype=np.uint32).reshape(1, 16), FORMATS["int4_g16"])
    assert int4.dtype == np.uint32 and int4.tolist() == [[0x76543210, 0xFEDCBA98]]
    int8 = pack_codes(np.array([[1, 2, 3, 4, 250, 251, 252, 255]]), FORMATS["int8_g32"])
    assert int8.tolist() == [[0x04030201, 0xFFFCFBFA]]


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_pack_round_trip(name):
    fmt = FORMATS[name]
    codes = np.random.default_rng(3).integers(0, fmt.max_code + 1, (5, 64)).astype(np.uint32)
    packed = pack_codes(codes, fmt)
    assert packed.shape == (5, 64 // fmt.values_per_word) and packed.dtype == np.uint32
    unpacked = unpack_codes(packed, fmt)
    assert unpacked.dtype == np.uint32 and np.array_equal(unpacked, codes)


def test_pack_rejects_bad_codes():
    fmt = FORMATS["int4_g32"]
    with pytest.raises(WeightMappingError):
        pack_codes(np.full((2, 8), 16), fmt)
    with pytest.raises(WeightMappingError):
        pack_codes(np.full((2, 8), -1), fmt)
    with pytest.raises(WeightMappingError):
        pack_codes(np.zeros((2, 12)), fmt)
    with pytest.raises(WeightMappingError):
        unpack_codes(np.zeros((2, 3), dtype=np.float32), fmt)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_dequantize_formula(name):
    fmt = FORMATS[name]
    rng = np.random.default_rng(4)
    rows, cols = 3, 64
    codes = rng.integers(0, fmt.max_code + 1, (rows, cols))
    # float16-valued scales, so that the _f16 formats hold them too
    scale = rng.standard_normal((rows, cols // fmt.group_size)).astype(np.float16).astype(np.float32)
    minimum = rng.standard_normal((rows, cols // fmt.group_size)).astype(np.float16).astype(np.float32) \
        if fmt.has_min else None
    got = dequantize(pack_codes(codes, fmt), store_groups(scale, fmt),
                     None if minimum is None else store_groups(minimum, fmt), fmt)
    want = np.empty((rows, cols), dtype=np.float32)
    for r in range(rows):
        for c in range(cols):
            g = c // fmt.group_size
            value = scale[r, g] * np.float32(codes[r, c] - fmt.offset)
            want[r, c] = value + minimum[r, g] if minimum is not None else value
    assert_bit_equal(got, want)


def test_dequantize_rejects_mismatched_parts():
    fmt, fmt_min = FORMATS["int4_g32"], FORMATS["int4_g32_min"]
    q_weight = np.zeros((2, 8), dtype=np.uint32)  # (2, 64)
    scale = np.ones((2, 2), dtype=np.float32)
    with pytest.raises(WeightMappingError):
        dequantize(q_weight, scale, scale, fmt)
    with pytest.raises(WeightMappingError):
        dequantize(q_weight, scale, None, fmt_min)
    with pytest.raises(WeightMappingError):
        dequantize(q_weight, np.ones((2, 3), dtype=np.float32), None, fmt)
    with pytest.raises(WeightMappingError):
        dequantize(q_weight, scale, np.ones((1, 2), dtype=np.float32), fmt_min)


def test_int4_g32_is_group_quant_layout():
    from webbuild.quant import group_quant

    fmt = FORMATS["int4_g32"]
    assert (group_quant.OFFSET, group_quant.VALUES_PER_WORD) == (fmt.offset, fmt.values_per_word)
    w = np.random.default_rng(5).standard_normal((6, 128)).astype(np.float32)
    q_weight, q_scale = group_quant.quantize_int4(w, 32, "float32")
    assert q_weight.shape == (6, 16) and q_scale.shape == (6, 4)
    assert_bit_equal(dequantize(q_weight, q_scale, None, fmt), group_quant.dequantize_int4(q_weight, q_scale, 32))
    # and the codes are what quantize_int4 chose: round(w / scale) + 8
    codes = unpack_codes(q_weight, fmt).astype(np.int64)
    want = np.clip(np.rint(w / np.repeat(q_scale, 32, axis=1)), -8, 7) + 8
    assert np.array_equal(codes, want)


# --- exact GGUF conversion ------------------------------------------------------------------

def test_exact_format_per_type():
    for kind, name in CONTAINERS.items():
        assert exact_format(kind) is FORMATS[name]
        assert exact_format(int(kind)) is FORMATS[name]
    for kind in (T.F32, T.F16, T.BF16, T.Q8_1, T.Q8_K, T.IQ4_NL, T.IQ2_XXS, T.TQ1_0, T.MXFP4):
        assert exact_format(kind) is None
    assert exact_format(9999) is None


@pytest.mark.parametrize("kind,shape", CASES, ids=[f"{k.name}-{r}x{c}" for k, (r, c) in CASES])
def test_convert_exact_is_bit_exact(kind, shape):
    rng = np.random.default_rng(int(kind) * 100 + shape[0])
    raw = random_blocks(kind, shape, rng)  # (rows, bytes per row)
    want = reference(raw, kind, shape)
    assert np.isfinite(want).all()
    weight = convert_exact(raw, kind, shape)
    rows, cols = shape
    fmt = weight.fmt
    assert fmt is FORMATS[CONTAINERS[kind]]
    assert weight.q_weight.shape == (rows, cols // fmt.values_per_word) and weight.q_weight.dtype == np.uint32
    assert weight.q_scale.shape == fmt.group_shape(rows, cols) and weight.q_scale.dtype == np.dtype(fmt.group_dtype)
    assert fmt.half_scales == (kind not in K_QUANTS)  # legacy blocks keep their float16 d (and m)
    if fmt.has_min:
        assert weight.q_min is not None and weight.q_min.shape == weight.q_scale.shape
        assert weight.q_min.dtype == weight.q_scale.dtype
    else:
        assert weight.q_min is None
    assert_bit_equal(container_values(weight), want)


@pytest.mark.parametrize("kind", list(CONTAINERS), ids=[k.name for k in CONTAINERS])
def test_convert_exact_any_finite_scales(kind):
    # zeros, float16 subnormals and the largest float16 as d / dmin / m: still bit-exact
    shape = (4, 512)
    raw = random_blocks(kind, shape, np.random.default_rng(int(kind)), any_finite=True)
    want = reference(raw, kind, shape)
    assert np.isfinite(want).all()
    assert_bit_equal(container_values(convert_exact(raw, kind, shape)), want)


@pytest.mark.parametrize("kind", [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0], ids=lambda k: k.name)
def test_convert_exact_of_quantized_floats(kind):
    # blocks gguf-py's own quantizer makes from a real-looking weight, not random bytes
    w = (np.random.default_rng(6).standard_normal((8, 256)) * 0.02).astype(np.float32)
    raw = gguf_quantize(w, kind)
    assert_bit_equal(container_values(convert_exact(raw, kind, w.shape)), reference(raw, kind, w.shape))


def test_codes_use_the_container_range():
    # Q8_0's int8 -128 and 127 map to codes 0 and 255; Q3_K's -4..3 to 4..11
    raw = random_blocks(T.Q8_0, (1, 32), np.random.default_rng(7))
    raw[0, 2:4] = [0x80, 0x7F]  # q = -128, 127
    codes = unpack_codes(convert_exact(raw, T.Q8_0, (1, 32)).q_weight, FORMATS["int8_g32_f16"])
    assert codes[0, :2].tolist() == [0, 255]
    codes = unpack_codes(convert_exact(random_blocks(T.Q3_K, (2, 256), np.random.default_rng(8)), T.Q3_K,
                                       (2, 256)).q_weight, FORMATS["int4_g16"])
    assert codes.min() >= 4 and codes.max() <= 11


def test_convert_exact_rejects_bad_input():
    raw = random_blocks(T.Q4_K, (2, 256), np.random.default_rng(9))
    with pytest.raises(CorruptFileError):
        convert_exact(raw[:, :-1], T.Q4_K, (2, 256))  # a byte short per row
    with pytest.raises(CorruptFileError):
        convert_exact(raw, T.Q4_K, (1, 256))  # twice the bytes the shape needs
    with pytest.raises(CorruptFileError):
        convert_exact(raw, T.Q4_K, (4, 128))  # row length not whole blocks
    with pytest.raises(WeightMappingError):
        convert_exact(raw, T.Q4_K, (512,))
    with pytest.raises(UnsupportedTensorTypeError):
        convert_exact(raw, T.IQ4_NL, (2, 256))
    with pytest.raises(UnsupportedTensorTypeError):
        convert_exact(raw, T.F16, (2, 256))
    with pytest.raises(UnsupportedTensorTypeError):
        convert_exact(raw, 9999, (2, 256))


def test_size_per_weight():
    # container bits per weight vs the GGUF type's
    gguf_bits = {kind: GGML_QUANT_SIZES[kind][1] * 8 / GGML_QUANT_SIZES[kind][0] for kind in CONTAINERS}
    assert gguf_bits[T.Q6_K] == 6.5625 and gguf_bits[T.Q4_K] == 4.5 and gguf_bits[T.Q4_0] == 4.5
    for kind, name in CONTAINERS.items():
        assert FORMATS[name].bits_per_weight >= gguf_bits[kind]
    assert FORMATS[CONTAINERS[T.Q4_0]].bits_per_weight == 4.5  # as small as the GGUF type


# --- synthetic GGUF files of each type --------------------------------------------------------

def test_typed_gguf_reads_back(tmp_path):
    tensors = {f"t.{kind.name}": (kind, (3, 256)) for kind in CONTAINERS}
    tensors |= {"t.F32": (T.F32, (2, 32)), "t.F16": (T.F16, (2, 32)), "t.BF16": (T.BF16, (2, 32))}
    path = tmp_path / "typed.gguf"
    written = write_typed_gguf(path, tensors, seed=11)
    reader = gguf.GGUFReader(path)
    assert {t.name for t in reader.tensors} == set(tensors)
    for tensor in reader.tensors:
        kind, (rows, cols) = tensors[tensor.name]
        assert tensor.tensor_type == kind
        assert [int(d) for d in tensor.shape] == [cols, rows]  # GGUF order
        data = np.asarray(tensor.data)
        assert np.array_equal(data.view(np.uint8).reshape(rows, -1), written[tensor.name])
    # webbuild's own loader maps the same bytes, and they convert exactly
    gguf_file = read_gguf(path)
    for name, (kind, shape) in tensors.items():
        raw = gguf_file.raw_bytes(name)
        assert np.array_equal(raw, written[name])
        if exact_format(kind) is not None:
            assert_bit_equal(container_values(convert_exact(raw, kind, shape)), gguf_file.dequantize(name))
