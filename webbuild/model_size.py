"""Model sizes checked before compiling: what config.json describes must fit the kernels and the
checkpoint it comes with.

A config whose dimensions are each plausible can still describe weights of 2^60 values
(hidden_size and intermediate_size of 2^30): TVM then dies of std::bad_alloc deep in the compile.
The float model is built symbolically here (nn.Parameters only record shapes, nothing is allocated)
and every weight must hold at most 2^31 - 1 values (the kernels index with int32), and the whole
model at most twice the values of the checkpoint's tensors (read from the file headers).
"""

from __future__ import annotations

import math

from .errors import ConfigError
from .loaders.checkpoint import Checkpoint
from .quant.scheme import get_scheme

MAX_WEIGHT_VALUES = (1 << 31) - 1
SOURCE_SLACK = 2  # a model may hold at most this many times the checkpoint's values (fused copies, heads)


def check_model_size(arch, config, kernels, checkpoint: Checkpoint) -> None:
    """ConfigError naming config.json when a weight or the whole model is too large."""
    model = arch.build_model(config, get_scheme("q0f32"), kernels)
    total = 0
    for name, param in model.named_parameters():
        values = math.prod(int(d) for d in param.shape)
        if values > MAX_WEIGHT_VALUES:
            raise ConfigError(f"weight {name} would have shape {tuple(int(d) for d in param.shape)} ({values} values); "
                              f"webbuild's kernels index at most {MAX_WEIGHT_VALUES}", where="config.json",
                              fix="check hidden_size, intermediate_size, vocab_size and the head counts against "
                                  "the original checkpoint")
        total += values
    if checkpoint.shape_of is None or checkpoint.param_generator is not None:
        return
    source = sum(math.prod(checkpoint.shape_of(name)) for name in checkpoint.tensor_names)
    if total > SOURCE_SLACK * source:
        raise ConfigError(f"config.json describes a model of {total} parameters, but the checkpoint's tensors hold "
                          f"{source} values", where="config.json",
                          fix="check the sizes in config.json (hidden_size, intermediate_size, num_hidden_layers, "
                              "vocab_size) against the original checkpoint")
