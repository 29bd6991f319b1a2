"""A TIR schedule pass for targets without dlight: inline each `dequantize` stage into its reader.

Without it, a fused dequantize + matmul kernel allocates the whole dequantized weight inside the
kernel before multiplying. Kernels already scheduled (e.g. by webbuild.kernels.cpu_matmul) and
kernels whose output is the dequantize stage itself (embedding rows) are left alone.
"""

from __future__ import annotations

import tvm
from tvm import s_tir


@tvm.transform.module_pass(opt_level=0, name="InlineDequantize")
def inline_dequantize(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
    for gvar, func in list(mod.functions_items()):
        if not isinstance(func, tvm.tirx.PrimFunc) or (func.attrs and func.attrs.get("tirx.is_scheduled", False)):
            continue
        sch = s_tir.Schedule(func)
        try:
            sch.compute_inline(sch.get_sblock("dequantize"))
        except (s_tir.ScheduleError, ValueError):
            continue  # no dequantize stage, or it is the kernel's output (embedding rows)
        mod[gvar] = sch.mod["main"]
    return mod
