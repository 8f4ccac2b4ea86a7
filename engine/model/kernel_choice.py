"""Which kernels the layers choose, from the tensor they run on and the calling thread.

- Training (a gradient to record): the plain layers; on a GPU the blur runs as shifted adds
  (cuDNN's depthwise backward pass is slow: training ran 3.6x faster on an H100 without it).
- Eager inference on a GPU: each upsampling layer folds its blur into the weights of its
  transposed convolution (`folds_blur`; engine.model.layers.blurred_upsampling_weight):
  one 5 x 5 transposed convolution instead of a 3 x 3 one and a blur, the same numbers up
  to rounding. cuDNN's depthwise blur compiles its kernel at run time: 0.2-0.25 s per
  layer each time a thread meets a new window shape, and the compiled kernels held memory
  for as long as the process lived. With it a `paper` gigapixel export on an H200 took
  24.7 s and peaked at 1,630-1,637 MiB (two processes); folded, 26.3 s and 1,477 MiB.
  Views and exports render the same way, so an exported pixel equals the canvas's.
- Compiled (while torch.compile traces, or within `compiled_kernels` where a compiled
  render's operations are counted eagerly): the 3 x 3 transposed convolution and the blur
  as shifted adds, which inductor fuses with the bias, noise and activation around them.
- Inference on a GPU, eager or compiled: the skip RGB of every layer is upsampled by linear
  interpolation. cuDNN's grouped transposed convolution for it compiled at run time too; a
  gigapixel export took 25 s and 1,498 MiB at its peak with interpolation, against 26.7 s
  and 1,529 MiB without.
- `steady_shapes()`: the calling thread renders many windows of a few shapes (an export's
  render thread, the throughput benchmark), so a World on a GPU replays its one-style
  renders from CUDA graphs (engine.model.graphs), with the same kernels and numbers.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from torch import Tensor

_local = threading.local()


@contextlib.contextmanager
def _thread_flag(name: str) -> Iterator[None]:
    before = getattr(_local, name, False)
    setattr(_local, name, True)
    try:
        yield
    finally:
        setattr(_local, name, before)


def steady_shapes() -> contextlib.AbstractContextManager[None]:
    """Within: the calling thread renders many windows of the same few shapes."""
    return _thread_flag("steady")


def shapes_are_steady() -> bool:
    """Whether the calling thread is inside `steady_shapes`."""
    return getattr(_local, "steady", False)


def compiled_kernels() -> contextlib.AbstractContextManager[None]:
    """Within: the calling thread's layers choose what they choose while torch.compile
    traces them (engine.bench counts a compiled render's FLOPs this way)."""
    return _thread_flag("compiled")


def compiling() -> bool:
    """Whether the layers choose for compiled code: torch.compile traces them, or the thread
    is inside `compiled_kernels`."""
    return torch.compiler.is_compiling() or getattr(_local, "compiled", False)


def inference(x: Tensor) -> bool:
    """Whether a layer about to run on `x` has no gradient to record."""
    return not (torch.is_grad_enabled() and x.requires_grad)


def gpu_inference(x: Tensor) -> bool:
    """Whether a layer about to run on `x` runs on a GPU with no gradient to record."""
    return x.device.type == "cuda" and inference(x)


def folds_blur(x: Tensor) -> bool:
    """Whether an upsampling layer about to run on `x` folds its blur into its weights:
    eager inference on a GPU."""
    return gpu_inference(x) and not compiling()
