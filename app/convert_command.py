"""`infinity-canvas convert-official`: turn an official InfinityGAN `.pth.tar` into our format.

The engine is imported inside `run`, so that `--help` and argument errors stay fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

GENERATORS = ("g_ema", "g")  # engine.official.GENERATORS, repeated to keep --help torch-free


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the `convert-official` sub-command."""
    parser.add_argument(
        "input",
        type=Path,
        metavar="IN.pth.tar",
        help="official checkpoint (read without unpickling code)",
    )
    parser.add_argument("output", type=Path, metavar="OUT.safetensors", help="checkpoint to write")
    parser.add_argument(
        "--generator",
        choices=GENERATORS,
        default="g_ema",
        help="g_ema: the moving-average weights the official code renders with (default); "
        "g: the raw training weights",
    )
    parser.add_argument(
        "--no-discriminator",
        action="store_true",
        help="leave the discriminator out (it is only needed to fine-tune or invert)",
    )


def run(args: argparse.Namespace) -> int:
    """Convert, then re-open the written file through the normal loader and print a summary.

    Raises CheckpointError (a ValueError) for files that cannot be converted.
    """
    from engine.checkpoint import read_checkpoint
    from engine.official import convert_official_file

    out = convert_official_file(
        args.input,
        args.output,
        which=args.generator,
        with_discriminator=not args.no_discriminator,
    )
    written = read_checkpoint(out, with_discriminator=True)
    config = written.generator.config
    g_params = sum(p.numel() for p in written.generator.parameters())
    d_text = "no discriminator"
    if written.discriminator is not None:
        d_params = sum(p.numel() for p in written.discriminator.parameters())
        d_text = f"discriminator {d_params:,} parameters"
    print(
        f"wrote {out}: preset {config.preset} (z_g {config.global_dim}, z_l {config.local_dim}, "
        f"texture {'/'.join(map(str, config.texture_channels))}, {config.patch_size}-px patches), "
        f"generator {args.generator} {g_params:,} parameters, {d_text}, "
        f"iteration {written.provenance.get('steps', 0):,}"
    )
    return 0
