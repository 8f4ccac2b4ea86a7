"""CUDA graphs for the steady renders of an export: one launch per tile instead of hundreds.

An export renders thousands of windows of one shape (engine.model.kernel_choice). In eager
mode its render thread issues every kernel of the generator from Python, a few hundred per
tile, and on a GPU those launches, not the arithmetic, can set the pace; they also need
the interpreter lock, so encoder threads slow the render down. `GraphedCalls` captures
the generator call of a shape once in a CUDA graph and replays it for every later tile:
the inputs are copied into the graph's own buffers and one launch runs all the kernels.
The numbers are those of the eager call, bit for bit (the same kernels run).

A signature is captured on its second call (the first one runs eagerly); a capture that
fails (an operation CUDA graphs cannot hold) is logged and that signature stays eager.
Graphs are shared by every thread (replays are serialised) and kept, at most
`max_graphs` of them, least recently used dropped, for as long as their owner (a World)
lives: a later export of the same tile shape replays at once, skipping cuDNN's per-thread
set-up (1.5-2 s per export on an H200). Each graph holds the GPU memory of one call's
intermediate tensors, as the caching allocator would after an eager call.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

log = logging.getLogger(__name__)

EAGER = object()  # a signature whose capture failed
MAX_SEEN = 64  # signatures remembered as called once


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: list[Tensor]  # the buffers the graph reads
    output: Tensor  # the buffer the graph writes


class GraphedCalls:
    """Runs `fn(*tensors) -> Tensor` (no side effects, no host synchronisation) through
    CUDA graphs on `device`, one per signature: `key` (what else decides the call, e.g. a
    level) with the shapes, dtypes and strides of the tensors and the autocast state."""

    def __init__(self, device: torch.device, max_graphs: int = 2) -> None:
        self.device, self.max_graphs = device, max_graphs
        self._graphs: OrderedDict[tuple, _Graph | object] = OrderedDict()
        self._seen: set[tuple] = set()  # signatures called once
        self._lock = threading.Lock()  # the graphs' buffers are shared: one call at a time
        self._stream: torch.cuda.Stream | None = None  # where captures warm up and record
        self._done: torch.cuda.Event | None = None  # the last replay's output is copied out

    def __call__(
        self, key: Hashable, fn: Callable[..., Tensor], tensors: Sequence[Tensor]
    ) -> Tensor:
        autocast = (torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda"))
        signature = (key, autocast, *((t.shape, t.dtype, t.stride()) for t in tensors))
        with self._lock:
            entry = self._graphs.get(signature)
            if entry is None and signature not in self._seen:
                if len(self._seen) >= MAX_SEEN:
                    self._seen.clear()
                self._seen.add(signature)
            elif entry is None:
                entry = self._graphs[signature] = self._capture(fn, tensors, autocast)
                while len(self._graphs) > self.max_graphs:
                    self._graphs.popitem(last=False)
            if isinstance(entry, _Graph):
                self._graphs.move_to_end(signature)
                with torch.cuda.device(self.device):  # replay() uses the current device
                    stream = torch.cuda.current_stream()
                    if self._done is not None:  # a replay from another thread's stream
                        stream.wait_event(self._done)
                    for buffer, value in zip(entry.inputs, tensors, strict=True):
                        buffer.copy_(value)
                    entry.graph.replay()
                    output = entry.output.clone()  # the buffer is rewritten by the next replay
                    self._done = stream.record_event()
                return output
        return fn(*tensors)  # first call, or a signature that stays eager

    def _capture(
        self,
        fn: Callable[..., Tensor],
        tensors: Sequence[Tensor],
        autocast: tuple[bool, torch.dtype],
    ) -> _Graph | object:
        inputs = [t.clone() for t in tensors]
        enabled, dtype = autocast
        # Casts must not be cached across the capture: the graph would read stale copies.
        cast = torch.autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=False)
        try:
            with torch.cuda.device(self.device):
                stream = self._stream = self._stream or torch.cuda.Stream(self.device)
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream), cast:
                    fn(*inputs)  # warm-up on the capture stream (libraries set up per stream)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                capture = torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local")
                with capture, cast:
                    output = fn(*inputs)
        except RuntimeError:
            log.warning(
                "cannot replay this render from a CUDA graph; it stays eager", exc_info=True
            )
            return EAGER
        log.debug("captured a CUDA graph of %s", [tuple(t.shape) for t in tensors])
        return _Graph(graph, inputs, output)
