"""`python -m engine.inversion_bench`: how long placing a photo takes, and how well it fits.

Inverts a SIZE x SIZE image the model itself generated (another world's style, local
latents and noise at the same place: the latents are known to exist) with the default
settings, on random weights of PRESET (the cost does not depend on the weights), and
reports the time per step, the total, and the reconstruction PSNR of the rendered world
after the placement is applied. `--threads` sets torch's CPU threads (default: as the GUI
does, all cores but one, at least one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass

import torch

from engine.checkpoint import load_generator
from engine.inversion import InversionSettings, invert_photo, psnr
from engine.photo import Photo
from engine.tiles import Rect
from engine.world import World


@dataclass(frozen=True)
class InversionBenchResult:
    preset: str
    device: str
    precision: str
    size: int
    steps: int
    torch_threads: int
    total_s: float
    step_s: float
    psnr_start_db: float  # the world before the placement, against the target
    psnr_db: float  # the world with the placement, against the target


def _as_float(rgb) -> torch.Tensor:
    return torch.from_numpy(rgb.astype("float32")) / 127.5 - 1


def run(
    preset: str = "lite",
    size: int = 256,
    steps: int | None = None,
    device: str = "cpu",
    precision: str = "auto",
) -> InversionBenchResult:
    generator = load_generator(preset=preset, device=device)
    rect = Rect(-size // 2, -size // 2, size, size)
    target = World(generator, seed=1, precision=precision).render(rect)
    world = World(generator, seed=0, precision=precision)
    settings = InversionSettings()
    if steps is not None:
        settings = dataclasses.replace(settings, steps=steps)
    start_db = psnr(_as_float(world.render(rect)), _as_float(target))
    t0 = time.perf_counter()
    placement = invert_photo(world, Photo(target), rect, settings=settings)
    total = time.perf_counter() - t0
    assert placement is not None
    world.apply(placement)
    after = psnr(_as_float(world.render(rect)), _as_float(target))
    return InversionBenchResult(
        preset,
        str(world.device),
        str(world.dtype).removeprefix("torch."),
        size,
        settings.steps,
        torch.get_num_threads(),
        round(total, 2),
        round(total / settings.steps, 3),
        round(start_db, 2),
        round(after, 2),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.inversion_bench", description=__doc__)
    parser.add_argument("--preset", default="lite")
    parser.add_argument("--size", type=int, default=256, help="side of the photo, world px")
    parser.add_argument("--steps", type=int, help="optimisation steps (default: the default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    result = run(args.preset, args.size, args.steps, args.device, args.precision)
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        sys.stdout.write(
            f"{result.preset} {result.size}x{result.size} on {result.device} "
            f"({result.precision}, {result.torch_threads} threads): {result.steps} steps in "
            f"{result.total_s:.1f} s ({result.step_s:.2f} s/step); PSNR "
            f"{result.psnr_start_db:.1f} -> {result.psnr_db:.1f} dB\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
