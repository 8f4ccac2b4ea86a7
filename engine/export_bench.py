"""`python -m engine.export_bench`: what writing an export costs next to generating it.

For one SIZE x SIZE px region (default 4096, `lite` preset, CPU) it measures, in one process,
REPEAT times in turn, each after the page cache's dirty data is written out (the fastest
of each is reported: shared machines are noisy):

1. full export: `run_export` (render thread, strip assembly, compression, file, spill); the
   peak resident memory is read after the first one, before anything else is allocated;
2. generation: the export's render tiles rendered alone, each let go once rendered;
3. writer: the same tiles, rendered again beforehand and kept in memory (untimed), written
   by `write_tiles` (assembly, compression, file);

and reports the writer's overhead, (full - generation) / generation, the writer alone as a
share of generation, and the time extrapolated to one gigapixel (memory does not grow with
the size, so the peak RSS stays what it is). Ratios are meaningful on one machine only.

With `--devices cuda:0,cuda:1,...` (or `all`) it measures scaling instead: the same export
on the first 1, 2, 4, ... of the listed devices (and all of them), one worker per device
(engine.tile_workers), each after a warm-up of every worker, fastest of REPEAT; it reports
the throughput per device count, the speed-up over one device, and whether each file is
byte-identical to the one-device export (it must be, on devices of one kind).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from engine.allocator import reuse_freed_memory
from engine.checkpoint import load_generator
from engine.device import resolve_devices
from engine.export import ExportJob, ExportPlan, plan_export, run_export, write_tiles
from engine.export_formats import DEFAULT_DEFLATE_LEVEL
from engine.tile_workers import SingleDevice, TileWorkers, render_tile
from engine.tiles import Rect
from engine.world import World

GIGAPIXEL = 1e9


@dataclass(frozen=True)
class ExportBenchResult:
    preset: str
    device: str
    precision: str
    compiled: bool
    format: str
    compression: str
    width: int
    height: int
    render_tiles: int
    render_tile_px: int  # width
    render_tile_h: int
    torch_threads: int
    deflate_level: int
    repeat: int
    generation_s: float
    writer_s: float
    export_s: float
    output_mb: float
    peak_rss_mb: float | None  # of the whole process at the end of the full export
    rss_before_mb: float | None  # with the model loaded, before the export
    # Linux, sampled every few ms during the first full export: the process's own memory
    # (anonymous pages) and the pages of mapped files (libraries: CUDA's are most of them)
    anon_before_mb: float | None
    peak_anon_mb: float | None
    peak_file_mb: float | None

    @property
    def overhead(self) -> float:
        """Extra wall time of the full export over pure generation, as a fraction of it."""
        return (self.export_s - self.generation_s) / self.generation_s

    @property
    def writer_share(self) -> float:
        return self.writer_s / self.generation_s

    @property
    def mp_per_s(self) -> float:
        return self.width * self.height / self.export_s / 1e6

    def gigapixel_hours(self) -> float:
        return self.export_s * GIGAPIXEL / (self.width * self.height) / 3600


def peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes / KiB


def _rss_parts_mb() -> tuple[float, float] | None:
    """(anonymous, file-backed) resident MB of this process, from /proc (Linux), or None."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith("Rss"))
        return int(fields["RssAnon"].split()[0]) / 1024, int(fields["RssFile"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        return None


class _RssSampler:
    """Peaks of `_rss_parts_mb` while the `with` block runs, sampled every 5 ms."""

    def __init__(self) -> None:
        self.anon: float | None = None
        self.file: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            parts = _rss_parts_mb()
            if parts is None:
                return
            self.anon, self.file = max(self.anon or 0, parts[0]), max(self.file or 0, parts[1])
            if self._stop.wait(0.005):
                return

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _settle() -> None:
    """Write the page cache's dirty data out before a timed phase, so that flushing the
    last phase's gigabytes does not slow the next one down (os.sync waits for it on Linux)."""
    if hasattr(os, "sync"):
        os.sync()


def run_export_bench(
    world: World,
    folder: Path,
    *,
    size: int = 4096,
    fmt: str = "tiff",
    compression: str | None = None,
    deflate_level: int = DEFAULT_DEFLATE_LEVEL,
    repeat: int = 3,
    workers: int | None = None,
    compile: bool = False,
    on_progress=lambda message: None,
) -> ExportBenchResult:
    if compile:  # every phase renders through the compiled generator; the warm-up compiles
        world = world.compiled()
    rect = Rect(-size // 2, -size // 2, size, size)
    suffix = {"tiff": ".tif", "pyramid": ".tif", "png": ".png", "dzi": ".dzi"}[fmt]
    job = ExportJob(
        rect,
        folder / f"export{suffix}",
        format=fmt,
        compression=compression,
        deflate_level=deflate_level,
    )
    plan = plan_export(world, job)
    shapes = _window_shapes(plan)
    on_progress(
        f"warm-up: two render windows of each of {len(shapes)} shapes, away from the region"
    )
    for w, h in shapes:  # the first calls of a shape set up kernels (and on a GPU capture
        for x in (1 << 20, (1 << 20) + w):  # its CUDA graph): keep that out of the timings
            render_tile(world, Rect(x, 0, w, h), plan.lod, world.edits)
    rss_before = peak_rss_mb()
    anon_before = (_rss_parts_mb() or (None,))[0]

    export_s, generation_s, writer_s = [], [], []
    rss: float | None = None
    for i in range(repeat):
        on_progress(f"run {i + 1}/{repeat}: full export of {size} x {size} px")
        _settle()
        start = time.perf_counter()
        with _RssSampler() as sampled:
            out = run_export(world, job, workers=workers, compile=compile)
        export_s.append(time.perf_counter() - start)
        if i == 0:
            parts = sampled
        rss = peak_rss_mb() if rss is None else rss
        output_mb = sum(p.stat().st_size for p in _outputs(out)) / 1e6

        on_progress(f"run {i + 1}/{repeat}: generation alone")
        _settle()
        start = time.perf_counter()
        _render_alone(world, plan, keep=False)
        generation_s.append(time.perf_counter() - start)

        on_progress(f"run {i + 1}/{repeat}: writer alone, with tiles rendered beforehand")
        tiles = _render_alone(world, plan, keep=True)
        _settle()
        start = time.perf_counter()
        write_tiles(plan, tiles, folder / f"again{suffix}", workers=workers)
        writer_s.append(time.perf_counter() - start)
        del tiles

    return ExportBenchResult(
        preset=world.config.preset,
        device=str(world.device),
        precision=str(world.dtype).removeprefix("torch."),
        compiled=world.is_compiled,
        format=fmt,
        compression=str(job.compression),
        width=plan.width,
        height=plan.height,
        render_tiles=plan.total_tiles,
        render_tile_px=plan.tile_w,
        render_tile_h=plan.tile_h,
        torch_threads=torch.get_num_threads(),
        deflate_level=deflate_level,
        repeat=repeat,
        generation_s=min(generation_s),
        writer_s=min(writer_s),
        export_s=min(export_s),
        output_mb=output_mb,
        peak_rss_mb=rss,
        rss_before_mb=rss_before,
        anon_before_mb=anon_before,
        peak_anon_mb=parts.anon,
        peak_file_mb=parts.file,
    )


def _window_shapes(plan: ExportPlan) -> set[tuple[int, int]]:
    """(w, h) of the export's render windows (one shape on a GPU)."""
    return {(r.w, r.h) for r in map(plan.render_rect, range(plan.total_tiles))}


def _render_alone(world: World, plan: ExportPlan, *, keep: bool) -> list[np.ndarray]:
    """The export's render tiles, uint8 [h, w, 3] each, rendered as the export renders them:
    by its default renderer on a thread of their own (cuDNN's plans are per thread, so a new
    thread sets them up again, as each export's render thread does). Without `keep` each
    tile is let go once rendered (pure generation; the result is empty)."""
    tiles: list[np.ndarray] = []
    failed: list[BaseException] = []
    rects = [plan.render_rect(i) for i in range(plan.total_tiles)]

    def work() -> None:
        try:
            windows = SingleDevice(world).render_in_order(rects, plan.lod, world.edits)
            for index, window in enumerate(windows):
                if keep:
                    tiles.append(plan.cropped(index, window))
        except BaseException as exc:  # noqa: B036 - re-raised on the calling thread
            failed.append(exc)

    thread = threading.Thread(target=work, name="export-bench-render")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return tiles


@dataclass(frozen=True)
class ScalingPoint:
    devices: tuple[str, ...]
    export_s: float  # fastest full export
    mp_per_s: float
    speedup: float  # over the first point (one device)
    identical: bool  # the file's bytes equal the one-device export's


def run_scaling_bench(
    world: World,
    devices: list[torch.device],
    folder: Path,
    *,
    size: int = 4096,
    repeat: int = 3,
    counts: list[int] | None = None,
    on_progress=lambda message: None,
) -> list[ScalingPoint]:
    """The same `size` x `size` TIFF export on the first n of `devices` for each n of
    `counts` (default 1, 2, 4, ... and len(devices)); `world` must be on devices[0]. One
    device renders through the plain export path, more through TileWorkers."""
    counts = counts or sorted({*(2**k for k in range(len(devices).bit_length())), len(devices)})
    job = ExportJob(Rect(-size // 2, -size // 2, size, size), folder / "scaling.tif")
    plan = plan_export(world, job)
    warmup = [Rect(1 << 20, 0, w, h) for w, h in _window_shapes(plan)]
    points: list[ScalingPoint] = []
    reference: bytes | None = None
    for n in counts:
        workers = TileWorkers(world, devices[:n], in_flight=2 * n)
        on_progress(f"{n} device(s): warm-up of every worker")
        for replica in workers.replicas:  # first calls of a shape set up kernels
            for rect in warmup:
                replica.render_lod([rect], plan.lod)
        times = []
        for i in range(repeat):
            on_progress(f"{n} device(s): run {i + 1}/{repeat}")
            start = time.perf_counter()
            run_export(world, job, renderer=None if n == 1 else workers)
            times.append(time.perf_counter() - start)
        data = job.out.read_bytes()
        reference = data if reference is None else reference
        best = min(times)
        first = points[0].export_s if points else best
        points.append(
            ScalingPoint(
                devices=tuple(str(d) for d in devices[:n]),
                export_s=best,
                mp_per_s=plan.pixels / best / 1e6,
                speedup=first / best,
                identical=data == reference,
            )
        )
        workers.close()
    return points


def format_scaling(world: World, size: int, points: list[ScalingPoint]) -> str:
    lines = [
        f"export scaling: {world.config.preset} ({str(world.dtype).removeprefix('torch.')}), "
        f"{size} x {size} px tiff, fastest run per device count",
        "  devices  seconds     MP/s  speed-up  identical to 1 device",
    ]
    for p in points:
        lines.append(
            f"  {len(p.devices):7d} {p.export_s:8.2f} {p.mp_per_s:8.2f} {p.speedup:8.2f}x  "
            f"{'yes' if p.identical else 'NO'}  ({', '.join(p.devices)})"
        )
    return "\n".join(lines)


def _outputs(out: Path) -> list[Path]:
    if out.suffix == ".dzi":
        return [out, *(p for p in out.with_name(out.stem + "_files").rglob("*") if p.is_file())]
    return [out]


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} MB"


def format_result(r: ExportBenchResult) -> str:
    rss = "n/a" if r.peak_rss_mb is None else f"{r.peak_rss_mb:,.0f} MB"
    before = "n/a" if r.rss_before_mb is None else f"{r.rss_before_mb:,.0f} MB"
    return "\n".join(
        [
            f"export bench: {r.preset}{' (compiled)' if r.compiled else ''} on {r.device} "
            f"({r.precision}, {r.torch_threads} torch threads), {r.format}/{r.compression} "
            f"(deflate level {r.deflate_level}), fastest of {r.repeat}",
            f"  region            {r.width} x {r.height} px, {r.render_tiles} render tiles of "
            f"{r.render_tile_px} x {r.render_tile_h} px",
            f"  generation alone  {r.generation_s:8.2f} s",
            f"  writer alone      {r.writer_s:8.2f} s  ({100 * r.writer_share:.1f}% of generation)",
            f"  full export       {r.export_s:8.2f} s  ({r.mp_per_s:.2f} MP/s, "
            f"overhead {100 * r.overhead:+.1f}% of generation)",
            f"  output            {r.output_mb:8.1f} MB",
            f"  peak RSS          {rss} (model loaded, before export: {before})",
            f"  of which sampled  {_mb(r.peak_anon_mb)} the process's own (before export: "
            f"{_mb(r.anon_before_mb)}), at most {_mb(r.peak_file_mb)} mapped files",
            f"  1 gigapixel       about {r.gigapixel_hours():.1f} h at this speed, same memory",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.export_bench", description=__doc__)
    parser.add_argument("--preset", default="lite")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--devices",
        help="measure scaling over these devices instead (cuda:0,cuda:1,... or all; cpu,cpu "
        "for a CPU check): 1, 2, 4, ... of them, throughput per device count",
    )
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the generator (CUDA)")
    parser.add_argument("--size", type=int, default=4096, help="region side in pixels")
    parser.add_argument("--format", default="tiff", choices=["tiff", "png", "pyramid", "dzi"])
    parser.add_argument("--compression")
    parser.add_argument("--deflate-level", type=int, default=DEFAULT_DEFLATE_LEVEL)
    parser.add_argument("--repeat", type=int, default=3, help="runs; the fastest is reported")
    parser.add_argument("--workers", type=int, help="encoder threads (default: the export's)")
    parser.add_argument("--folder", type=Path, help="where to write (default: a temp folder)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    reuse_freed_memory()  # as the export command does
    devices = None if args.devices is None else resolve_devices(args.devices)
    device = args.device if devices is None else devices[0]
    world = World(load_generator(preset=args.preset, device=device), 1, precision=args.precision)
    progress = lambda m: print(f"... {m}", file=sys.stderr, flush=True)  # noqa: E731
    if devices is not None:
        with tempfile.TemporaryDirectory(dir=args.folder) as folder:
            points = run_scaling_bench(
                world, devices, Path(folder), size=args.size, repeat=args.repeat,
                on_progress=progress,
            )  # fmt: skip
        print(format_scaling(world, args.size, points))
        if args.json:
            print(json.dumps([asdict(p) for p in points]))
        return 0 if all(p.identical for p in points) else 1
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        result = run_export_bench(
            world,
            Path(folder),
            size=args.size,
            fmt=args.format,
            compression=args.compression,
            deflate_level=args.deflate_level,
            repeat=args.repeat,
            workers=args.workers,
            compile=args.compile,
            on_progress=progress,
        )
    print(format_result(result))
    if args.json:
        print(json.dumps(asdict(result) | {"overhead": result.overhead}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
