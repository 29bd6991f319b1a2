"""`webbuild build`: checkpoint -> compiled, quantized, sharded model folder, written atomically."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import catalog
from .arch import get_architecture
from .arch.base import BuildOptions
from .backends import backend_entry, check_target, get_backend
from .catalog import Recipe
from .chat_config import add_stop_tokens, check_tokenizer, make_chat_config, special_tokens
from .compile.relax_build import lower
from .errors import ConfigError, UnsupportedQuantizationError, WebbuildError
from .loaders import load_checkpoint, synthetic
from .model_size import check_model_size
from .progress import ProgressFn, event, silent
from .quant.convert import convert_params, float_shapes, format_summary
from .quant.exact_plan import PlannedWeight, plan_formats, read_planned
from .quant.formats import WeightFormat
from .quant.layers import float_plan
from .quant.scheme import QuantScheme, get_scheme
from .shard.writer import DEFAULT_SHARD_BYTES, write_shards
from .special_tokens import check_special_ids
from .weights import check_coverage, float_reader

DEFAULT_QUANTIZATION = "q4f32_1"
EMBEDDING_BITS = (4, 8)  # --embedding-bits: the scheme's own 4-bit container, or int8 symmetric


@dataclass
class BuildRequest:
    """Everything `webbuild build` was asked to do."""

    source: str
    quantization: str | None
    out: Path
    target: str = "webgpu"
    name: str | None = None
    context_window: int | None = None
    prefill_chunk: int = 512
    link_opt: str = "O1"
    shard_bytes: int = DEFAULT_SHARD_BYTES
    cpu_fallback: bool = True  # also build the target's fallbacks (webgpu: model-cpu.wasm, for browsers without WebGPU)
    embedding_bits: int | None = None  # 8: token embedding and output head in int8 groups of 32


@dataclass
class BuildResult:
    folder: Path
    files: dict[str, int]
    bits_per_param: float
    param_count: int
    seconds: float
    # format name -> {"params", "bits_per_param"} of what was written (`convert.format_summary`)
    weight_formats: dict[str, dict] = dataclasses.field(default_factory=dict)


def model_folder_name(model_id: str, quantization: str, target: str) -> str:
    """The folder a build writes inside --out."""
    return f"{model_id}-{quantization}{backend_entry(target).folder_suffix}"


MIN_SHARD_BYTES, MAX_SHARD_BYTES = 1 << 20, 1 << 31  # 1 MiB .. 2 GiB
MAX_TOKENS = 1 << 24  # far above any real context window; guards sizes before anything is allocated


def _whole(value: object) -> bool:
    """An int that is not a bool (the API is typed, but callers may pass anything)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: object, where: str, limit: int) -> None:
    if not _whole(value) or not 1 <= value <= limit:  # type: ignore[operator]  # _whole: an int
        raise ConfigError(f"{value!r} is not a whole number from 1 to {limit}", where=where,
                          fix=f"pass a whole number from 1 to {limit}")


def _validate(req: BuildRequest) -> None:
    """Every option checked before any work (and before anything is written)."""
    check_target(req.target)
    if req.link_opt not in ("O0", "O1", "O2", "O3", "Os", "Oz"):
        raise ConfigError(f"unknown link optimisation {req.link_opt!r}", where="--link-opt", fix="use O1 or O3")
    if not _whole(req.shard_bytes) or not MIN_SHARD_BYTES <= req.shard_bytes <= MAX_SHARD_BYTES:
        raise ConfigError(f"shard size {req.shard_bytes!r} bytes is outside 1 MiB .. 2 GiB", where="--shard-mb",
                          fix="pass a shard size from 1 to 2048 MiB (default 32)")
    if req.context_window is not None:
        _positive_int(req.context_window, "--context-window", MAX_TOKENS)
    _positive_int(req.prefill_chunk, "--prefill-chunk", MAX_TOKENS)
    if req.embedding_bits is not None and (not _whole(req.embedding_bits) or req.embedding_bits not in EMBEDDING_BITS):
        raise ConfigError(f"{req.embedding_bits!r} embedding bits is not one of {EMBEDDING_BITS}",
                          where="--embedding-bits", fix="pass 8 (int8 embedding and output head) or 4 (the default)")
    if req.name is not None and (not req.name or req.name in (".", "..") or req.name.startswith(".")
                                 or any(c in req.name for c in "/\\\0") or req.name != req.name.strip()):
        raise ConfigError(f"model name {req.name!r} is not a plain folder name", where="--name",
                          fix="use letters, digits, '-', '_' or '.', with no path separators")
    out = Path(req.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder", where="--out",
                          fix="name a folder (it is created when missing)")


def _json_text(doc: dict, file_name: str) -> str:
    """Strict JSON (no NaN / Infinity, which JSON.parse rejects): a ConfigError names the file."""
    try:
        return json.dumps(doc, indent=1, allow_nan=False)
    except ValueError as exc:
        raise ConfigError(f"{file_name} would hold a NaN or infinite number ({exc})", where=file_name,
                          fix="check the source's config.json / generation_config.json for NaN or inf values") from exc


def build(req: BuildRequest, progress: ProgressFn = silent) -> BuildResult:
    """Run a whole build; the output folder appears only when everything succeeded."""
    started = time.monotonic()
    _validate(req)
    random_weights = synthetic.is_synthetic(req.source)
    source_path: str | Path
    if random_weights:
        source_path, model_id, recipe = req.source, synthetic.model_id(req.source), None
    else:
        source_path, model_id, recipe = _resolve(req.source)
    scheme = get_scheme(_quantization(req, recipe))
    progress(event("load", str(source_path)))
    checkpoint = synthetic.load_synthetic(req.source) if random_weights else load_checkpoint(source_path)
    if recipe and recipe.chat_template:
        checkpoint.chat_template = recipe.chat_template
    arch = get_architecture(checkpoint.config.get("model_type"))
    options = BuildOptions(req.context_window or checkpoint.context_window, req.prefill_chunk)
    config = arch.parse_config(checkpoint.config, options)
    if arch.source_extras is not None:  # e.g. an encoder's sentence-transformers pooling files
        config = arch.source_extras(config, Path(source_path))
    check_special_ids(checkpoint.config, checkpoint.generation_config, config.vocab_size)
    special_tokens(checkpoint)  # tokenizer files readable before any compile (chat-config needs them)
    check_tokenizer(checkpoint)
    if recipe and recipe.stop_tokens:
        add_stop_tokens(checkpoint, recipe.stop_tokens, f"{recipe.path}: stop_tokens")
    wmap = None
    if checkpoint.param_generator is None:
        wmap = arch.weight_map(config)
        check_coverage(checkpoint, wmap)
    check_model_size(arch, config, get_backend(req.target).model_kernels(), checkpoint)
    plan = _exact_plan(scheme, checkpoint, wmap)
    if plan:
        scheme = dataclasses.replace(scheme, formats={name: planned.fmt for name, planned in plan.items()})
    scheme = _planned_scheme(req, arch, config, scheme)

    out_root = Path(req.out)
    out_root.mkdir(parents=True, exist_ok=True)
    final = out_root / model_folder_name(req.name or model_id, scheme.name, req.target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=out_root))
    try:
        libs = _write_modules(req, arch, config, scheme, tmp, progress)
        lowered = libs.pop("_lowered")
        model_lib = libs[req.target]

        names = [name for name, _, _ in lowered.params]
        shapes = float_shapes(lowered.params, scheme.formats)
        param_count = sum(math.prod(s) for s in shapes.values())

        def arrays():
            if checkpoint.param_generator is not None:  # synthetic: parameters made directly
                return ((name, checkpoint.param_generator(name, shape, dtype)) for name, shape, dtype in lowered.params)
            dtypes = {name: dtype for name, _, dtype in lowered.params}
            assert wmap is not None  # mapped above for every checkpoint without a param_generator
            return convert_params(names, float_reader(checkpoint, wmap, shapes), scheme, dtypes,
                                  read_exact=_exact_reader(checkpoint, wmap, plan, shapes))

        def tensors():
            for i, (name, array) in enumerate(arrays()):
                progress(event("weights", name, i + 1, len(names)))
                yield name, array

        metadata = {"quantization": scheme.name, "param_count": param_count,
                    "weight_formats": {name: fmt.name for name, fmt in scheme.formats.items()}}
        cache = write_shards(tmp, tensors(), metadata, req.shard_bytes, progress)
        bits = cache["total_bytes"] * 8 / max(param_count, 1)
        weight_formats = format_summary(cache["records"], scheme.formats, scheme.group_size)
        for fname, data in checkpoint.tokenizer_files.items():
            (tmp / fname).write_bytes(data)
        chat = make_chat_config(model_id=req.name or model_id, arch_name=arch.name, config=config, scheme=scheme,
                                target=req.target, checkpoint=checkpoint, cache=cache, bits_per_param=bits,
                                source=str(source_path), model_lib=model_lib, model_libs=libs,
                                weight_formats=weight_formats, model_kind=arch.model_kind)
        (tmp / "chat-config.json").write_text(_json_text(chat, "chat-config.json"))
        _replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = {p.name: p.stat().st_size for p in sorted(final.iterdir())}
    progress(event("done", str(final)))
    return BuildResult(final, files, bits, param_count, time.monotonic() - started, weight_formats)


def _planned_scheme(req: BuildRequest, arch, config, scheme: QuantScheme) -> QuantScheme:
    """A float scheme's plan (`q4f32_min`, or `--embedding-bits 8`, named `<scheme>_e8`): every
    weight the int4 layer factories would quantize gets its container in `scheme.formats`; the
    scheme unchanged otherwise."""
    eight = req.embedding_bits == 8
    if not (scheme.planned or eight):
        return scheme
    if eight and (not scheme.quantized or scheme.from_source or scheme.dtype != "float32"):
        raise UnsupportedQuantizationError(
            f"--embedding-bits 8 needs a 4-bit float32 scheme, not {scheme.name}", where="--embedding-bits",
            fix="use it with --quantization q4f32_1 or q4f32_min")
    unplanned = dataclasses.replace(scheme, planned=False, formats={})
    model = arch.build_model(config, unplanned, get_backend(req.target).model_kernels())
    body = WeightFormat(bits=4, group_size=scheme.group_size, has_min=scheme.has_min)
    head = WeightFormat(bits=8, group_size=scheme.group_size, has_min=False) if eight else body
    # an 8-bit head is its own build: its name (folder, chat-config quantization) says so
    name = f"{scheme.name}_e8" if eight else scheme.name
    return dataclasses.replace(scheme, name=name, planned=True, formats=float_plan(model, body, head))


def _exact_plan(scheme, checkpoint, wmap) -> dict[str, PlannedWeight]:
    """`--quantization source`: which weights keep their source type's exact container."""
    if not scheme.from_source:
        return {}
    if checkpoint.exact is None or wmap is None:
        raise UnsupportedQuantizationError(
            f"--quantization {scheme.name} keeps a quantized source's own weights, and "
            f"{checkpoint.source} has none", where="--quantization",
            fix="use it with a GGUF file; for float checkpoints pick q0f32, q0f16, q4f32_1 or q4f16_1")
    return plan_formats(wmap, checkpoint.exact.format_of, checkpoint.exact.shape_of)


def _exact_reader(checkpoint, wmap, plan: dict[str, PlannedWeight], shapes: dict[str, tuple[int, ...]]):
    """Model weight name -> its container arrays, read from the source (None without a plan)."""
    if not plan:
        return None

    def read(name: str) -> dict:
        return read_planned(name, plan[name], wmap.weights[name].sources, checkpoint.exact.read,
                            shapes[name], where=f"{checkpoint.source}: {wmap.weights[name].sources[0]}")

    return read


def _write_modules(req: BuildRequest, arch, config, scheme, folder: Path, progress: ProgressFn) -> dict:
    """Compile and link the target's module and its fallbacks; returns {model_libs key: file name,
    "_lowered": the target's}. Every module of a folder takes the same parameters (one set of shards)."""
    names = [req.target, *(backend_entry(req.target).fallbacks if req.cpu_fallback else ())]
    files: dict = {}
    for name in names:
        backend = get_backend(name)
        progress(event("compile", f"{arch.name} ({name})"))
        lowered = lower(arch, config, scheme, backend)
        if "_lowered" not in files:
            files["_lowered"] = lowered
        elif lowered.params != files["_lowered"].params:
            raise WebbuildError(f"the {name} module expects other parameters than the {req.target} module",
                                where="webbuild/arch", fix="this is a webbuild bug; please report it")
        progress(event("link", backend.module_file))
        files.update(backend.link(lowered.executable, folder, opt_level=req.link_opt, progress=progress))
    return files


def _resolve(source: str) -> tuple[Path, str, Recipe | None]:
    """A path as given, else a catalog name; returns (path, model id, recipe or None)."""
    path = Path(source).expanduser()
    if path.exists():
        return path, (path.stem if path.is_file() else path.resolve().name), None
    recipe = catalog.get_recipe(source) if len(path.parts) == 1 and not path.suffix else None
    return catalog.resolve_source(source), source, recipe


def _quantization(req: BuildRequest, recipe: Recipe | None) -> str:
    """--quantization, else the recipe's default, else q4f32_1; checked against the recipe's list."""
    name = req.quantization or (recipe.default_quantization if recipe else DEFAULT_QUANTIZATION)
    get_scheme(name)
    if recipe and name not in recipe.quantizations:
        raise UnsupportedQuantizationError(
            f"{name} is not offered for {recipe.name}", where=f"{recipe.path}: quantizations",
            fix=f"use one of: {', '.join(recipe.quantizations)}")
    return name


def _replace(tmp: Path, final: Path) -> None:
    """Move the finished temp folder into place, replacing an older build of the same name."""
    old = None
    if final.exists():
        if not final.is_dir():
            raise WebbuildError("output path exists and is not a folder", where=str(final),
                                fix="remove it or choose another --out")
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
    tmp.chmod(0o755)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
