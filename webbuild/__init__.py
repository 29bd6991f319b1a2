"""webbuild: compile language models for the browser (WebGPU + WebAssembly) and serve them."""

__version__ = "0.1.0"
