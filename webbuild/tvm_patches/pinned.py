"""The TVM release webbuild's patches were written against, and the check that it is installed.

TVM-free on purpose: the CLI and the wasm runtime cache key read it without importing TVM.
"""

from __future__ import annotations

import importlib.metadata

from ..errors import ToolchainError

TVM_DISTRIBUTION = "apache-tvm"
PINNED_TVM = "0.27.0.post1"
UPGRADE_FIX = (f"use {TVM_DISTRIBUTION}=={PINNED_TVM}; after a TVM upgrade re-check every entry of "
               "webbuild.tvm_patches.PATCHES")


def installed_tvm() -> str | None:
    """The installed apache-tvm version, or None when it is not installed as a distribution."""
    try:
        return importlib.metadata.version(TVM_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_pinned_tvm() -> None:
    """Raise ToolchainError unless the pinned TVM release is the one installed."""
    version = installed_tvm()
    if version != PINNED_TVM:
        raise ToolchainError(f"webbuild's TVM patches are for {TVM_DISTRIBUTION} {PINNED_TVM}, "
                             f"found {version or 'none'}", fix=f"pip install {TVM_DISTRIBUTION}=={PINNED_TVM}")
