"""`infinity-canvas bench`: how fast this machine explores a world, in one reproducible run.

Every figure is measured in the same process, so ratios (efficiency against the measured
convolution peak) stay meaningful on noisy machines:

- flops_per_pixel: generator FLOPs per final pixel of one throughput window, on the
  kernels the throughput uses (torch.utils.flop_counter: convolutions and matrix products;
  eager code on a GPU folds each upsampling blur into a larger transposed convolution,
  about a third more FLOPs for `paper` than compiled code runs, engine.model.kernel_choice);
- mp_per_s: warm throughput, megapixels of final full-resolution pixels per second, handed
  back as uint8 arrays in host memory, as an export renders them (engine.export's
  `measure_speed`: windows of the shape a gigapixel export renders on this device, one after
  the other, on a GPU one window ahead; with `compile`, through `World.compiled()`, after its
  compilation; the views never compile);
- first_viewport_s / first_viewport_warm_s: a complete 1920x1080 view at 1:1 through the
  tile scheduler the GUI uses, right after the model is loaded (cold), then the median of
  `WARM_VIEWS` views on the same scheduler, each at a fresh area after a pause of
  `VIEW_PAUSE_S` (warm; all of them in `warm_views_s`);
- overview_s: a 1/16 overview of a 30,000 x 17,000 px area (`overview_px`);
- peak_mem_mb: peak resident memory (CPU) or peak allocated GPU memory;
- conv_peak_gflops: a large 3x3 convolution in the render precision on the same device.
"""

from __future__ import annotations

import contextlib
import json
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from engine.device import device_label
from engine.export import export_window, measure_speed
from engine.model import Generator
from engine.model.kernel_choice import compiled_kernels, steady_shapes
from engine.scheduler import TileResult, TileScheduler
from engine.tiles import Rect, TileIndex, lod_rect, tiles_covering
from engine.world import World

VIEWPORT = (1920, 1080)
OVERVIEW = (30_000, 17_000)
VIEW_PAUSE_S = 3.0  # before each warm view: longer than a CPU scheduler's worker waits
# Warm views: the first one can meet a window shape new to the worker thread (the cold view
# of a 1920 px wide view on the tile grid is 15 tiles wide, most views are 16), whose cuDNN
# plans it then makes; the median is what a session of panning and jumping sees.
WARM_VIEWS = 3


@dataclass(frozen=True)
class BenchResult:
    preset: str
    device: str
    precision: str
    window: tuple[int, int]  # (w, h) of the throughput's render windows, px
    flops_per_pixel: float
    mp_per_s: float
    first_viewport_s: float
    first_viewport_warm_s: float  # the median of warm_views_s
    warm_views_s: tuple[float, ...]
    overview_s: float
    overview_px: tuple[int, int]  # (w, h) of the area seen at 1/16
    peak_mem_mb: float
    conv_peak_gflops: float

    @property
    def efficiency(self) -> float:
        """Useful generator FLOP/s as a fraction of the measured convolution peak."""
        return self.flops_per_pixel * self.mp_per_s * 1e6 / (self.conv_peak_gflops * 1e9)


def time_views(
    world: World, views: list[Rect], pause_s: float, timeout: float = 600.0
) -> list[float]:
    """Seconds until one TileScheduler (the GUI keeps one per world) has delivered every
    visible tile of each view in turn, with `pause_s` of idleness before each view after
    the first."""
    state = threading.Condition()
    missing: set[TileIndex] = set()  # of the current view (one set operation per tile)

    def on_tile(result: TileResult) -> None:
        with state:
            if result.rgb is not None:
                missing.discard(result.key.tile)
            if not missing:
                state.notify_all()

    seconds = []
    with TileScheduler(world, on_tile, prefetch_ring=0) as scheduler:
        for epoch, view in enumerate(views, start=1):
            if epoch > 1:
                time.sleep(pause_s)
            with state:
                missing.clear()
                missing.update(tiles_covering(lod_rect(view, 0), 0))
            start = time.perf_counter()
            scheduler.request(view, 1.0, epoch)
            with state:
                finished = state.wait_for(lambda: not missing, timeout)
            seconds.append(time.perf_counter() - start)
            if not finished:
                raise RuntimeError(f"viewport not complete after {timeout} s")
    return seconds


def flops_per_pixel(world: World, window: tuple[int, int], *, compiled: bool = False) -> float:
    """Counted on the kernels the throughput renders with (`steady_shapes`, as an export;
    `compiled`: those compiled code runs), op by op: on a fresh World, whose first call of a
    shape runs before any CUDA graph of it is captured (a graph's replay would count
    nothing)."""
    counted = World(world.generator, world.seed, precision=world.precision)
    rect = Rect(0, 0, *window)
    as_compiled = compiled_kernels() if compiled else contextlib.nullcontext()
    with steady_shapes(), as_compiled, FlopCounterMode(display=False) as counter:
        counted.render_lod_float([rect], 0)
    return counter.get_total_flops() / rect.area


def conv_peak_gflops(device: torch.device, dtype: torch.dtype) -> float:
    """Throughput of a large, well-shaped 3x3 convolution (the machine's practical peak)."""
    channels, size = (256, 64) if device.type == "cpu" else (512, 128)
    batch = 1 if device.type == "cpu" else 16
    x = torch.randn(batch, channels, size, size, device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(channels, channels, 3, 3, device=device, dtype=dtype)
    w = w.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        seconds = _timed(lambda: F.conv2d(x, w), device, repeat=5)
    flops = 2 * batch * channels * channels * 9 * (size - 2) ** 2
    return flops / seconds / 1e9


def _timed(fn: Callable[[], object], device: torch.device, repeat: int = 1) -> float:
    fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeat


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


def run_bench(
    generator: Generator,
    *,
    seed: int = 0,
    precision: str = "auto",
    compile: bool = False,
    window: tuple[int, int] | None = None,
    throughput_seconds: float = 5.0,
    overview: tuple[int, int] = OVERVIEW,
    on_progress: Callable[[str], None] = lambda message: None,
) -> BenchResult:
    """Measure one generator on its device; see the module docstring for each figure.
    `window`: (w, h) of the throughput's render windows (default `export_window`);
    `overview`: (w, h) of the area seen at 1/16."""
    world = World(generator, seed=seed, precision=precision)
    device = world.device
    window = window or export_window(world)
    vw, vh = VIEWPORT

    on_progress(f"first viewport (cold), then {WARM_VIEWS} at new places (warm)")
    views = [Rect(50_000 * i, -vh // 2, vw, vh) for i in range(1 + WARM_VIEWS)]
    cold, *warm = time_views(world, views, pause_s=VIEW_PAUSE_S)

    on_progress("throughput (compiling first)" if compile else "throughput")
    steady = world.compiled() if compile else world  # as an export renders
    mp_per_s = measure_speed(steady, 0, seconds=throughput_seconds, window=window)

    on_progress("1/16 overview")
    ow, oh = overview
    overview_s = _timed(
        lambda: world.render((-300_000 - ow // 2, -oh // 2, ow, oh), 1 / 16), device
    )

    on_progress("FLOPs and convolution peak")
    fpp = flops_per_pixel(world, window, compiled=compile)
    peak = conv_peak_gflops(device, world.dtype)
    return BenchResult(
        preset=generator.config.preset,
        device=device_label(device),
        precision=str(world.dtype).removeprefix("torch."),
        window=window,
        flops_per_pixel=fpp,
        mp_per_s=mp_per_s,
        first_viewport_s=cold,
        first_viewport_warm_s=statistics.median(warm),
        warm_views_s=tuple(warm),
        overview_s=overview_s,
        overview_px=overview,
        peak_mem_mb=_peak_mem_mb(device),
        conv_peak_gflops=peak,
    )


def format_result(result: BenchResult) -> str:
    """Human-readable report followed by nothing else (JSON is printed separately)."""
    return "\n".join(
        [
            f"model preset        {result.preset}",
            f"device              {result.device} ({result.precision})",
            f"render windows      {result.window[0]} x {result.window[1]} px",
            f"FLOPs per pixel     {result.flops_per_pixel / 1e3:,.1f} k",
            f"throughput (warm)   {result.mp_per_s:.2f} MP/s",
            f"first 1920x1080     {result.first_viewport_s:.2f} s cold, "
            f"{result.first_viewport_warm_s:.3f} s warm (median of "
            f"{', '.join(f'{s:.3f}' for s in result.warm_views_s)})",
            f"1/16 overview       {result.overview_s:.2f} s for "
            f"{result.overview_px[0]:,} x {result.overview_px[1]:,} px",
            f"peak memory         {result.peak_mem_mb:,.0f} MB",
            f"conv peak           {result.conv_peak_gflops:,.0f} GFLOP/s "
            f"(generator uses {100 * result.efficiency:.0f}%)",
        ]
    )


def result_json(result: BenchResult) -> str:
    return json.dumps(asdict(result) | {"efficiency": result.efficiency}, sort_keys=True)
