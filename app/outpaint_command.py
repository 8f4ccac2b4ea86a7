"""`infinity-canvas outpaint`: place a photo in a world by inversion, save the project.

    infinity-canvas outpaint --photo beach.jpg --at=0,-128,256,256 --seed 7 \\
        --project-out beach.icanvas --render " -512,-384,1280,768" around.png

The photo is inverted at world pixels X,Y (its top-left corner), W x H (default: its own
size, at most the largest placement), the placement edit is appended to the project
(a new one, or --project's edits and model), written atomically to --project-out, and
--render renders a rectangle of the result. `infinity-canvas render --project` renders
it again later. Ctrl+C stops the inversion and writes nothing. The engine and the project
module are imported inside `run`, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def parse_at(text: str) -> tuple[int, int, int | None, int | None]:
    """'X,Y' or 'X,Y,W,H' in world pixels; ValueError naming --at otherwise."""
    parts = text.split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 2:
        return values[0], values[1], None, None
    if len(values) == 4 and values[2] > 0 and values[3] > 0:
        return values[0], values[1], values[2], values[3]
    raise ValueError(f"--at must be X,Y or X,Y,W,H in whole pixels (W, H > 0), got {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--photo", required=True, type=Path, help="PNG, JPEG, WebP or TIFF")
    parser.add_argument(
        "--at", required=True, help="X,Y[,W,H]: the photo's world rectangle (default size: its own)"
    )
    parser.add_argument("--project-out", required=True, type=Path, help="project file to write")
    parser.add_argument("--project", type=Path, help="start from this project (model, seed, edits)")
    parser.add_argument("--seed", type=int, help="world seed of a new project (default 0)")
    model = parser.add_mutually_exclusive_group()
    model.add_argument(
        "--checkpoint", type=Path, help="model checkpoint (default: the shipped one)"
    )
    model.add_argument("--preset", help="random weights of a preset (tiny, lite, paper): tests")
    parser.add_argument("--steps", type=int, help="optimisation steps (default 100)")
    parser.add_argument(
        "--show-photo", action="store_true", help="show the photo's own pixels, feathered"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument(
        "--render",
        nargs=2,
        metavar=("X,Y,W,H", "OUT"),
        help="also render this rectangle to OUT (a rectangle starting at a negative "
        "coordinate needs quotes and a leading space: ' -512,-384,1280,768')",
    )


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from PIL import Image

    from app.project import ModelRef, Project, load_project, save_project, world_of_project
    from app.render_command import parse_rect
    from engine import InversionSettings, World, invert_photo, load_generator, load_photo
    from engine.checkpoint import file_digest, read_checkpoint
    from engine.inversion import MAX_PLACEMENT_SIDE

    x, y, w, h = parse_at(args.at)
    render = None
    if args.render is not None:
        render = (parse_rect(args.render[0]), Path(args.render[1]))
        if not render[1].parent.exists():
            raise FileNotFoundError(2, "No such folder", str(render[1].parent))
    if not args.project_out.parent.exists():
        raise FileNotFoundError(2, "No such folder", str(args.project_out.parent))
    settings = InversionSettings()
    if args.steps is not None:
        settings = dataclasses.replace(settings, steps=args.steps)  # validates
    photo = load_photo(args.photo)  # PhotoError (a ValueError) with the user's message
    for notice in photo.notices:
        log.info("%s: %s", photo.name, notice)
    if w is None or h is None:
        pw, ph = photo.size
        factor = min(1.0, MAX_PLACEMENT_SIDE / max(pw, ph))
        w, h = max(1, round(pw * factor)), max(1, round(ph * factor))

    discriminator = None
    base: dict[str, Any] = {}
    if args.project is not None:
        if args.seed is not None or args.checkpoint or args.preset:
            raise ValueError(
                "--project names the model and seed; drop --seed/--checkpoint/--preset"
            )
        world, ref = world_of_project(args.project, device=args.device, precision=args.precision)
        project = load_project(args.project)
        base = {"view": project.view, "gallery": project.gallery}
    else:
        if args.checkpoint is not None:
            checkpoint = read_checkpoint(
                args.checkpoint, device=args.device, with_discriminator=True
            )
            generator, discriminator = checkpoint.generator, checkpoint.discriminator
            ref = ModelRef.of_file(args.checkpoint.resolve(), file_digest(args.checkpoint))
        elif args.preset is not None:
            generator = load_generator(preset=args.preset, device=args.device)
            ref = ModelRef.of_preset(args.preset)
        else:
            generator = load_generator(None, device=args.device)
            ref = ModelRef.default()
        world = World(generator, 0 if args.seed is None else args.seed, precision=args.precision)

    last = [0.0]

    def progress(p) -> None:
        now = time.monotonic()
        if now - last[0] > 0.5 or p.step == p.steps:
            last[0] = now
            end = "\n" if p.step == p.steps else ""
            sys.stderr.write(
                f"\rinverting {photo.name}: step {p.step}/{p.steps}, loss {p.loss:.4f}, "
                f"{p.psnr:.1f} dB, {p.elapsed_s:.0f} s{end}"
            )
            sys.stderr.flush()

    placement = invert_photo(
        world, photo, (x, y, w, h), settings=settings, discriminator=discriminator,
        on_progress=progress,
    )  # fmt: skip
    assert placement is not None  # nothing asks it to stop; Ctrl+C raises KeyboardInterrupt
    if args.show_photo:
        placement = placement.with_photo_shown(True)
    world.apply(placement)
    project = Project(model=ref, seed=world.seed, edits=world.edits, **base)
    save_project(args.project_out, project)
    log.info("wrote %s (PSNR %.2f dB)", args.project_out, placement.psnr)
    if render is not None:
        rgb = world.render(render[0])
        Image.fromarray(rgb).save(render[1])
        log.info("wrote %s (%d x %d)", render[1], rgb.shape[1], rgb.shape[0])
    return 0
