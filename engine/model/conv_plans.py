"""Whether cuDNN's per-shape set-up pays on the calling thread (`steady_shapes`).

cuDNN builds an execution plan the first time a thread meets a convolution of a new
shape. For most convolutions that takes a few milliseconds; for the depthwise blur of
every upsampling layer and the grouped transposed convolution that upsamples every skip
RGB it took 0.2-0.25 s each on an H200. Every new window shape (a view at a new offset
or zoom, a new batch, a new scheduler thread: the plans are kept per thread) stalled the
canvas by about a second, and a 1920 x 1080 view took 2.2 s instead of 0.2 s.

Interactive renders therefore compute those two layers another way that needs no set-up
(`avoid_setup`): shifted adds and linear interpolation, the same numbers. Inside
`steady_shapes()` (an export's render thread, the throughput benchmark: thousands of
windows of one shape) cuDNN's kernels, several times faster once planned, are used.
The two ways round differently in bf16, so on a GPU an exported pixel may differ from the
same pixel on the canvas by float rounding, as between two devices; every export still
renders all its tiles one way, so it is reproducible bit for bit (resumed or split).
Inside `steady_shapes()` a World on a GPU also replays its one-style renders from CUDA
graphs (engine.model.graphs), with the same kernels and numbers.
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


def gpu_inference(x: Tensor) -> bool:
    """Whether a layer about to run on `x` runs on a GPU with no gradient to record."""
    return x.device.type == "cuda" and not (torch.is_grad_enabled() and x.requires_grad)


def avoid_setup(x: Tensor) -> bool:
    """Whether a layer about to run on `x` should avoid cuDNN kernels with a costly
    per-shape set-up: on a GPU, for inference outside `steady_shapes`."""
    return gpu_inference(x) and not shapes_are_steady()
