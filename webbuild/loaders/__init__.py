"""Checkpoint loaders: `load_checkpoint(path)` picks the HF-folder or GGUF loader by the path."""

from __future__ import annotations

from pathlib import Path

from webbuild.errors import CorruptFileError, SourceNotFoundError
from webbuild.loaders.checkpoint import Checkpoint
from webbuild.loaders.gguf_loader import GGUF_MAGIC, load_gguf
from webbuild.loaders.hf_folder import load_hf_folder

__all__ = ["Checkpoint", "load_checkpoint", "load_gguf", "load_hf_folder"]

SOURCE_FIX = ("pass a Hugging Face model folder (with config.json), a .gguf file, "
              "or a catalog model name")


def _starts_with_gguf_magic(path: Path) -> bool:
    with path.open("rb") as stream:
        return stream.read(len(GGUF_MAGIC)) == GGUF_MAGIC


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint: a directory is a HF folder, a `.gguf` file (or GGUF bytes) is GGUF."""
    path = Path(path)
    if not path.exists():
        raise SourceNotFoundError("no such file or folder", where=str(path), fix=SOURCE_FIX)
    if path.is_dir():
        return load_hf_folder(path)
    if path.suffix.lower() == ".gguf" or _starts_with_gguf_magic(path):
        return load_gguf(path)
    fix = SOURCE_FIX
    if path.suffix in (".json", ".safetensors"):
        fix = f"pass the folder that holds it ({path.parent}) instead of the file"
    raise CorruptFileError("not a checkpoint webbuild can read", where=str(path), fix=fix)
