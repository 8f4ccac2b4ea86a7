"""Whether cuDNN's per-shape set-up pays on the calling thread (`steady_shapes`).

cuDNN builds an execution plan the first time a thread meets a convolution of a new
shape. For most convolutions that takes a few milliseconds; for the depthwise blur of
every upsampling layer it took 0.2-0.25 s per layer on an H200 (its kernel is compiled at
run time). Every new window shape (a view at a new offset or zoom, a new batch, a new
scheduler thread: the plans are kept per thread) stalled the canvas by about a second.

Interactive renders therefore fold the blur into the weights of the transposed
convolution before it (`avoid_setup`; engine.model.layers.blurred_upsampling_weight: one
5 x 5 transposed convolution, the same numbers up to rounding), which needs no such
set-up. Inside `steady_shapes()` (an export's render thread, the throughput benchmark:
thousands of windows of one shape) the planned depthwise blur is used: windows of 2048 x
512 `paper` pixels render at 48 MP/s with it and at 42 MP/s folded. The two ways round
differently in bf16, so on a GPU an exported pixel may differ from the same pixel on the
canvas by float rounding, as between two devices (against float32, with the trained
`lite` model, both differ by about half a level on average); every export still renders
all its tiles one way, so it is reproducible bit for bit (resumed or split).
Inside `steady_shapes()` a World on a GPU also replays its one-style renders from CUDA
graphs (engine.model.graphs), with the same kernels and numbers.

(The skip RGB of every layer is upsampled by linear interpolation on a GPU in either
case: its grouped transposed convolution had the same costly set-up, and a gigapixel
export took 25 s and 1,498 MiB at its peak with interpolation against 26.7 s and 1,529 MiB
without.)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from torch import Tensor

_local = threading.local()


@contextlib.contextmanager
def steady_shapes() -> Iterator[None]:
    """Within: the calling thread renders many windows of the same few shapes."""
    before = getattr(_local, "steady", False)
    _local.steady = True
    try:
        yield
    finally:
        _local.steady = before


def shapes_are_steady() -> bool:
    """Whether the calling thread is inside `steady_shapes`."""
    return getattr(_local, "steady", False)


def inference(x: Tensor) -> bool:
    """Whether a layer about to run on `x` has no gradient to record."""
    return not (torch.is_grad_enabled() and x.requires_grad)


def gpu_inference(x: Tensor) -> bool:
    """Whether a layer about to run on `x` runs on a GPU with no gradient to record."""
    return x.device.type == "cuda" and inference(x)


def avoid_setup(x: Tensor) -> bool:
    """Whether a layer about to run on `x` should avoid cuDNN kernels with a costly
    per-shape set-up: on a GPU, for inference outside `steady_shapes`."""
    return gpu_inference(x) and not shapes_are_steady()
