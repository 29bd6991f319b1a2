"""The Backend interface: what a target decides for a build, with TVM's generic pipeline shared.

A subclass sets its name and TVM target and overrides only what differs: the kernels it hands
to models, the passes it adds around TVM's generic Relax pipeline, the rewrites it applies to the
exported module, how it links the executable into files, and the runtime values it writes into
`_metadata`. webbuild.compile.relax_build drives it; nothing outside this package reads the
current TVM target.
"""

from __future__ import annotations

from pathlib import Path

import tvm
from tvm import relax as rx
from tvm.relax.frontend import nn
from tvm.target import Target

from ..kernels.argmax import argmax_func
from ..kernels.kv_page import KV_PAGE_SIZE
from ..kernels.model_kernels import ModelKernels
from ..kernels.token_bitmask import token_bitmask_func
from ..kernels.wkv import wkv_func
from ..progress import ProgressFn, silent
from ..quant.exact_plan import apply_formats
from ..tvm_patches.llama3_rope import install_let_free_llama3_rope


class Backend:
    """One target. Subclasses set `name` and implement `target()` and `link()`."""

    name: str = ""
    module_file: str = ""  # the main file `link` writes

    def target(self) -> Target:
        raise NotImplementedError

    # ------------------------------------------------------------------ the model

    def model_kernels(self) -> ModelKernels:
        """The kernels models get: serial CPU kernels and TVM's unfused decode by default."""
        return ModelKernels(self.target(), lambda vocab: argmax_func(vocab, gpu=False), wkv_func,
                            lambda vocab: token_bitmask_func(vocab, gpu=False), fused_decode=False)

    def export(self, arch, config, scheme) -> tuple[tvm.IRModule, list[tuple[str, nn.Parameter]]]:
        """The architecture's nn.Module for this target, exported to Relax: (module, named params)."""
        install_let_free_llama3_rope()  # before export: the KV-cache kernels are made there
        model = arch.build_model(config, scheme, self.model_kernels())
        if scheme.formats:  # --quantization source: planned layers take their exact containers
            apply_formats(model, dict(scheme.formats), scheme.dtype)
        return model.export_tvm(spec=model.get_default_spec())

    def runtime_metadata(self) -> dict:
        """What a runtime must know about this target's modules (written into `_metadata`)."""
        return {"kv_page_size": KV_PAGE_SIZE, "single_token_past_window": False}

    # ------------------------------------------------------------------ compiling

    def prepare(self, mod: tvm.IRModule) -> tvm.IRModule:
        """Rewrites of the exported module (and TVM patches to install) before tvm.compile."""
        return mod

    def generic_pipeline(self):
        """TVM's generic backend module (library dispatch, lowering, finalizing passes)."""
        from tvm.relax.backend.cpu_generic import pipeline

        return pipeline

    def before_legalize(self) -> list:
        """Passes before transposes are folded and ops legalized (e.g. swapping in kernels)."""
        return []

    def after_fusion(self) -> list:
        """TIR passes after FuseTIR (e.g. schedules)."""
        return []

    def schedule_rules(self) -> list:
        """dlight rules applied last (none: dlight's CPU rules made decode slower, compiles 5x longer)."""
        return []

    def relax_pipeline(self):
        """TVM's generic pipeline for the target with this backend's passes in their places, and
        transposes folded into matmuls (no transposed weight copies at run time)."""
        from tvm import s_tir

        target, generic = self.target(), self.generic_pipeline()
        rules = self.schedule_rules()
        legalize = [rx.transform.LegalizeOps(), rx.transform.AnnotateTIROpPattern(), rx.transform.FoldConstant(),
                    rx.transform.FuseOps(), rx.transform.FuseTIR(), *self.after_fusion()]
        if rules:
            legalize.append(s_tir.dlight.ApplyDefaultSchedule(*rules))
        before = self.before_legalize()

        @tvm.transform.module_pass(opt_level=0)
        def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
            with target:
                passes = (generic.library_dispatch_passes(target) + before + [rx.transform.FuseTransposeMatmul()]
                          + legalize + generic.dataflow_lower_passes(target) + generic.finalize_passes(target))
                return tvm.transform.Sequential(passes)(mod)

        return _pipeline

    def compile(self, mod: tvm.IRModule):
        """The Relax VM executable."""
        return tvm.compile(self.prepare(mod), target=self.target(), relax_pipeline=self.relax_pipeline())

    # ------------------------------------------------------------------ linking

    def link(self, executable, folder: Path, *, opt_level: str, progress: ProgressFn = silent) -> dict[str, str]:
        """Write the executable into `folder`; returns {model_libs key: file name}."""
        raise NotImplementedError

