"""Load a GGUF file as a `Checkpoint` with Hugging Face names and config.

Which architectures load, and how llama.cpp names and lays out their tensors, is data in the
architecture modules (`Architecture.gguf`, webbuild.arch.gguf_layout): `general.architecture`
picks the entry, its `<arch>.*` metadata keys make the HF config.

The header (metadata and tensor table) is parsed by the pinned `gguf.GGUFReader`, with
webbuild's checks added: reads past the end of the file, tensor types webbuild cannot
dequantize and malformed tensor-table entries are typed errors naming the file. Tensor data
stays in the reader's read-only memory map and is dequantized to float32 with
`gguf.quants.dequantize` only when `read_tensor` asks for it. llama.cpp stores the rows of some
projections permuted for interleaved RoPE (the layout's `permuted`: Llama's Q and K) and reorders
the rows of some fused ones (the layout's `row_order`: GPT-NeoX's per-head q/k/v as [q; k; v]);
`read_tensor` and `read_exact` undo both, so the weights are in the HF checkpoint's order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader
from gguf.gguf_reader import READER_SUPPORTED_VERSIONS
from gguf.quants import dequantize

from webbuild.arch import REGISTRY
from webbuild.arch.gguf_layout import GGUFLayout
from webbuild.errors import (
    ConfigError,
    CorruptFileError,
    SourceNotFoundError,
    UnknownArchitectureError,
    UnsupportedTensorTypeError,
    WeightMappingError,
)
from webbuild.loaders.checkpoint import Checkpoint, ExactSource
from webbuild.loaders.gguf_tokenizer import tokenizer_files_from_gguf
from webbuild.quant.gguf_exact import ExactWeight, convert_exact, exact_format

GGUF_MAGIC = b"GGUF"
MAX_DIMS = 4
RECONVERT_FIX = "re-download the file or re-convert it with llama.cpp's convert_hf_to_gguf.py"

SUPPORTED_TENSOR_TYPES = frozenset(
    GGMLQuantizationType[name]
    for name in ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                 "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
)

# Fields GGUFReader adds for the header's own counts; they are not metadata keys.
_READER_FIELDS = frozenset({"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"})

STANDARD_FIX = "use a GGUF written by llama.cpp's convert_hf_to_gguf.py"


@dataclass(frozen=True)
class GGUFTensorInfo:
    """One entry of the GGUF tensor table.

    dims: GGUF order, dims[0] varies fastest (the row length); `shape` is the numpy order.
    offset: absolute byte offset of the data in the file.
    """

    name: str
    dims: tuple[int, ...]
    type_id: int
    offset: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.dims))

    @property
    def n_elements(self) -> int:
        return math.prod(self.dims)

    @property
    def type_name(self) -> str:
        try:
            return GGMLQuantizationType(self.type_id).name
        except ValueError:
            return f"type id {self.type_id}"

    def n_bytes(self) -> int:
        """Bytes the data occupies; only valid for a type in GGML_QUANT_SIZES."""
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(self.type_id)]
        return self.n_elements // block * type_size


@dataclass
class GGUFFile:
    """A parsed GGUF header plus a read-only memory map of the whole file."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensorInfo]
    data: np.memmap

    def raw_bytes(self, name: str) -> np.ndarray:
        """The stored bytes of one tensor as (rows, bytes per row) uint8, no copy."""
        info = self.tensors[name]
        n_rows = info.n_elements // info.dims[0]
        start = info.offset
        return self.data[start:start + info.n_bytes()].reshape(n_rows, -1)

    def dequantize(self, name: str) -> np.ndarray:
        """One tensor as float32 in numpy shape, exactly as stored (no un-permuting)."""
        info = self.tensors[name]
        try:
            values = dequantize(self.raw_bytes(name), GGMLQuantizationType(info.type_id))
        except NotImplementedError as exc:
            raise _unsupported_type(self.path, info) from exc
        return np.array(values, dtype=np.float32).reshape(info.shape)  # copy out of the map


class _CheckedReader(GGUFReader):
    """`gguf.GGUFReader` (gguf==0.19.0, pinned) with webbuild's checks at two of its steps.

    The library parses the header. `_get`, the read primitive it uses for every header field,
    slices the memory map and would silently return short arrays past the end of the file;
    here it refuses to. `_build_tensors` runs `_check_tensor` on each tensor-table entry
    before the library maps that entry's data.
    """

    def __init__(self, path: Path):
        self.path = path
        super().__init__(path, mode="r")

    def _get(self, offset, dtype, count=1, override_order=None):
        start, size = int(offset), np.dtype(dtype).itemsize * int(count)
        if start + size > len(self.data):
            raise CorruptFileError(
                f"file ends inside the header (reading {size} bytes at byte {start} of "
                f"{len(self.data)})", where=str(self.path), fix=RECONVERT_FIX)
        return super()._get(offset, dtype, count, override_order)

    def _build_tensors(self, start_offs, fields):
        for field in fields:
            _check_tensor(self.path, _entry_info(self.path, field, start_offs), len(self.data))
        super()._build_tensors(start_offs, fields)


def _entry_info(path: Path, field, data_start: int) -> GGUFTensorInfo:
    """One tensor-table entry as read by GGUFReader (its `ReaderField` parts) as GGUFTensorInfo."""
    _name_length, _name, n_dims, dims, type_id, offset = field.parts
    if not 1 <= int(n_dims[0]) <= MAX_DIMS:
        raise CorruptFileError(f"tensor {field.name!r} has {int(n_dims[0])} dimensions",
                               where=str(path), fix=RECONVERT_FIX)
    return GGUFTensorInfo(field.name, tuple(int(d) for d in dims), int(type_id[0]),
                          data_start + int(offset[0]))


def _check_tensor(path: Path, info: GGUFTensorInfo, file_size: int) -> None:
    """Whitelisted type, whole blocks per row, data inside the file."""
    if info.type_id not in {t.value for t in SUPPORTED_TENSOR_TYPES}:
        raise _unsupported_type(path, info)
    if min(info.dims) < 1:
        raise CorruptFileError(f"tensor {info.name!r} has an empty dimension {info.dims}",
                               where=str(path), fix=RECONVERT_FIX)
    block, _ = GGML_QUANT_SIZES[GGMLQuantizationType(info.type_id)]
    if info.dims[0] % block:
        raise CorruptFileError(
            f"tensor {info.name!r} row length {info.dims[0]} is not a multiple of the "
            f"{info.type_name} block size {block}", where=str(path), fix=RECONVERT_FIX)
    if info.offset + info.n_bytes() > file_size:
        raise CorruptFileError(
            f"tensor {info.name!r} data ends past the end of the file (truncated download?)",
            where=str(path), fix=RECONVERT_FIX)


def _unsupported_type(path: Path, info: GGUFTensorInfo) -> UnsupportedTensorTypeError:
    allowed = ", ".join(sorted(t.name for t in SUPPORTED_TENSOR_TYPES))
    return UnsupportedTensorTypeError(
        f"tensor {info.name!r} is stored as {info.type_name}, which webbuild cannot dequantize",
        where=str(path),
        fix=f"use a GGUF whose tensors are {allowed}, or the original HF folder")


def _header_problem(path: Path) -> CorruptFileError | None:
    """The error for a file that does not start with GGUF magic and a supported version."""
    with path.open("rb") as stream:
        head = stream.read(8)
    if head[:4] != GGUF_MAGIC:
        return CorruptFileError("not a GGUF file (magic bytes are not 'GGUF')",
                                where=str(path), fix="pass a .gguf model file or a HF folder")
    version = int.from_bytes(head[4:8], "little")
    if len(head) == 8 and version not in READER_SUPPORTED_VERSIONS:
        return CorruptFileError(f"GGUF version {version} is not supported (need 2 or 3)",
                                where=str(path), fix=RECONVERT_FIX)
    return None


def _parse(path: Path) -> GGUFFile:
    reader = _CheckedReader(path)
    if reader.byte_order != "I":
        raise CorruptFileError("the file is big-endian; webbuild reads little-endian GGUF only",
                               where=str(path), fix=RECONVERT_FIX)
    metadata = {name: field.contents() for name, field in reader.fields.items()
                if name not in _READER_FIELDS}
    tensors = {t.name: GGUFTensorInfo(t.name, tuple(int(d) for d in t.shape),
                                      int(t.tensor_type), int(t.data_offset))
               for t in reader.tensors}
    version = reader.fields["GGUF.version"].contents()
    return GGUFFile(path, version, metadata, tensors, reader.data)


def read_gguf(path: str | Path) -> GGUFFile:
    """Parse a GGUF file's header with `gguf.GGUFReader` and keep its memory map (no tensor is
    read yet). A header the reader rejects is a CorruptFileError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SourceNotFoundError("GGUF file not found", where=str(path),
                                  fix="check the path, or pass a catalog model name")
    if path.stat().st_size == 0:
        raise CorruptFileError("the file is empty", where=str(path), fix=RECONVERT_FIX)
    try:
        return _parse(path)
    except (CorruptFileError, ValueError, KeyError) as exc:  # UnicodeDecodeError is a ValueError
        problem = _header_problem(path)
        if problem is not None:
            raise problem from exc
        if isinstance(exc, CorruptFileError):
            raise
        raise CorruptFileError(f"the GGUF header cannot be read: {exc}", where=str(path),
                               fix=RECONVERT_FIX) from exc


def gguf_architectures() -> dict[str, GGUFLayout]:
    """`general.architecture` value -> its layout, over the registered architectures."""
    return {name: arch.gguf for arch in REGISTRY.values() if arch.gguf is not None for name in arch.gguf.names}


def hf_tensor_name(gguf_name: str, layout: GGUFLayout | None = None) -> str | None:
    """Map a GGUF tensor name to its HF name (default: llama's names); None when it has none."""
    return (layout or gguf_architectures()["llama"]).hf_name(gguf_name)


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved pairs -> rotate-half halves).

    w: (n_out, *rest) with n_out = n_head * head_dim.
    """
    n_out, rest = w.shape[0], w.shape[1:]
    head_dim = n_out // n_head
    # (n_head, head_dim/2, 2, *rest) -> (n_head, 2, head_dim/2, *rest) -> (n_out, *rest)
    return w.reshape(n_head, head_dim // 2, 2, *rest).swapaxes(1, 2).reshape(n_out, *rest)


def _require(metadata: dict, key: str, path: Path) -> Any:
    if key not in metadata:
        raise ConfigError(f"required metadata key {key!r} is missing", where=f"{path}: {key}",
                          fix=RECONVERT_FIX)
    return metadata[key]


def _number(metadata: dict, key: str, path: Path, kind: type = int, default: Any = None):
    """A numeric metadata value as `kind`; ConfigError when missing (no default) or not a number."""
    value = metadata.get(key, default)
    if value is None:
        value = _require(metadata, key, path)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"expected a single number, found {type(value).__name__}",
                          where=f"{path}: {key}", fix=STANDARD_FIX)
    if kind is float:
        return _f32(value) if isinstance(value, float) else float(value)
    if value < 1:
        raise ConfigError(f"expected a positive count, found {value}", where=f"{path}: {key}",
                          fix=STANDARD_FIX)
    return int(value)


def gguf_layout(metadata: dict, path: Path) -> tuple[str, GGUFLayout]:
    """(general.architecture, its layout); UnknownArchitectureError naming the supported ones."""
    arch = _require(metadata, "general.architecture", path)
    known = gguf_architectures()
    if not isinstance(arch, str) or arch not in known:
        raise UnknownArchitectureError(
            f"architecture {arch!r} is not supported by the GGUF loader",
            where=f"{path}: general.architecture",
            fix=f"GGUF architectures webbuild loads: {', '.join(sorted(known))}; or build from the model's "
                "HF folder if its architecture is registered")
    return arch, known[arch]


def _f32(value: float) -> float:
    """A float32 metadata value as its shortest decimal (1e-05, not 9.99999974e-06)."""
    return float(str(np.float32(value)))


def _rope_scaling(metadata: dict, arch: str) -> dict | None:
    kind = metadata.get(f"{arch}.rope.scaling.type")
    if kind in (None, "none"):
        return None
    factor = metadata.get(f"{arch}.rope.scaling.factor", 1.0)
    scaling = {"rope_type": kind, "factor": _f32(factor)}
    original = metadata.get(f"{arch}.rope.scaling.original_context_length")
    if original is not None:
        scaling["original_max_position_embeddings"] = int(original)
    return scaling


def gguf_config(gguf_file: GGUFFile) -> dict:
    """A HF `config.json`-style dict built from the GGUF's `<arch>.*` metadata."""
    md, path = gguf_file.metadata, gguf_file.path
    arch, layout = gguf_layout(md, path)
    hidden = _number(md, f"{arch}.embedding_length", path)
    n_heads = _number(md, f"{arch}.attention.head_count", path)
    head_dim = _number(md, f"{arch}.attention.key_length", path, default=hidden // n_heads)
    config = {
        "model_type": layout.model_type,
        "architectures": [layout.hf_class],
        "hidden_act": layout.hidden_act,
        "hidden_size": hidden,
        "intermediate_size": _number(md, f"{arch}.feed_forward_length", path),
        "num_hidden_layers": _number(md, f"{arch}.block_count", path),
        "num_attention_heads": n_heads,
        "num_key_value_heads": _number(md, f"{arch}.attention.head_count_kv", path, default=n_heads),
        "head_dim": head_dim,
        **({"layer_norm_eps": _number(md, f"{arch}.attention.layer_norm_epsilon", path, float)} if layout.layer_norm
           else {"rms_norm_eps": _number(md, f"{arch}.attention.layer_norm_rms_epsilon", path, float)}),
        "rope_theta": _number(md, f"{arch}.rope.freq_base", path, float, default=10000.0),
        "max_position_embeddings": _number(md, f"{arch}.context_length", path),
        "vocab_size": _vocab_size(gguf_file, arch),
        "tie_word_embeddings": "output.weight" not in gguf_file.tensors,
        "attention_bias": "blk.0.attn_q.bias" in gguf_file.tensors,
        "mlp_bias": False,
    }
    rope_dims = md.get(f"{arch}.rope.dimension_count", head_dim)
    if layout.partial_rotary and isinstance(rope_dims, int) and 0 < rope_dims <= head_dim:
        # always given: the families' HF defaults are partial (StableLM 0.25, Phi 0.5, GPT-NeoX 0.25)
        config["partial_rotary_factor"] = rope_dims / head_dim
    else:
        _check_rope_dims(md, arch, head_dim, path)
    if f"{arch}.attention.sliding_window" in md:
        config["sliding_window"] = _number(md, f"{arch}.attention.sliding_window", path)
    if layout.extra_config is not None:
        config.update(layout.extra_config(md, frozenset(gguf_file.tensors)))
    if (scaling := _rope_scaling(md, arch)) is not None:
        config["rope_scaling"] = scaling
    config.update(_special_ids(md))
    for name, aliases in layout.config_aliases.items():
        if name in config:
            config.update(dict.fromkeys(aliases, config[name]))
    return config


def _check_rope_dims(metadata: dict, arch: str, head_dim: int, path: Path) -> None:
    rope_dims = metadata.get(f"{arch}.rope.dimension_count", head_dim)
    if rope_dims != head_dim:
        raise ConfigError(
            f"RoPE covers {rope_dims} of {head_dim} head dimensions; {arch} needs all of them",
            where=f"{path}: {arch}.rope.dimension_count", fix=STANDARD_FIX)


def _vocab_size(gguf_file: GGUFFile, arch: str) -> int:
    md = gguf_file.metadata
    if f"{arch}.vocab_size" in md:
        return int(md[f"{arch}.vocab_size"])
    if "tokenizer.ggml.tokens" in md:
        return len(md["tokenizer.ggml.tokens"])
    return int(_require_tensor(gguf_file, "token_embd.weight").dims[1])


def _require_tensor(gguf_file: GGUFFile, name: str) -> GGUFTensorInfo:
    if name not in gguf_file.tensors:
        raise WeightMappingError(f"tensor {name!r} is missing", where=str(gguf_file.path),
                                 fix=RECONVERT_FIX)
    return gguf_file.tensors[name]


def _special_ids(metadata: dict) -> dict:
    ids = {}
    for field in ("bos", "eos"):
        key = f"tokenizer.ggml.{field}_token_id"
        if key in metadata:
            ids[f"{field}_token_id"] = int(metadata[key])
    return ids


def _name_map(gguf_file: GGUFFile, arch: str, layout: GGUFLayout) -> dict[str, str]:
    """HF name -> GGUF name for every tensor; unknown tensors are a WeightMappingError."""
    mapping = {}
    for gguf_name in gguf_file.tensors:
        hf_name = layout.hf_name(gguf_name)
        if hf_name is None:
            raise WeightMappingError(
                f"tensor {gguf_name!r} has no Hugging Face {arch} counterpart",
                where=str(gguf_file.path),
                fix="this GGUF needs features webbuild does not map (e.g. rope_freqs); "
                    "build from the HF folder instead")
        mapping[hf_name] = gguf_name
    return mapping


def _make_reader(gguf_file: GGUFFile, config: dict, mapping: dict[str, str], layout: GGUFLayout):
    heads = {stem: count for stem, count in (("attn_q", config["num_attention_heads"]),
                                             ("attn_k", config["num_key_value_heads"])) if stem in layout.permuted}
    reorders = {stem: make(config) for stem, make in layout.row_order.items()}

    def gguf_name_of(hf_name: str) -> str:
        if hf_name not in mapping:
            raise WeightMappingError(f"no tensor named {hf_name!r}", where=str(gguf_file.path),
                                     fix="ask for one of Checkpoint.tensor_names")
        return mapping[hf_name]

    def unpermute(gguf_name: str, rows: np.ndarray) -> np.ndarray:
        """llama.cpp stores the layout's permuted projections (llama: attn_q, attn_k) with each head's
        rows interleaved, and the layout's `row_order` tensors (GPT-NeoX: attn_qkv) in its own row
        order; rows convert independently, so the same row order fixes the float tensor (weight or
        bias) and each (rows, ...) array of its exact container."""
        kind = gguf_name.split(".")[-2]
        try:
            if kind in heads:
                return np.ascontiguousarray(unpermute_rows(rows, heads[kind]))
            if kind in reorders and gguf_name.startswith("blk."):
                return np.ascontiguousarray(reorders[kind](rows))
        except ValueError as exc:  # a row count the heads do not divide
            raise WeightMappingError(
                f"tensor {gguf_name!r} has {rows.shape[0]} rows, which do not split into the "
                f"{config['num_attention_heads']} attention heads the metadata gives",
                where=str(gguf_file.path), fix=RECONVERT_FIX) from exc
        return rows

    def read_tensor(hf_name: str) -> np.ndarray:
        gguf_name = gguf_name_of(hf_name)
        value = unpermute(gguf_name, gguf_file.dequantize(gguf_name))  # (out, in) or (n,)
        if layout.norm_offset and gguf_name.endswith("norm.weight"):
            value = value + np.float32(layout.norm_offset)
        return value

    def source_format(hf_name: str):
        info = gguf_file.tensors[gguf_name_of(hf_name)]
        return exact_format(info.type_id) if len(info.shape) == 2 else None

    def source_shape(hf_name: str) -> tuple[int, ...]:
        return gguf_file.tensors[gguf_name_of(hf_name)].shape

    def read_exact(hf_name: str) -> ExactWeight:
        gguf_name = gguf_name_of(hf_name)
        info = gguf_file.tensors[gguf_name]
        w = convert_exact(gguf_file.raw_bytes(gguf_name), info.type_id, info.shape,
                          where=f"{gguf_file.path}: {gguf_name}")
        q_min = None if w.q_min is None else unpermute(gguf_name, w.q_min)
        return ExactWeight(w.fmt, unpermute(gguf_name, w.q_weight), unpermute(gguf_name, w.q_scale), q_min)

    return read_tensor, source_format, source_shape, read_exact


def load_gguf(path: str | Path) -> Checkpoint:
    """Load a GGUF of a registered architecture: HF config and names, lazy float32 tensors, rebuilt
    tokenizer."""
    gguf_file = read_gguf(path)
    config = gguf_config(gguf_file)
    arch, layout = gguf_layout(gguf_file.metadata, gguf_file.path)
    mapping = _name_map(gguf_file, arch, layout)
    read_tensor, source_format, source_shape, read_exact = _make_reader(gguf_file, config, mapping, layout)
    tokenizer_files = tokenizer_files_from_gguf(
        gguf_file.metadata, where=str(gguf_file.path),
        model_max_length=config["max_position_embeddings"])
    return Checkpoint(
        source=gguf_file.path,
        config=config,
        tensor_names=list(mapping),
        read_tensor=read_tensor,
        exact=ExactSource(source_format, source_shape, read_exact),
        tokenizer_files=tokenizer_files,
        chat_template=gguf_file.metadata.get("tokenizer.chat_template"),
        generation_config=_special_ids(gguf_file.metadata),
        shape_of=source_shape,
    )
