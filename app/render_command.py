"""`infinity-canvas render`: one rectangle of a world (or of a saved project) to an image file.

infinity-canvas render --seed 7 --rect -960,-540,1920,1080 --out view.png
infinity-canvas render --project painted.icanvas --rect 0,0,800,400 --out painted.png
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from PIL import Image

from engine import load_generator
from engine.world import World

log = logging.getLogger(__name__)


def parse_rect(text: str) -> tuple[int, int, int, int]:
    """'X,Y,W,H' in world pixels -> ints; ValueError with the expected form otherwise."""
    parts = text.split(",")
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--rect must be X,Y,W,H in whole pixels, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"--rect width and height must be positive, got {text!r}")
    return x, y, w, h


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, help="world seed (default 0)")
    parser.add_argument(
        "--project",
        type=Path,
        help="project file (*.icanvas): renders its model, seed and edits (style strokes too)",
    )
    parser.add_argument(
        "--rect", required=True, help="X,Y,W,H in world pixels (y=0 is the horizon band)"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="output pixels per world pixel")
    parser.add_argument("--checkpoint", help="model checkpoint (default: the shipped model)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument(
        "--out", required=True, type=Path, help="output image (.png, .jpg, .tif, ...)"
    )


def run(args: argparse.Namespace) -> int:
    x, y, w, h = parse_rect(args.rect)
    if args.scale <= 0:
        raise ValueError("--scale must be positive")
    out_pixels = round(w * args.scale) * round(h * args.scale)
    if out_pixels > 400_000_000:
        raise ValueError("that image would exceed 400 megapixels; use `infinity-canvas export`")
    if not args.out.parent.exists():
        raise FileNotFoundError(2, "No such folder", str(args.out.parent))
    if args.project is not None:
        from app.project import world_of_project

        if args.seed is not None or args.checkpoint is not None:
            raise ValueError("--project names the model and seed; drop --seed/--checkpoint")
        world, _ = world_of_project(args.project, device=args.device, precision=args.precision)
    else:
        seed = 0 if args.seed is None else args.seed
        generator = load_generator(args.checkpoint, device=args.device)
        world = World(generator, seed, precision=args.precision)
    rgb = world.render((x, y, w, h), args.scale)
    Image.fromarray(rgb).save(args.out)
    log.info("wrote %s (%d x %d)", args.out, rgb.shape[1], rgb.shape[0])
    return 0
