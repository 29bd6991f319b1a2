"""The typed error hierarchy: every user-facing failure is a WebbuildError naming what and how to fix."""

from __future__ import annotations


class WebbuildError(Exception):
    """Base class of every error webbuild reports to a user.

    `where` names the file or field at fault; `fix` says what the user should do.
    """

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None):
        self.message = message
        self.where = where
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class SourceNotFoundError(WebbuildError):
    """The checkpoint path, catalog name or a required file in it does not exist."""


class CorruptFileError(WebbuildError):
    """A file exists but cannot be parsed (bad JSON, truncated safetensors/GGUF, ...)."""


class ConfigError(WebbuildError):
    """A model config field is missing or has a value webbuild cannot use."""


class UnknownArchitectureError(WebbuildError):
    """The checkpoint's architecture is not in the registry."""


class UnsupportedQuantizationError(WebbuildError):
    """The requested --quantization is not one webbuild knows."""


class UnsupportedTensorTypeError(WebbuildError):
    """A GGUF tensor is stored in a type webbuild cannot dequantize."""


class WeightMappingError(WebbuildError):
    """Source tensors are missing, unexpected or of the wrong shape for the architecture."""


class ShardError(WebbuildError):
    """Writing parameter shards failed (e.g. a shard name collision)."""


class OutputExistsError(WebbuildError):
    """The output folder exists and --force was not given."""


class ToolchainError(WebbuildError):
    """A build tool (emscripten, TVM) is missing or failed."""


class CompileError(ToolchainError):
    """TVM failed to export or compile the model: its message, without TVM's backtrace."""


class ServerStartError(WebbuildError):
    """The server could not start: it cannot listen on the requested host and port, or a
    WEBBUILD_SERVE_* setting (timeouts, log level) is invalid."""
