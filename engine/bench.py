"""`infinity-canvas bench`: how fast this machine explores a world, in one reproducible run.

Every figure is measured in the same process, so ratios (efficiency against the measured
convolution peak) stay meaningful on noisy machines:

- flops_per_pixel: generator FLOPs per final pixel at the throughput block size
  (torch.utils.flop_counter: convolutions and matrix products);
- mp_per_s: warm throughput, megapixels of final full-resolution pixels per second, as an
  export renders (blocks of one shape, in `steady_shapes`; with `compile`, through
  `World.compiled()`, after its compilation; the views never compile);
- first_viewport_s / first_viewport_warm_s: a complete 1920x1080 view at 1:1 through the
  tile scheduler the GUI uses, right after the model is loaded (cold), then on the same
  scheduler at a fresh area after a pause of `VIEW_PAUSE_S` (warm);
- overview_s: a 1/16 overview of a 30,000 x 17,000 px area;
- peak_mem_mb: peak resident memory (CPU) or peak allocated GPU memory;
- conv_peak_gflops: a large 3x3 convolution in the render precision on the same device.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from engine.device import device_label
from engine.model import Generator
from engine.model.conv_plans import steady_shapes
from engine.scheduler import TileResult, TileScheduler
from engine.tiles import Rect, TileIndex, lod_rect, tiles_covering
from engine.world import World

VIEWPORT = (1920, 1080)
OVERVIEW = (30_000, 17_000)
VIEW_PAUSE_S = 3.0  # before the warm view: longer than a CPU scheduler's worker waits


@dataclass(frozen=True)
class BenchResult:
    preset: str
    device: str
    precision: str
    block_px: int
    batch: int
    flops_per_pixel: float
    mp_per_s: float
    first_viewport_s: float
    first_viewport_warm_s: float
    overview_s: float
    peak_mem_mb: float
    conv_peak_gflops: float

    @property
    def efficiency(self) -> float:
        """Useful generator FLOP/s as a fraction of the measured convolution peak."""
        return self.flops_per_pixel * self.mp_per_s * 1e6 / (self.conv_peak_gflops * 1e9)


def default_block_px(world: World) -> int:
    """Render window side (full-res px): larger windows waste less margin, smaller ones answer
    sooner. 16 cells on CPUs, 32 cells on GPUs."""
    cells = 32 if world.device.type == "cuda" else 16
    return cells * world.config.cell_px


def render_view(world: World, view: Rect, lod: int, block_px: int, batch: int) -> int:
    """Render `view` (lod pixels) as aligned blocks, batching equal blocks; returns pixels."""
    blocks = []
    x0, y0 = view.x - view.x % block_px, view.y - view.y % block_px
    for y in range(y0, view.bottom, block_px):
        for x in range(x0, view.right, block_px):
            part = Rect(x, y, block_px, block_px).intersection(view)
            if part is not None:
                blocks.append(part)
    by_size: dict[tuple[int, int], list[Rect]] = {}
    for b in blocks:
        by_size.setdefault((b.w, b.h), []).append(b)
    pixels = 0
    for group in by_size.values():
        for i in range(0, len(group), batch):
            rgb = world.render_lod(group[i : i + batch], lod)
            pixels += rgb.shape[0] * rgb.shape[1] * rgb.shape[2]
    return pixels


def time_views(
    world: World, views: list[Rect], pause_s: float, timeout: float = 600.0
) -> list[float]:
    """Seconds until one TileScheduler (the GUI keeps one per world) has delivered every
    visible tile of each view in turn, with `pause_s` of idleness before each view after
    the first."""
    state = threading.Condition()
    need: set[TileIndex] = set()
    got: set[TileIndex] = set()

    def on_tile(result: TileResult) -> None:
        with state:
            if result.rgb is not None:
                got.add(result.key.tile)
            if need <= got:
                state.notify_all()

    seconds = []
    with TileScheduler(world, on_tile, prefetch_ring=0) as scheduler:
        for epoch, view in enumerate(views, start=1):
            if epoch > 1:
                time.sleep(pause_s)
            with state:
                need.clear()
                need.update(tiles_covering(lod_rect(view, 0), 0))
                got.clear()
            start = time.perf_counter()
            scheduler.request(view, 1.0, epoch)
            with state:
                finished = state.wait_for(lambda: need <= got, timeout)
            seconds.append(time.perf_counter() - start)
            if not finished:
                raise RuntimeError(f"viewport not complete after {timeout} s")
    return seconds


def flops_per_pixel(generator: Generator, world: World, block_px: int) -> float:
    rect = Rect(0, 0, block_px, block_px)
    with FlopCounterMode(display=False) as counter:
        world.render_lod_float([rect], 0)
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
    block_px: int | None = None,
    batch: int | None = None,
    throughput_seconds: float = 5.0,
    on_progress: Callable[[str], None] = lambda message: None,
) -> BenchResult:
    """Measure one generator on its device; see the module docstring for each figure."""
    world = World(generator, seed=seed, precision=precision)
    device = world.device
    block = block_px or default_block_px(world)
    batch = batch or (
        1 if device.type == "cpu" else min(8, world.max_batch(Rect(0, 0, block, block), 0))
    )
    vw, vh = VIEWPORT

    on_progress("first viewport (cold), then another at a new place (warm)")
    views = [Rect(0, -vh // 2, vw, vh), Rect(50_000, -vh // 2, vw, vh)]
    cold, warm = time_views(world, views, pause_s=VIEW_PAUSE_S)

    on_progress("throughput (compiling first)" if compile else "throughput")
    steady = world.compiled() if compile else world  # as an export renders
    with steady_shapes():
        strip = Rect(100_000 * block, -block, block * batch, block)  # whole blocks: one batch
        render_view(steady, strip, 0, block, batch)  # warm-up (and compilation) for this shape
        _sync(device)
        pixels, x, start = 0, strip.right, time.perf_counter()
        while time.perf_counter() - start < throughput_seconds:
            strip = Rect(x, -block, block * batch, block)
            pixels += render_view(steady, strip, 0, block, batch)
            x += strip.w
        _sync(device)
    mp_per_s = pixels / (time.perf_counter() - start) / 1e6

    on_progress("1/16 overview")
    ow, oh = OVERVIEW
    overview = _timed(lambda: world.render((-300_000 - ow // 2, -oh // 2, ow, oh), 1 / 16), device)

    on_progress("FLOPs and convolution peak")
    fpp = flops_per_pixel(generator, world, block)
    peak = conv_peak_gflops(device, world.dtype)
    return BenchResult(
        preset=generator.config.preset,
        device=device_label(device),
        precision=str(world.dtype).removeprefix("torch."),
        block_px=block,
        batch=batch,
        flops_per_pixel=fpp,
        mp_per_s=mp_per_s,
        first_viewport_s=cold,
        first_viewport_warm_s=warm,
        overview_s=overview,
        peak_mem_mb=_peak_mem_mb(device),
        conv_peak_gflops=peak,
    )


def format_result(result: BenchResult) -> str:
    """Human-readable report followed by nothing else (JSON is printed separately)."""
    return "\n".join(
        [
            f"model preset        {result.preset}",
            f"device              {result.device} ({result.precision})",
            f"render block        {result.block_px} px, batch {result.batch}",
            f"FLOPs per pixel     {result.flops_per_pixel / 1e3:,.1f} k",
            f"throughput (warm)   {result.mp_per_s:.2f} MP/s",
            f"first 1920x1080     {result.first_viewport_s:.2f} s cold, "
            f"{result.first_viewport_warm_s:.3f} s warm",
            f"1/16 overview       {result.overview_s:.2f} s for 30,000 x 17,000 px",
            f"peak memory         {result.peak_mem_mb:,.0f} MB",
            f"conv peak           {result.conv_peak_gflops:,.0f} GFLOP/s "
            f"(generator uses {100 * result.efficiency:.0f}%)",
        ]
    )


def result_json(result: BenchResult) -> str:
    return json.dumps(asdict(result) | {"efficiency": result.efficiency}, sort_keys=True)
