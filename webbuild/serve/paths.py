"""Request-path hygiene: split a raw URL path into safe segments and resolve them inside a served root.

The raw (still percent-encoded) path is used on purpose: aiohttp's decoded path turns `%2F` into `/`
and `%2e%2e` into `..`, which would let a request smuggle separators and parent references past a
naive check. Each segment is decoded exactly once and must then be a plain file or folder name.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

FORBIDDEN_CHARS = frozenset("/\\%\0")


class BadPath(ValueError):
    """The request path can never name a served file (parent references, separators, control characters)."""


def _is_safe_segment(segment: str) -> bool:
    if not segment or segment.startswith("."):
        return False
    if any(ch in FORBIDDEN_CHARS or ord(ch) < 32 or ord(ch) == 127 for ch in segment):
        return False
    return True


def split_path(raw_path: str) -> tuple[tuple[str, ...], bool]:
    """Decoded segments of a raw URL path and whether it ended with `/`.

    Raises BadPath for empty, hidden, `.`/`..`, double-encoded, encoded-separator or control-character
    segments (so `//etc/passwd`, `/a/%2e%2e/b`, `/a%2Fb`, `/a%252e`, `/a\\b` and `/a%00` all fail).
    """
    if not raw_path.startswith("/"):
        raise BadPath(raw_path)
    body = raw_path[1:]
    trailing = body.endswith("/")
    if trailing:
        body = body[:-1]
    if not body:
        return (), True
    try:
        segments = tuple(unquote(part, errors="strict") for part in body.split("/"))
    except UnicodeDecodeError:
        raise BadPath(raw_path) from None
    if not all(_is_safe_segment(seg) for seg in segments):
        raise BadPath(raw_path)
    return segments, trailing


def is_inside(path: Path, root: Path) -> bool:
    """True when the fully resolved `path` is `root` or lies below it (both already resolved)."""
    return path == root or root in path.parents


def resolve_file(root: Path, segments: tuple[str, ...]) -> Path | None:
    """The real path of the regular file that `segments` names under `root`, or None.

    Symlinks are followed and the result must stay inside the resolved root; folders give None.
    """
    try:
        real_root = root.resolve(strict=True)
        real = real_root.joinpath(*segments).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        return None
    if not is_inside(real, real_root):
        return None
    return real if real.is_file() else None

