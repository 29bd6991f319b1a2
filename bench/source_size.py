"""Size of a `--quantization source` build against its GGUF: per GGUF tensor type, the file's bytes and
the bytes of the exact container each tensor is kept in (webbuild/quant/gguf_exact.py), from the tensor
table alone (nothing is built or dequantized).

Usage: python bench/source_size.py [GGUF ...] [--json out/bench/source-size.json]
(default: the SmolLM2 GGUF of the catalog). Float tensors are counted as float32 (how a build keeps
them). Counted per source tensor: a build that fuses q/k/v or gate/up whose types do not join keeps
that fused weight in float32 (README: `--quantization source`), which this table does not include.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

from _common import REPO, write_result

sys.path.insert(0, str(REPO))

from webbuild.catalog import resolve_source  # noqa: E402
from webbuild.loaders.gguf_loader import read_gguf  # noqa: E402
from webbuild.quant.gguf_exact import exact_format  # noqa: E402


def container_bytes(info) -> tuple[str, int]:
    """(container name, bytes) of one tensor as a source build stores it."""
    fmt = exact_format(info.type_id) if len(info.shape) == 2 else None
    if fmt is None:
        return "float32", 4 * info.n_elements
    rows, cols = info.shape
    words = rows * cols // fmt.values_per_word
    groups = math.prod(fmt.group_shape(rows, cols))
    return fmt.name, 4 * (words + groups * (2 if fmt.has_min else 1))


def report(path: Path) -> dict:
    gguf = read_gguf(path)
    by_type: dict[str, dict] = defaultdict(lambda: {"tensors": 0, "params": 0, "gguf_bytes": 0, "container_bytes": 0,
                                                    "containers": set()})
    for info in gguf.tensors.values():
        name, size = container_bytes(info)
        row = by_type[info.type_name]
        row["tensors"] += 1
        row["params"] += info.n_elements
        row["gguf_bytes"] += info.n_bytes()
        row["container_bytes"] += size
        row["containers"].add(name)
    rows = {kind: {**row, "containers": sorted(row["containers"]),
                   "ratio": round(row["container_bytes"] / max(row["gguf_bytes"], 1), 4)}
            for kind, row in sorted(by_type.items())}
    gguf_total = sum(r["gguf_bytes"] for r in rows.values())
    ours = sum(r["container_bytes"] for r in rows.values())
    return {"file": str(path), "by_type": rows, "gguf_tensor_bytes": gguf_total, "container_bytes": ours,
            "ratio": round(ours / max(gguf_total, 1), 4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", nargs="*", help="GGUF files (default: the catalog's SmolLM2 file)")
    parser.add_argument("--json", default=str(REPO / "out" / "bench" / "source-size.json"))
    args = parser.parse_args(argv)
    files = [Path(f) for f in args.gguf] or [resolve_source("smollm2-135m-instruct")]
    results = [report(f) for f in files]
    for r in results:
        print(f"{r['file']}: {r['container_bytes'] / 1e6:.2f} MB in containers vs {r['gguf_tensor_bytes'] / 1e6:.2f} "
              f"MB of GGUF tensors ({r['ratio']:.3f}x)")
        for kind, row in r["by_type"].items():
            print(f"  {kind:6s} {row['tensors']:4d} tensors {row['params'] / 1e6:9.3f}M params "
                  f"{row['gguf_bytes'] / 1e6:9.2f} -> {row['container_bytes'] / 1e6:9.2f} MB ({row['ratio']:.3f}x) "
                  f"{', '.join(row['containers'])}")
    write_result(args.json, {"files": results}, echo=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
