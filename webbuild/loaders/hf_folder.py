"""Load a Hugging Face model folder (config.json, safetensors, tokenizer files) as a `Checkpoint`.

Weights come from one `*.safetensors` file or from the shards a `model.safetensors.index.json`
names. Every file is validated up front (header, offsets, full coverage) and then read lazily:
float32/float16 tensors through `safetensors.safe_open(framework="numpy")`, bfloat16 tensors
from their raw bytes (numpy has no bfloat16), widened to float32.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
from safetensors import SafetensorError, safe_open

from webbuild.errors import (
    ConfigError,
    CorruptFileError,
    SourceNotFoundError,
    UnsupportedTensorTypeError,
    WeightMappingError,
)
from webbuild.loaders.checkpoint import Checkpoint

INDEX_FILE = "model.safetensors.index.json"
MAX_HEADER_BYTES = 100 * 1024 * 1024
REDOWNLOAD_FIX = "re-download the file (e.g. huggingface-cli download <repo> --local-dir <folder>)"
ITEM_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
              "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


@dataclass(frozen=True)
class SafetensorEntry:
    """Where one tensor lives: file, dtype name, shape, absolute byte range [start, end)."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def _read_json(path: Path, required: bool, fix: str) -> Any:
    """Parsed JSON of `path`; None when optional and absent."""
    if not path.is_file():
        if required:
            raise SourceNotFoundError(f"required file {path.name} is missing", where=str(path),
                                      fix=fix)
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"not valid JSON: {exc}", where=str(path), fix=fix) from exc
    except RecursionError:
        raise CorruptFileError("JSON nested too deeply to read", where=str(path), fix=fix) from None


@overload
def _read_json_object(path: Path, required: Literal[True], fix: str) -> dict: ...


@overload
def _read_json_object(path: Path, required: bool, fix: str) -> dict | None: ...


def _read_json_object(path: Path, required: bool, fix: str) -> dict | None:
    value = _read_json(path, required, fix)
    if value is not None and not isinstance(value, dict):
        raise CorruptFileError("expected a JSON object at the top level", where=str(path), fix=fix)
    return value


def _header(path: Path) -> tuple[int, dict]:
    """(data start offset, JSON header) of a safetensors file, header length checked."""
    size = path.stat().st_size
    with path.open("rb") as stream:
        prefix = stream.read(8)
        if len(prefix) < 8:
            raise CorruptFileError("file is too short to be safetensors", where=str(path),
                                   fix=REDOWNLOAD_FIX)
        (length,) = struct.unpack("<Q", prefix)
        if length > min(size - 8, MAX_HEADER_BYTES):
            raise CorruptFileError(f"header length {length} exceeds the file size {size}",
                                   where=str(path), fix=REDOWNLOAD_FIX)
        raw = stream.read(length)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise CorruptFileError("safetensors header is not valid JSON", where=str(path),
                               fix=REDOWNLOAD_FIX) from None
    if not isinstance(header, dict):
        raise CorruptFileError("safetensors header is not a JSON object", where=str(path),
                               fix=REDOWNLOAD_FIX)
    header.pop("__metadata__", None)
    return 8 + length, header


def _entries(path: Path) -> dict[str, SafetensorEntry]:
    """Every tensor of one safetensors file, offsets checked."""
    data_start, header = _header(path)
    size = path.stat().st_size
    entries = {}
    for name, info in header.items():
        try:
            dtype, shape = info["dtype"], tuple(int(d) for d in info["shape"])
            begin, end = (data_start + int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptFileError(f"bad header entry for tensor {name!r}", where=str(path),
                                   fix=REDOWNLOAD_FIX) from exc
        _check_range(path, name, dtype, shape, (begin, end), size)
        entries[name] = SafetensorEntry(path, dtype, shape, begin, end)
    return entries


def _check_range(path: Path, name: str, dtype: str, shape: tuple[int, ...],
                 span: tuple[int, int], size: int) -> None:
    begin, end = span
    expected = int(np.prod(shape, dtype=np.int64)) * ITEM_SIZES.get(dtype, 0)
    if end > size or begin > end or (dtype in ITEM_SIZES and end - begin != expected):
        raise CorruptFileError(f"tensor {name!r} data range {begin}..{end} does not fit the "
                               f"file ({size} bytes; truncated?)", where=str(path),
                               fix=REDOWNLOAD_FIX)


def _open(path: Path):
    """A safe_open handle; also checks that the tensors cover the file exactly."""
    try:
        return safe_open(str(path), framework="numpy")
    except SafetensorError as exc:
        raise CorruptFileError(f"safetensors cannot read it: {exc}", where=str(path),
                               fix=REDOWNLOAD_FIX) from exc


def _weight_files(folder: Path) -> tuple[list[Path], dict[str, Path] | None]:
    """The safetensors files to read and, when sharded, the index's tensor -> file map."""
    index = _read_json_object(folder / INDEX_FILE, required=False, fix=REDOWNLOAD_FIX)
    if index is not None:
        return _indexed_files(folder, index)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise SourceNotFoundError(
            "no *.safetensors weights in the folder", where=str(folder),
            fix="download the safetensors weights; .bin checkpoints must be converted first "
                "(transformers: model.save_pretrained(folder, safe_serialization=True))")
    return files, None


def _indexed_files(folder: Path, index: dict) -> tuple[list[Path], dict[str, Path]]:
    index_path = folder / INDEX_FILE
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CorruptFileError("has no 'weight_map' object", where=f"{index_path}: weight_map",
                               fix=REDOWNLOAD_FIX)
    by_tensor = {name: folder / str(file) for name, file in weight_map.items()}
    files = sorted(set(by_tensor.values()))
    for file in files:
        if not file.is_file():
            raise SourceNotFoundError(f"shard named by {INDEX_FILE} is missing", where=str(file),
                                      fix=f"download every shard {INDEX_FILE} lists")
    return files, by_tensor


def _collect_entries(files: list[Path], by_tensor: dict[str, Path] | None
                     ) -> dict[str, SafetensorEntry]:
    """tensor name -> entry over all files; the index (when present) decides the names."""
    entries: dict[str, SafetensorEntry] = {}
    for file in files:
        for name, entry in _entries(file).items():
            if by_tensor is None and name in entries:
                raise CorruptFileError(f"tensor {name!r} appears in more than one file",
                                       where=str(file), fix="keep one copy of the weights")
            if by_tensor is None or by_tensor.get(name) == file:
                entries[name] = entry
    for name, file in (by_tensor or {}).items():
        if name not in entries:
            raise CorruptFileError(f"{INDEX_FILE} puts tensor {name!r} in this file, but it is "
                                   "not there", where=str(file), fix=REDOWNLOAD_FIX)
    return entries


def _bf16_to_f32(entry: SafetensorEntry) -> np.ndarray:
    count = (entry.end - entry.start) // 2
    bits = np.fromfile(entry.file, dtype="<u2", count=count, offset=entry.start)
    # bfloat16 is the top half of a float32: shift the 16 bits up and reinterpret.
    return (bits.astype(np.uint32) << 16).view(np.float32).reshape(entry.shape)


def _make_reader(folder: Path, entries: dict[str, SafetensorEntry], handles: dict[Path, Any]):
    def read_tensor(name: str) -> np.ndarray:
        if name not in entries:
            raise WeightMappingError(f"no tensor named {name!r}", where=str(folder),
                                     fix="ask for one of Checkpoint.tensor_names")
        entry = entries[name]
        if entry.dtype not in FLOAT_DTYPES:
            raise UnsupportedTensorTypeError(
                f"tensor {name!r} has dtype {entry.dtype}; webbuild reads "
                f"{', '.join(FLOAT_DTYPES)}",
                where=str(entry.file), fix="use an unquantized float checkpoint")
        if entry.dtype == "BF16":
            return _bf16_to_f32(entry)
        values = handles[entry.file].get_tensor(name)
        return values.astype(np.float32) if entry.dtype == "F64" else values

    return read_tensor


def _chat_template(folder: Path, tokenizer_config: dict | None) -> str | None:
    """`chat_template.jinja` if present, else tokenizer_config's template (str or named list)."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = (tokenizer_config or {}).get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default", next(iter(named.values()), None))
    if template is not None and not isinstance(template, str):
        raise ConfigError(f"chat_template must be a string (or a list of named templates), not {template!r:.60}",
                          where=f"{folder / 'tokenizer_config.json'}: chat_template",
                          fix="restore tokenizer_config.json from the original model, or put the template in "
                              "chat_template.jinja")
    return template


def _tokenizer_files(folder: Path) -> tuple[dict[str, bytes], dict | None]:
    _read_json_object(folder / "tokenizer.json", required=True,
                      fix="copy tokenizer.json from the model repository into the folder")
    files = {"tokenizer.json": (folder / "tokenizer.json").read_bytes()}
    config = _read_json_object(folder / "tokenizer_config.json", required=False,
                               fix=REDOWNLOAD_FIX)
    if config is not None:
        files["tokenizer_config.json"] = (folder / "tokenizer_config.json").read_bytes()
    return files, config


def load_hf_folder(folder: str | Path) -> Checkpoint:
    """Load a HF folder: config, lazily-read weights with HF names, tokenizer files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceNotFoundError("not a folder", where=str(folder),
                                  fix="pass a Hugging Face model folder containing config.json")
    config = _read_json_object(folder / "config.json", required=True,
                               fix="pass a Hugging Face model folder containing config.json")
    files, by_tensor = _weight_files(folder)
    entries = _collect_entries(files, by_tensor)
    handles = {file: _open(file) for file in files}
    tokenizer_files, tokenizer_config = _tokenizer_files(folder)
    generation = _read_json_object(folder / "generation_config.json", required=False,
                                   fix=REDOWNLOAD_FIX)
    return Checkpoint(
        source=folder,
        config=config,
        tensor_names=list(entries),
        read_tensor=_make_reader(folder, entries, handles),
        tokenizer_files=tokenizer_files,
        chat_template=_chat_template(folder, tokenizer_config),
        generation_config=generation or {},
        shape_of=lambda name: tuple(entries[name].shape),
    )
