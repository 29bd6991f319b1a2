"""The build fuzz suite (tests/fuzz_build.py): 500 seeded mutations of a tiny checkpoint's files and
of the build options, each built for the CPU. Every case must end in a typed WebbuildError with a
fix and nothing left in --out, or in a sound folder (finite weights, finite logits) and nothing
else; no case may hang (per-case limit) or raise anything untyped. Runs in a subprocess whose
address space is capped, so a mutation that makes the build allocate without end fails the case
instead of the machine."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
CASES = 500
MEMORY_BYTES = 12 << 30  # address space of the fuzz process (TVM and the builds need a few GB)
SEED = int(os.environ.get("WEBBUILD_FUZZ_SEED", "0"))


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))


def test_fuzzed_builds_end_in_a_typed_error_or_a_sound_folder(tmp_path):
    summary_path = tmp_path / "fuzz.json"
    proc = subprocess.run([sys.executable, str(TESTS / "fuzz_build.py"), "--cases", str(CASES), "--seed", str(SEED),
                           "--work", str(tmp_path / "work"), "--json", str(summary_path)],
                          capture_output=True, text=True, timeout=1800, preexec_fn=_limit_memory)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    summary = json.loads(summary_path.read_text())
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}))
    assert summary["cases"] == CASES
    assert summary["typed_errors"] + summary["built"] == CASES, json.dumps(summary["failures"][:5], indent=1)
    assert summary["built"] > 0 and summary["typed_errors"] > 0  # both kinds of outcome were exercised
