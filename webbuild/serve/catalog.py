"""The `/api/models` listing: one summary per model folder, read from its chat-config.json.

Folders without a chat-config.json are skipped; a folder whose chat-config.json cannot be read or
parsed is listed with an `error` field so one bad build never takes the whole listing down.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from .paths import BadPath, is_inside, split_path

CHAT_CONFIG = "chat-config.json"
DEFAULT_MODEL_LIB = "model.wasm"
DEFAULT_TENSOR_CACHE = "tensor-cache.json"


def _servable_name(name: str) -> bool:
    try:
        segments, _ = split_path("/" + quote(name))
    except BadPath:
        return False
    return segments == (name,)


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _missing_files(folder: Path, config: dict) -> list[str]:
    wanted = [config.get("model_lib", DEFAULT_MODEL_LIB), config.get("tensor_cache", DEFAULT_TENSOR_CACHE)]
    return [name for name in wanted
            if not isinstance(name, str) or not _servable_name(name) or not (folder / name).is_file()]


def _summary(folder: Path, config: dict) -> dict:
    memory, webgpu = _dict(config.get("memory")), _dict(config.get("webgpu"))
    entry = {
        "model_id": config.get("model_id", folder.name),
        # "chat" or "embedding" (folders built before model_kind existed are chat models)
        "model_kind": config.get("model_kind", "chat"),
        "architecture": config.get("architecture"),
        "quantization": config.get("quantization"),
        "target": config.get("target"),
        "context_window_size": config.get("context_window_size"),
        "memory_estimate_bytes": memory.get("total_bytes_estimate"),
        "required_features": webgpu.get("required_features", []),
        "required_limits": webgpu.get("required_limits", {}),
    }
    missing = _missing_files(folder, config)
    if missing:
        entry["error"] = f"missing file(s): {', '.join(map(str, missing))}; rebuild the model with `make model`"
    return entry


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return {"error": f"{CHAT_CONFIG} is unreadable ({err}); rebuild the model with `make model`"}
    if not isinstance(config, dict):
        return {"error": f"{CHAT_CONFIG} is not a JSON object; rebuild the model with `make model`"}
    return {"config": config}


def describe_folder(folder: Path, root: Path) -> dict | None:
    """The listing entry for one model folder, or None when it is not a servable model folder."""
    config_path = folder / CHAT_CONFIG
    try:
        real = config_path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not is_inside(real, root) or not real.is_file():
        return None
    entry = {"id": folder.name, "url": f"/models/{quote(folder.name)}/"}
    loaded = _read_config(real)
    if "error" in loaded:
        return {**entry, "error": loaded["error"]}
    return {**entry, **_summary(folder, loaded["config"])}


def list_models(models_dir: Path) -> list[dict]:
    """Entries for every model folder directly under `models_dir`, sorted by folder name ([] if it is missing)."""
    try:
        root = models_dir.resolve(strict=True)
        children = sorted(root.iterdir(), key=lambda p: p.name)
    except (OSError, RuntimeError):
        return []
    entries = (describe_folder(child, root) for child in children if _servable_name(child.name))
    return [entry for entry in entries if entry is not None]
