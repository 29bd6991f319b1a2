"""Run tests/js/tvm_node.mjs (WebGPU in node through Dawn + tvmjs) from Python tests.

    run_toy(wasm, func, args)             -> outputs of one VM function call (params=FOLDER: + its weights)
    run_model(folder, tokens, decode=N)   -> prefill logits (+ greedy tokens) of a model folder

Dawn runs on SwiftShader's Vulkan (no shader-f16) unless `vulkan_icd` names another driver:
LAVAPIPE_ICD (Mesa's lavapipe, from bookworm-backports: see the Makefile) has shader-f16.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HARNESS = REPO / "tests" / "js" / "tvm_node.mjs"
#: Mesa's lavapipe (Vulkan on llvmpipe): Dawn offers it with shader-f16 (Mesa >= 23; 22.3 lacks the
#: shader*ArrayDynamicIndexing features Dawn requires).
LAVAPIPE_ICD = Path("/usr/share/vulkan/icd.d/lvp_icd.json")


class HarnessError(RuntimeError):
    pass


def node_available() -> bool:
    return shutil.which("node") is not None and (REPO / "node_modules" / "@mlc-ai" / "web-runtime").is_dir()


def run_harness(mode: str, *cli: str, timeout: float = 600, vulkan_icd: Path | None = None) -> dict[str, Any]:
    """Run the harness; return its JSON result or raise HarnessError with its stderr tail.
    `vulkan_icd`: the Vulkan driver's ICD file (default: SwiftShader's)."""
    env = dict(os.environ)
    if vulkan_icd is not None:
        # the Vulkan loader wants a runtime directory for its lock files
        env.update(VK_ICD_FILENAMES=str(vulkan_icd), XDG_RUNTIME_DIR=env.get("XDG_RUNTIME_DIR", tempfile.gettempdir()))
    with tempfile.TemporaryDirectory(prefix="tvm-node-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = ["node", str(HARNESS), mode, *cli, "--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
        result = json.loads(out.read_text()) if out.exists() else None
    if proc.returncode != 0 or result is None or "error" in result:
        err = result.get("error") if isinstance(result, dict) else None
        tail = "\n".join(proc.stderr.strip().splitlines()[-30:])
        raise HarnessError(f"tvm_node.mjs {mode} failed (exit {proc.returncode}): {err}\n{tail}")
    return result


def tensor_arg(a: np.ndarray, device: str = "gpu") -> dict[str, Any]:
    a = np.ascontiguousarray(a)
    return {"shape": list(a.shape), "dtype": str(a.dtype), "device": device,
            "b64": base64.b64encode(a.tobytes()).decode()}


def output_array(o: dict[str, Any]) -> np.ndarray:
    if "data" in o:
        return np.array(o["data"], dtype=np.float64 if o["dtype"] == "float16" else o["dtype"]).reshape(o["shape"])
    return np.frombuffer(base64.b64decode(o["b64"]), dtype=o["dtype"]).reshape(o["shape"])


def run_toy(wasm: str | os.PathLike, func: str, args: Sequence[np.ndarray | dict], repeat: int = 0,
            timings: dict | None = None, device: str = "gpu",
            params: str | os.PathLike | None = None) -> list[np.ndarray]:
    """Outputs of one call; with repeat=N also time N more calls (seconds per call in timings);
    device "cpu" runs a module built for the wasm32 CPU target (give its args device "cpu" too);
    params: a model folder whose weights go last, packed (functions exported with packed params)."""
    specs = [a if isinstance(a, dict) else tensor_arg(a) for a in args]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"args": specs}, f)
        inputs = f.name
    try:
        result = run_harness("toy", "--wasm", str(wasm), "--func", func, "--inputs", inputs,
                             *(["--repeat", str(repeat)] if repeat else []),
                             *(["--device", device] if device != "gpu" else []),
                             *(["--params", str(params)] if params is not None else []))
    finally:
        os.unlink(inputs)
    if timings is not None:
        timings.update(result["timings"])
    return [output_array(o) for o in result["outputs"]]


def run_model(folder: str | os.PathLike, tokens: Iterable[int], decode: int = 0, timeout: float = 600,
              vulkan_icd: Path | None = None, **options: Any) -> dict[str, Any]:
    """options: page_size, prefill_chunk, max_seq_len, packed_params=True, all_logits=True."""
    cli = ["--dir", str(folder), "--tokens", ",".join(str(int(t)) for t in tokens), "--decode", str(decode)]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            cli.append(flag)
        elif value not in (None, False):
            cli += [flag, str(value)]
    return run_harness("model", *cli, timeout=timeout, vulkan_icd=vulkan_icd)
