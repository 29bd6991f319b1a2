"""Build benchmark: wall time and peak RSS of a cold (empty runtime cache) and a warm SmolLM2 build.

Usage: python bench/build_bench.py [--model NAME] [--quantization Q] [--json out/bench/build.json]
Each build runs in its own child process; peak RSS is the largest of that process tree's members
(the Python build and the emscripten compilers it starts), sampled every 50 ms.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from _common import REPO, write_result

GOALS = {"warm_seconds": 60, "warm_peak_rss_gb": 4.0}


def measure(cmd: list[str], env: dict) -> dict:
    """Run cmd; return wall seconds, peak RSS of the process tree (GB) and the exit code."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            members = [root] + root.children(recursive=True)
            peak = max(peak, sum(m.memory_info().rss for m in members if m.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    output = proc.stdout.read()
    if proc.returncode:
        sys.stderr.write(output)
        raise SystemExit(f"build failed with exit code {proc.returncode}")
    return {"seconds": round(time.monotonic() - start, 2), "peak_rss_gb": round(peak / 1e9, 3),
            "summary": [line for line in output.splitlines() if "bits per parameter" in line]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--quantization", default="q4f32_1")
    parser.add_argument("--link-opt", default="O1")
    parser.add_argument("--json", default=str(REPO / "out" / "bench" / "build.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(REPO), "WEBBUILD_CACHE_DIR": str(Path(tmp) / "cache")}
        cmd = [sys.executable, "-m", "webbuild", "build", args.model, "-q", args.quantization,
               "--link-opt", args.link_opt, "--out", str(Path(tmp) / "models")]
        cold = measure(cmd, env)
        warm = measure(cmd, env)
    result = {
        "benchmark": "build", "model": args.model, "quantization": args.quantization, "link_opt": args.link_opt,
        "machine": {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 1e9, 1)},
        "cold": cold, "warm": warm, "goals": GOALS,
        "meets_goals": warm["seconds"] <= GOALS["warm_seconds"] and warm["peak_rss_gb"] <= GOALS["warm_peak_rss_gb"],
    }
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
