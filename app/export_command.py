"""`infinity-canvas export`: a world rectangle of any size to an image file, resumable.

    infinity-canvas export --seed 7 --rect=-20000,-4000,40000,8000 --out valley.tif
    infinity-canvas export --project trip.icanvas --rect 0,0,8192,4096 --format dzi --out trip.dzi
    infinity-canvas export --seed 7 --rect 0,0,65536,16384 --devices all --out wide.tif
    infinity-canvas export --seed 7 --rect 0,0,65536,16384 --ray auto --out wide.tif
    infinity-canvas export --seed 7 --rect 0,0,65536,65536 --compile --out giant.tif

Progress and ETA go to stderr on one line. Ctrl-C stops after the tile being rendered;
running the same command with `--resume` continues where it stopped (engine.export). The
engine and the project module are imported inside `run`, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMATS = ("tiff", "pyramid", "dzi", "png")
SUFFIX_FORMATS = {".tif": "tiff", ".tiff": "tiff", ".png": "png", ".dzi": "dzi"}
INTERRUPTED = 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    world = parser.add_argument_group("world (a project, or a seed and a model)")
    world.add_argument("--project", type=Path, help="project file (*.icanvas): model, seed, edits")
    world.add_argument("--seed", type=int, help="world seed (default 0)")
    world.add_argument("--checkpoint", type=Path, help="model checkpoint (default: shipped model)")
    # Hidden: random weights of a preset, so tests and demos need no checkpoint file.
    world.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument(
        "--rect",
        required=True,
        help="X,Y,W,H in world pixels (y=0 is the horizon band); write --rect=-X,... when X < 0",
    )
    parser.add_argument(
        "--scale",
        type=parse_scale,
        default=1.0,
        help="output pixels per world pixel: 1, 1/2, 1/4, ... (default 1)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="tiff: tiled BigTIFF; pyramid: pyramidal BigTIFF; dzi: Deep Zoom; png "
        "(default: from the --out suffix, else tiff). pyramid and dzi need the 'export' extra",
    )
    parser.add_argument("--out", required=True, type=Path, help="output file")
    restart = parser.add_mutually_exclusive_group()
    restart.add_argument(
        "--resume", action="store_true", help="continue an unfinished export of the same job"
    )
    restart.add_argument(
        "--restart",
        action="store_true",
        help="discard an unfinished export of --out and start over",
    )
    parser.add_argument(
        "--compression",
        choices=["deflate", "jpeg", "png", "none"],
        help="tiff/pyramid: deflate (default), jpeg or none; dzi tiles: jpeg (default) or png",
    )
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality 1-100 (default 90)")
    parser.add_argument(
        "--deflate-level",
        type=int,
        default=1,
        help="zlib level 1-9 for deflate/PNG (default 1: fast; 6: smallest files)",
    )
    parser.add_argument("--tile", type=int, default=256, help="tile side in the file (default 256)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    spread = parser.add_mutually_exclusive_group()
    spread.add_argument(
        "--devices",
        help="render on several devices, one worker each: a list (cuda:0,cuda:1; cpu,cpu) or "
        "'all' (every CUDA GPU); the file is the same as with one device. Replaces --device",
    )
    spread.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="render the tiles as tasks on a Ray cluster ('distributed' extra): 'auto' (the "
        "cluster this machine belongs to), ray://HEAD:10001 (Ray Client) or 'local' (start "
        "Ray on this machine); this machine writes the file",
    )
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument(
        "--compile",
        action="store_true",
        help="one GPU or the CPU: compile the generator first (15-35 s, or a few seconds once "
        "torch has cached it; the CPU needs a C++ compiler), then export 15-20%% faster; pays "
        "for large exports. A --resume renders as the export it continues did",
    )
    # Hidden: render tile side in lod pixels (tests; default: the device's largest window).
    parser.add_argument("--render-tile", type=int, help=argparse.SUPPRESS)


def parse_scale(text: str) -> float:
    """'1', '0.25' or '1/4' -> float; argparse reports a ValueError as a usage error."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a scale: {text!r} (use 1, 1/2, 0.25, ...)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"the scale must be positive, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from app.render_command import parse_rect
    from engine.export import (
        ExportCancelled,
        ExportJob,
        plan_export,
        run_export,
        unfinished_export,
    )

    rect = parse_rect(args.rect)
    fmt = args.format or SUFFIX_FORMATS.get(args.out.suffix.lower(), "tiff")
    compression = args.compression
    if fmt == "dzi" and compression == "deflate":
        compression = "png"  # lossless tiles
    job = ExportJob(
        rect=rect,
        out=args.out,
        scale=args.scale,
        format=fmt,
        tile=args.tile,
        compression=compression,
        quality=args.quality,
        deflate_level=args.deflate_level,
    )
    unfinished = unfinished_export(args.out)
    if unfinished is not None and not (args.resume or args.restart):
        raise ValueError(
            f"an unfinished export of {args.out} exists ({100 * unfinished.fraction:.0f}% "
            "written): add --resume to continue it, or --restart to start over"
        )
    devices = None
    if args.devices is not None:
        from engine.device import resolve_devices

        devices = resolve_devices(args.devices)
        args.device = devices[0]
    world, model_ref = _world(args)
    plan = plan_export(world, job, render_tile=args.render_tile)
    if plan.rect != job.rect:
        print(
            f"rectangle snapped to {_rect_text(plan.rect)} (the scale's pixel grid)",
            file=sys.stderr,
        )
    print(
        f"exporting {plan.width:,} x {plan.height:,} px ({plan.total_tiles} render tiles, about "
        f"{plan.estimated_bytes / 1e6:,.0f} MB) to {args.out}",
        file=sys.stderr,
    )
    renderer = _renderer(args, world, devices)
    if renderer is not None:
        if args.compile:
            renderer.close()
            raise ValueError("--compile renders on one device: leave out --devices and --ray")
        print(f"rendering on {renderer.label}", file=sys.stderr)
    elif args.compile and not world.can_compile:
        print(f"--compile has no effect on {world.device.type}", file=sys.stderr)
    elif args.compile and not args.resume:
        print("compiling the generator for this export's windows", file=sys.stderr)
    bar = ProgressLine(sys.stderr)
    stop = _StopOnInterrupt()
    with stop:
        try:
            path = run_export(
                world,
                job,
                resume=args.resume,
                on_progress=bar.update,
                should_stop=stop,
                model_ref=model_ref,
                render_tile=args.render_tile,
                compile=args.compile,
                renderer=renderer,
            )
        except ExportCancelled:
            bar.close()
            print(
                f"stopped; run the same command with --resume to continue ({args.out}.part)",
                file=sys.stderr,
            )
            return INTERRUPTED
        finally:
            bar.close()
            if renderer is not None:
                renderer.close()
    print(f"wrote {path}", file=sys.stderr)
    return 0


def _renderer(args: argparse.Namespace, world: Any, devices: Any) -> Any:
    """The TileRenderer of --devices or --ray; None for the world's own device."""
    if args.ray is not None:
        from engine.ray_tiles import RayTiles

        address = None if args.ray == "local" else args.ray
        precision = None if args.precision == "auto" else args.precision
        return RayTiles(world, address=address, precision=precision)
    if devices is not None and len(devices) > 1:
        from engine.tile_workers import TileWorkers

        return TileWorkers(world, devices)
    return None


def _world(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The World to export and how its model is named for the sidecar."""
    from engine import load_generator
    from engine.checkpoint import DEFAULT_CHECKPOINT, file_digest
    from engine.world import World

    if args.project is not None:
        if args.seed is not None or args.checkpoint is not None or args.preset is not None:
            raise ValueError("--project names the model and seed; drop --seed/--checkpoint")
        return _project_world(args)
    if args.checkpoint is not None and args.preset is not None:
        raise ValueError("give --checkpoint or --preset, not both")
    if args.checkpoint is not None:
        if not args.checkpoint.is_file():
            raise FileNotFoundError(2, "No such checkpoint", str(args.checkpoint))
        model_ref: dict[str, Any] = {
            "checkpoint": str(args.checkpoint.resolve()),
            "sha256": file_digest(args.checkpoint),
        }
    elif args.preset is not None:
        model_ref = {"preset": args.preset}
    elif DEFAULT_CHECKPOINT.exists():
        model_ref = {
            "checkpoint": str(DEFAULT_CHECKPOINT),
            "sha256": file_digest(DEFAULT_CHECKPOINT),
        }
    else:
        model_ref = {"default": "random lite weights (no shipped checkpoint)"}
    generator = load_generator(args.checkpoint, preset=args.preset, device=args.device)
    seed = 0 if args.seed is None else args.seed
    return World(generator, seed, precision=args.precision), model_ref


def _project_world(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from app.project import world_of_project

    world, ref = world_of_project(args.project, device=args.device, precision=args.precision)
    return world, {"project": str(args.project.resolve()), **ref.to_json()}


def _rect_text(rect: Any) -> str:
    return ",".join(str(v) for v in rect.as_tuple())


class _StopOnInterrupt:
    """`should_stop` for the export: True after Ctrl-C; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __call__(self) -> bool:
        return self.requested

    def __enter__(self) -> _StopOnInterrupt:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread (tests calling run from a worker)
            self._previous = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after the current tile (Ctrl-C again to abort)", file=sys.stderr)


class ProgressLine:
    """A one-line progress bar with ETA, redrawn with a carriage return at most 4 times/s."""

    WIDTH = 24

    def __init__(self, stream: Any, *, interval: float = 0.25) -> None:
        self.stream = stream
        self.interval = interval
        self._last = 0.0
        self._shown = False

    def update(self, p: Any) -> None:
        now = time.monotonic()
        if p.done_tiles < p.total_tiles and now - self._last < self.interval:
            return
        self._last = now
        filled = int(self.WIDTH * p.fraction)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        eta = "--:--" if p.eta_seconds is None else _duration(p.eta_seconds)
        line = (
            f"\r[{bar}] {100 * p.fraction:5.1f}%  {p.done_tiles}/{p.total_tiles} tiles  "
            f"{p.pixels / 1e6:,.1f}/{p.total_pixels / 1e6:,.1f} MP  "
            f"{_duration(p.seconds)} elapsed  ETA {eta} "
        )
        self.stream.write(line)
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
