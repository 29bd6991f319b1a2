"""The compile targets webbuild offers (kept free of TVM imports so the CLI starts fast)."""

TARGETS = ("webgpu", "cpu")
