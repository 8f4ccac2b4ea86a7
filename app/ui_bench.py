"""UI responsiveness benchmark (not a test): `python -m app.ui_bench [--preset lite]`.

Opens the explorer window (offscreen unless --show), waits for the first view, then pans
at a constant speed for `--seconds`, moving the view on every tick of an 8 ms timer on the
UI thread (twice a 60 Hz frame, so an interval above 16 ms means the UI thread was busy for
a whole frame), and then zooms out to 1/16 over one second. It prints:

- UI frame intervals (time between successive timer ticks, and between paints) p50/p99:
  how smooth the UI stays while tiles render on worker threads;
- the time until the viewport is complete (every visible tile up to date) after the pan
  stops and after the zoom-out;
- render statistics and the process's peak resident memory.

With `--stroke` it measures style painting instead: after the first view, it paints
`--strokes` brush strokes (the Styles dock's brush, a style of another seed) across the
view, one at a time, and prints the time from the end of each stroke (the edit pushed,
as on mouse release) until every affected visible tile shows the new pixels, the tiles
re-rendered per stroke, and the engine's render time of one painted render window
against the same window unpainted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

TICK_MS = 8  # UI timer period of the scripted pan


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m app.ui_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--preset", default="lite", help="model preset, random weights (lite)")
    parser.add_argument("--checkpoint", type=Path, help="use this checkpoint instead")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the pan")
    parser.add_argument("--speed", type=float, default=1000.0, help="pan speed, screen px/s")
    parser.add_argument("--zoom-to", type=float, default=1 / 16, help="zoom after the pan")
    parser.add_argument("--size", default="1280x800", help="window size WxH")
    parser.add_argument("--show", action="store_true", help="use the real display")
    parser.add_argument("--stroke", action="store_true", help="measure style painting instead")
    parser.add_argument("--strokes", type=int, default=5, help="strokes painted (--stroke)")
    parser.add_argument("--radius", type=float, default=64.0, help="brush radius, world px")
    return parser.parse_args(argv)


def percentiles(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a"
    q = statistics.quantiles(values, n=100, method="inclusive")
    p50, p99, top = q[49] * 1000, q[98] * 1000, max(values) * 1000
    return f"p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   max {top:6.1f} ms"


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


async def wait_complete(window, timeout: float = 600.0) -> float:
    """Seconds until the canvas shows every visible tile up to date."""
    start = time.perf_counter()
    canvas = window.canvas
    while time.perf_counter() - start < timeout:
        if (
            not canvas._request_timer.isActive()
            and window.session.feed.idle
            and canvas.is_complete()
        ):
            return time.perf_counter() - start
        await asyncio.sleep(0.005)
    return float("inf")


async def wait_visible(window, timeout: float = 600.0) -> float:
    """Seconds until every visible tile is up to date (the prefetch ring may still render)."""
    start = time.perf_counter()
    canvas = window.canvas
    while time.perf_counter() - start < timeout:
        if not canvas._request_timer.isActive() and canvas.is_complete():
            return time.perf_counter() - start
        await asyncio.sleep(0.002)
    return float("inf")


async def animate(window, seconds: float, step) -> tuple[list[float], list[float]]:
    """Call `step(dt)` on every tick of an 8 ms precise timer for `seconds`; returns the
    tick intervals and paint intervals (seconds)."""
    from PySide6.QtCore import Qt, QTimer

    ticks: list[float] = []
    paints: list[float] = []
    done = asyncio.Event()
    start = last = time.perf_counter()
    last_paint = [start]

    def painted() -> None:
        now = time.perf_counter()
        paints.append(now - last_paint[0])
        last_paint[0] = now

    def tick() -> None:
        nonlocal last
        now = time.perf_counter()
        ticks.append(now - last)
        step(now - last)
        last = now
        if now - start >= seconds:
            timer.stop()
            done.set()

    window.canvas.frame_hook = painted
    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.timeout.connect(tick)
    timer.start(TICK_MS)
    await done.wait()
    window.canvas.frame_hook = None
    return ticks, paints[1:]


async def bench(window, args: argparse.Namespace) -> None:
    first = await wait_complete(window)
    print(f"first view complete after {first:.2f} s")
    feed = window.session.feed
    s0 = feed.stats()

    canvas = window.canvas
    ticks, paints = await animate(
        window, args.seconds, lambda dt: canvas.pan_by(-args.speed * dt, 0)
    )
    after_pan = await wait_complete(window)
    s1 = feed.stats()

    z0 = canvas.viewport.zoom
    ratio = args.zoom_to / z0
    zoom_time = 1.0
    elapsed = [0.0]

    def zoom_step(dt: float) -> None:
        elapsed[0] = min(zoom_time, elapsed[0] + dt)
        canvas.set_viewport(canvas.viewport.with_zoom(z0 * ratio ** (elapsed[0] / zoom_time)))

    zticks, zpaints = await animate(window, zoom_time, zoom_step)
    canvas.set_viewport(canvas.viewport.with_zoom(args.zoom_to))
    after_zoom = await wait_complete(window)
    s2 = feed.stats()

    mp = (s1.rendered_pixels - s0.rendered_pixels) / 1e6
    sec = s1.render_seconds - s0.render_seconds
    print(f"model: {window.session.model.description} on {window.session.device_text}")
    print(f"window {args.size}, pan {args.speed:.0f} px/s for {args.seconds:.0f} s")
    print(f"UI timer tick interval during pan:  {percentiles(ticks)}  ({len(ticks)} ticks)")
    print(f"UI paint interval during pan:       {percentiles(paints)}  ({len(paints)} paints)")
    print(f"viewport complete after pan stops:  {after_pan:.2f} s")
    print(f"UI timer tick interval during zoom: {percentiles(zticks)}")
    print(f"viewport complete after zoom-out to 1:{1 / args.zoom_to:g}: {after_zoom:.2f} s")
    print(
        f"rendered during pan: {s1.rendered_tiles - s0.rendered_tiles} tiles, "
        f"{mp:.1f} MP in {sec:.1f} s of render time ({mp / sec if sec else 0:.2f} MP/s); "
        f"total tiles rendered {s2.rendered_tiles}, cache hits {s2.cache_hits}"
    )
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


async def stroke_bench(window, args: argparse.Namespace) -> None:
    first = await wait_complete(window)
    print(f"first view complete after {first:.2f} s")
    canvas, feed = window.canvas, window.session.feed
    panel = window.style_panel
    panel.select(panel.add_from_seed(12345).id)
    panel.radius_box.setValue(round(args.radius))
    vp = canvas.viewport
    visible = len(canvas.visible_tiles())
    latencies, rerendered = [], []
    for i in range(args.strokes):
        # Short strokes spread over the view, each on ground no stroke has touched yet.
        fx = (i + 0.5) / args.strokes
        x = vp.center_x + (fx - 0.5) * vp.width / vp.zoom
        y = vp.center_y + (0.25 if i % 2 else -0.25) * vp.height / vp.zoom
        points = tuple((x + dx, y + dx / 4) for dx in (-60.0, -20.0, 20.0, 60.0))
        before = feed.stats().rendered_tiles
        start = time.perf_counter()
        window.paint_stroke(points)
        await wait_visible(window)
        latencies.append(time.perf_counter() - start)
        await wait_complete(window)  # the prefetch ring too, before the next stroke
        rerendered.append(feed.stats().rendered_tiles - before)
    from engine.tiles import TILE_PX, Rect

    corner = canvas.visible_tiles()[0].rect
    block = Rect(corner.x, corner.y, 6 * TILE_PX, 6 * TILE_PX)  # the canvas's render block
    tile = Rect(corner.x, corner.y, TILE_PX, TILE_PX)
    costs = [window_cost(window.session.world, r, args.radius) for r in (block, tile)]
    print(f"model: {window.session.model.description} on {window.session.device_text}")
    print(f"window {args.size}: {visible} visible tiles; brush radius {args.radius:g} px")
    print(
        "end of stroke -> affected visible tiles updated: "
        + ", ".join(f"{t:.2f}" for t in latencies)
        + f" s (median {statistics.median(latencies):.2f} s)"
    )
    print(
        f"tiles re-rendered per stroke (visible and prefetch ring): "
        f"{', '.join(map(str, rerendered))}"
    )
    for r, (painted, plain), where in zip(
        (block, tile), costs, ("a stroke through its middle", "a stroke across it"), strict=True
    ):
        print(
            f"one {r.w}x{r.h} render window: unpainted {plain * 1000:.0f} ms, painted with "
            f"{where} {painted * 1000:.0f} ms ({painted / plain:.2f}x)"
        )
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


def window_cost(world, rect, radius: float, repeats: int = 5) -> tuple[float, float]:
    """Best of `repeats` seconds to render `rect` (lod 0) with a horizontal stroke through
    its middle (styles blend per pixel where they meet) and in the same world without it."""
    from engine.edits import StyleStroke
    from engine.styles import Style
    from engine.world import World

    plain = World(world.generator, world.seed, precision="auto")
    painted = World(world.generator, world.seed, precision="auto")
    cx, cy = rect.x + rect.w / 2, rect.y + rect.h / 2
    stroke = ((cx - 100, cy), (cx + 100, cy))
    painted.apply(StyleStroke(stroke, radius, 0.5, 1.0, Style.from_seed(7)))

    worlds = (painted, plain)
    times: tuple[list[float], list[float]] = ([], [])
    for w in worlds:
        w.render_lod_float([rect], 0)  # warm up
    for _ in range(repeats):  # interleaved, so a busy moment of the machine hits both
        for w, spent in zip(worlds, times, strict=True):
            start = time.perf_counter()
            w.render_lod_float([rect], 0)
            spent.append(time.perf_counter() - start)
    return min(times[0]), min(times[1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.show:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    width, height = (int(v) for v in args.size.lower().split("x"))

    import qasync
    import torch
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from app.paths import AppPaths
    from app.project import ModelRef
    from app.session import load_model

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))  # as the GUI does
    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    ref = ModelRef.of_file(args.checkpoint) if args.checkpoint else ModelRef.of_preset(args.preset)
    model = load_model(ref, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        window = MainWindow(
            model,
            seed=1,
            device=args.device,
            precision=args.precision,
            settings=QSettings(str(Path(tmp) / "settings.ini"), QSettings.Format.IniFormat),
            paths=AppPaths(Path(tmp) / "data", Path(tmp) / "state"),
        )
        window.resize(width, height)
        window.show()
        loop = qasync.QEventLoop(qt_app)
        asyncio.set_event_loop(loop)
        with loop:
            loop.run_until_complete((stroke_bench if args.stroke else bench)(window, args))
            window.shutdown()
            window.close()
        asyncio.set_event_loop(None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
