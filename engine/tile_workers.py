"""Tile jobs spread over several devices, results handed back in order.

    workers = TileWorkers(world, resolve_devices("cuda:0,cuda:1"))   # or "all", "cpu,cpu"
    for pixels in workers.render_in_order(rects, lod, edits):        # uint8 [h, w, 3] each
        ...
    workers.close()

A render tile is a pure function of (weights, seed, edits, position, lod) (DESIGN.md §2),
so tile jobs are independent: any worker may render any of them, and the merged result
equals a single-device render on devices of the same kind and precision, byte for byte.

One worker thread per device entry, each with its own World replica (`World.replica`: a
copy of the weights on that device, the same seed, base style and precision); the first
entry on the world's own device uses the world itself. On CUDA each worker renders on its
own stream. Several CPU entries (`cpu,cpu`) share the cores: each CPU worker runs with the
caller's number of torch threads, because torch's CPU kernels split their work (and so
round) by thread count; `threads_per_cpu_worker` gives each fewer threads, which may pay
on a many-core CPU but can change a few pixels by one level from a one-device render.

Ordering and memory: workers take jobs in order, and at most `in_flight` jobs (default two
per worker) are taken beyond the oldest one not yet handed back, so memory stays bounded
whatever the number of tiles. An error in any worker stops the others and is raised by
the iterator; closing the iterator early (or `should_stop`) lets the workers finish the
tile each is rendering and joins them.

`TileRenderer` is what an export (engine.export) renders its tiles with; `SingleDevice`
is the one-device loop (on a GPU, one tile ahead), and engine.ray_tiles renders on a Ray
cluster.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

import numpy as np
import torch

from engine.edits import Edit
from engine.model.kernel_choice import steady_shapes
from engine.tiles import Rect
from engine.world import World, quantised, to_uint8

log = logging.getLogger(__name__)

QUEUED_AHEAD = 1  # tiles SingleDevice queues on a GPU beyond the one it hands back

__all__ = ["SingleDevice", "TileRenderer", "TileWorkers", "render_tile", "replicas", "on_device"]


class TileRenderer(Protocol):
    """Renders independent tile jobs and yields their pixels in job order."""

    @property
    def label(self) -> str:
        """Where tiles render, for logs and progress lines (e.g. "2 devices: cuda:0, cuda:1")."""
        ...

    def render_in_order(
        self,
        rects: Sequence[Rect],
        lod: int,
        edits: tuple[Edit, ...],
        should_stop: Callable[[], bool] = ...,
    ) -> Iterator[np.ndarray]:
        """uint8 [h, w, 3] of each rect (lod pixels) with `edits`, in the order of `rects`."""
        ...

    def close(self) -> None:
        """Release what the renderer holds (idempotent)."""
        ...


def _never() -> bool:
    return False


def render_tile(world: World, rect: Rect, lod: int, edits: tuple[Edit, ...]) -> np.ndarray:
    """One render tile as uint8 [h, w, 3]; RuntimeError if the world returns another shape.
    An export renders many tiles of one shape: `steady_shapes` replays them from CUDA graphs."""
    with steady_shapes():
        pixels = to_uint8(world.render_lod_float([rect], lod, edits))[0]  # [h, w, 3]
    return _checked(pixels, rect)


def _checked(pixels: np.ndarray, rect: Rect) -> np.ndarray:
    if pixels.shape != (rect.h, rect.w, 3):
        raise RuntimeError(f"render of {rect} returned {pixels.shape}")
    return pixels


class _QueuedTile:
    """A render tile whose GPU work is queued but perhaps not done: its uint8 pixels are
    copied into pinned host memory when the GPU gets there, and `pixels` waits for that."""

    def __init__(self, world: World, rect: Rect, lod: int, edits: tuple[Edit, ...]) -> None:
        self.rect = rect
        with steady_shapes():
            rgb = world.render_lod_float([rect], lod, edits)  # [1, 3, h, w] on the GPU
        on_gpu = quantised(rgb)[0]  # uint8 [h, w, 3]
        self._host = torch.empty(on_gpu.shape, dtype=torch.uint8, pin_memory=True)
        self._host.copy_(on_gpu, non_blocking=True)
        self._copied = torch.cuda.Event()
        self._copied.record(torch.cuda.current_stream(on_gpu.device))

    def pixels(self) -> np.ndarray:
        """uint8 [h, w, 3], in memory of its own (the pinned buffer goes back to torch)."""
        self._copied.synchronize()
        return _checked(self._host.numpy().copy(), self.rect)


def replicas(world: World, devices: Sequence[torch.device | str]) -> list[World]:
    """One World per device entry: `world` itself for the first entry on its own device,
    `world.replica(device)` (a copy of the weights) for every other one."""
    if not devices:
        raise ValueError("at least one device is needed")
    worlds: list[World] = []
    used_own = False
    for device in map(torch.device, devices):
        if not used_own and _same_device(device, world.device):
            worlds.append(world)
            used_own = True
        else:
            log.info("copying the model to %s", device)
            worlds.append(world.replica(device))
    return worlds


@contextlib.contextmanager
def on_device(world: World) -> Iterator[None]:
    """Run the body as a render worker of `world`'s device: on CUDA, with that device
    current and on a stream of this worker's own (so workers on one GPU overlap)."""
    if world.device.type != "cuda":
        yield
        return
    torch.cuda.set_device(world.device)
    with torch.cuda.stream(torch.cuda.Stream(world.device)):
        yield


class SingleDevice:
    """The world's own device, one tile after the other on the calling thread.

    On CUDA the next tile is queued before a tile is handed back (QUEUED_AHEAD): the GPU
    renders it while the caller crops, encodes or hands on the last one, and the host
    prepares its inputs while the GPU still works. Steady 2048 x 512 `paper` windows on an
    H200: 44 -> 48 MP/s eager, 54 -> 61 MP/s compiled, the same bytes."""

    def __init__(self, world: World) -> None:
        self.world = world

    @property
    def label(self) -> str:
        return str(self.world.device)

    def render_in_order(
        self,
        rects: Iterable[Rect],
        lod: int,
        edits: tuple[Edit, ...],
        should_stop: Callable[[], bool] = _never,
    ) -> Iterator[np.ndarray]:
        if self.world.device.type != "cuda":
            for rect in rects:
                if should_stop():
                    return
                yield render_tile(self.world, rect, lod, edits)
            return
        queued: deque[_QueuedTile] = deque()
        for rect in rects:
            if should_stop():
                return
            queued.append(_QueuedTile(self.world, rect, lod, edits))
            if len(queued) > QUEUED_AHEAD:
                yield queued.popleft().pixels()
        while queued and not should_stop():
            yield queued.popleft().pixels()

    def close(self) -> None:
        pass


class TileWorkers:
    """One worker thread and World replica per device entry (see the module docstring).

    `devices`: one worker per entry, on `replicas(world, devices)`; or `worlds`: replicas
    already made (e.g. a GUI session's), one worker each. `in_flight`: jobs taken beyond
    the oldest undelivered one (default 2 per worker).
    `threads_per_cpu_worker`: torch threads of each CPU worker (default: the caller's, so
    that tiles are identical to the caller's renders; see the module docstring).
    """

    def __init__(
        self,
        world: World,
        devices: Sequence[torch.device | str] | None = None,
        *,
        worlds: Sequence[World] | None = None,
        in_flight: int | None = None,
        threads_per_cpu_worker: int | None = None,
    ) -> None:
        if (devices is None) == (worlds is None):
            raise ValueError("give TileWorkers either devices or worlds")
        self.world = world
        self.replicas = replicas(world, devices) if worlds is None else list(worlds)
        if not self.replicas:
            raise ValueError("TileWorkers needs at least one world")
        self.devices = [w.device for w in self.replicas]
        self.in_flight = in_flight or 2 * len(self.devices)
        if self.in_flight < 1:
            raise ValueError("in_flight must be at least 1")
        if threads_per_cpu_worker is not None and threads_per_cpu_worker < 1:
            raise ValueError("threads_per_cpu_worker must be at least 1")
        self._cpu_threads = threads_per_cpu_worker

    @property
    def label(self) -> str:
        names = ", ".join(str(d) for d in self.devices)
        return f"{len(self.devices)} devices: {names}" if len(self.devices) > 1 else names

    def render_in_order(
        self,
        rects: Sequence[Rect],
        lod: int,
        edits: tuple[Edit, ...],
        should_stop: Callable[[], bool] = _never,
    ) -> Iterator[np.ndarray]:
        run = _Run(list(rects), lod, edits, self.in_flight)
        caller_threads = torch.get_num_threads()
        threads = [
            threading.Thread(
                target=run.work,
                args=(replica, self._cpu_threads or caller_threads),
                name=f"tile-worker-{i}-{replica.device}",
            )
            for i, replica in enumerate(self.replicas)
        ]
        for thread in threads:
            thread.start()
        try:
            for index in range(len(run.rects)):
                pixels = run.take(index, should_stop)
                if pixels is None:
                    return
                yield pixels
        finally:
            run.stop()
            for thread in threads:
                thread.join()
            torch.set_num_threads(caller_threads)

    def close(self) -> None:
        self.replicas = [self.world]


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


class _Run:
    """The shared state of one `render_in_order`: the next job to take, finished tiles
    waiting to be handed back, the first error. Guarded by one condition variable."""

    def __init__(
        self, rects: list[Rect], lod: int, edits: tuple[Edit, ...], in_flight: int
    ) -> None:
        self.rects, self.lod, self.edits, self.in_flight = rects, lod, edits, in_flight
        self._cv = threading.Condition()
        self._next = 0  # next job a worker takes
        self._delivered = 0  # jobs handed back to the caller
        self._done: dict[int, np.ndarray] = {}
        self._error: BaseException | None = None
        self._stopped = False

    def work(self, world: World, cpu_threads: int) -> None:
        """A worker thread: take the next job while the window allows, render, store."""
        if world.device.type == "cpu":
            torch.set_num_threads(cpu_threads)
        with on_device(world):
            while True:
                with self._cv:
                    while not self._stopped and self._next < len(self.rects):
                        if self._next < self._delivered + self.in_flight:
                            break
                        self._cv.wait()
                    if self._stopped or self._next >= len(self.rects):
                        return
                    index = self._next
                    self._next += 1
                try:
                    pixels = render_tile(world, self.rects[index], self.lod, self.edits)
                except BaseException as exc:  # noqa: B036 - every failure reaches the caller
                    log.exception("rendering tile %d on %s failed", index, world.device)
                    with self._cv:
                        if self._error is None:
                            self._error = exc
                        self._stopped = True
                        self._cv.notify_all()
                    return
                with self._cv:
                    self._done[index] = pixels
                    self._cv.notify_all()

    def take(self, index: int, should_stop: Callable[[], bool]) -> np.ndarray | None:
        """Tile `index` once a worker has rendered it; None once `should_stop` says so;
        raises a worker's error."""
        with self._cv:
            while index not in self._done:
                if self._error is not None:
                    raise self._error
                if should_stop():
                    return None
                self._cv.wait(0.1)
            pixels = self._done.pop(index)
            self._delivered = index + 1
            self._cv.notify_all()
            return pixels

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._done.clear()
            self._cv.notify_all()
