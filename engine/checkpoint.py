"""Checkpoints: safetensors with the model config and provenance in the metadata.

One load boundary: every checkpoint goes through `read_checkpoint`, which parses the
file without executing anything, rebuilds the model from the stored config, loads the
tensors strictly and turns every mismatch into a message a user understands.

File layout: tensors `generator.<param>` (and optionally `discriminator.<param>`);
metadata keys `format`, `config` (ModelConfig JSON) and `provenance` (JSON object).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from safetensors.torch import save_file
from torch import nn

from engine.device import resolve_device, warming_up
from engine.files import replace_atomically
from engine.model import Discriminator, Generator, ModelConfig, preset_config

log = logging.getLogger(__name__)

FORMAT = "infinity-canvas/1"
ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"  # works for editable installs
DEFAULT_CHECKPOINT = ASSETS_DIR / "default.safetensors"


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message says why in user terms."""


@dataclass(frozen=True)
class Provenance:
    """Where a checkpoint came from; saved beside the config."""

    preset: str
    steps: int = 0
    dataset: str = ""
    source: str = "infinity-canvas"
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    notes: str = ""


@dataclass
class Checkpoint:
    """A loaded checkpoint: the generator (eval mode), its provenance, maybe a discriminator."""

    generator: Generator
    provenance: dict
    discriminator: Discriminator | None = None
    path: Path | None = None


def save_checkpoint(
    path: str | Path,
    generator: Generator,
    provenance: Provenance,
    *,
    discriminator: Discriminator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write generator (and discriminator) weights atomically; returns the path."""
    path = Path(path)
    tensors = _prefixed("generator", generator, dtype)
    if discriminator is not None:
        tensors |= _prefixed("discriminator", discriminator, dtype)
    metadata = {
        "format": FORMAT,
        "config": generator.config.to_json(),
        "provenance": json.dumps(asdict(provenance), sort_keys=True),
    }
    return replace_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _prefixed(prefix: str, module: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.{name}": t.detach().to("cpu", dtype).contiguous()
        for name, t in module.state_dict().items()
    }


def read_checkpoint(
    path: str | Path, *, device: str | torch.device = "cpu", with_discriminator: bool = False
) -> Checkpoint:
    """Load and validate a checkpoint; raises CheckpointError with a clear message."""
    device = resolve_device(device)
    with warming_up(device):  # the GPU gets ready while the file is read
        return _read_checkpoint(Path(path), device, with_discriminator)


def _read_checkpoint(path: Path, device: torch.device, with_discriminator: bool) -> Checkpoint:
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    from engine.official import looks_like_official  # engine.official imports this module

    if looks_like_official(path):
        raise CheckpointError(
            f"{path.name} is an official InfinityGAN checkpoint; convert it first with "
            f"`infinity-canvas convert-official {path.name} OUT.safetensors`"
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            names = list(f.keys())
            config, provenance = _parse_metadata(path, metadata)
            wanted = [n for n in names if n.startswith("generator.")]
            if with_discriminator:
                wanted += [n for n in names if n.startswith("discriminator.")]
            tensors = {n: f.get_tensor(n) for n in wanted}
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors reports corrupt files with several exception types
        raise CheckpointError(
            f"{path.name} is not a readable Infinity Canvas checkpoint (it may be truncated "
            f"or in another format): {exc}"
        ) from exc

    generator = Generator(config)
    _load_strict(generator, _unprefixed("generator", tensors), path, "generator")
    discriminator = None
    if with_discriminator and any(n.startswith("discriminator.") for n in tensors):
        discriminator = Discriminator(config)
        _load_strict(discriminator, _unprefixed("discriminator", tensors), path, "discriminator")
    generator = _ready(generator, device)
    if discriminator is not None:
        discriminator = discriminator.to(device)
    return Checkpoint(generator, provenance, discriminator, path)


def _parse_metadata(path: Path, metadata: dict[str, str]) -> tuple[ModelConfig, dict]:
    fmt = metadata.get("format")
    if fmt != FORMAT:
        raise CheckpointError(
            f"{path.name} is a safetensors file but not an Infinity Canvas checkpoint "
            f"(format {fmt!r}, expected {FORMAT!r}); official InfinityGAN files must be "
            "converted first"
        )
    try:
        config = ModelConfig.from_json(metadata["config"])
        provenance = json.loads(metadata.get("provenance", "{}"))
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path.name} has an unusable model config: {exc}") from exc
    return config, provenance


def _unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    cut = len(prefix) + 1
    return {n[cut:]: t.float() for n, t in tensors.items() if n.startswith(prefix + ".")}


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{n} is {tuple(state[n].shape)}, config says {tuple(expected[n].shape)}"
        for n in expected
        if n in state and state[n].shape != expected[n].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        problems.append("shape mismatch: " + "; ".join(wrong[:3]))
    if problems:
        raise CheckpointError(
            f"{path.name}: the {what} tensors do not match the stored config — "
            + ", ".join(problems)
        )
    module.load_state_dict(state, strict=True)


def _ready(generator: Generator, device: torch.device) -> Generator:
    generator = generator.to(device).eval()
    generator.requires_grad_(False)
    return generator


def load_generator(
    path: str | Path | None = None,
    *,
    preset: str | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
) -> Generator:
    """A generator ready for inference (eval mode, no grad) with `.config`.

    - `path`: any checkpoint (validated, clear CheckpointError otherwise);
    - `preset` without a path: random weights drawn from `seed` (tests, benchmarks);
    - neither: the default checkpoint shipped in assets/ (random `lite` weights with a
      warning while no trained default exists).
    """
    device = resolve_device(device)
    if path is not None:
        return read_checkpoint(path, device=device).generator
    if preset is None:
        if DEFAULT_CHECKPOINT.exists():
            return read_checkpoint(DEFAULT_CHECKPOINT, device=device).generator
        log.warning("no default checkpoint in %s: using random 'lite' weights", ASSETS_DIR)
        preset = "lite"
    return random_generator(preset_config(preset), seed=seed, device=device)


def random_generator(
    config: ModelConfig, *, seed: int = 0, device: str | torch.device = "cpu"
) -> Generator:
    """Generator with the training initialisation drawn from `seed` (same on every device)."""
    device = resolve_device(device)
    with warming_up(device):  # the GPU gets ready while the weights are drawn
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            generator = Generator(config)
        return _ready(generator, device)


def generator_bytes(generator: Generator) -> bytes:
    """A generator's config and float32 weights as safetensors bytes (to send to another
    machine, e.g. a Ray task); `generator_from_bytes` reads them back exactly."""
    metadata = {"format": FORMAT, "config": generator.config.to_json()}
    return save_tensors(_prefixed("generator", generator, torch.float32), metadata=metadata)


def generator_from_bytes(data: bytes, *, device: str | torch.device = "cpu") -> Generator:
    """The generator of `generator_bytes` output, ready for inference on `device`; the
    same validation as a checkpoint file (CheckpointError)."""
    where = Path("generator bytes")
    try:
        header_size = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_size]).get("__metadata__") or {}
        tensors = load_tensors(data)
    except Exception as exc:  # safetensors reports bad data with several exception types
        raise CheckpointError(f"unreadable generator bytes: {exc}") from exc
    config, _ = _parse_metadata(where, metadata)
    device = resolve_device(device)
    with warming_up(device):  # the GPU gets ready while the weights are set
        generator = Generator(config)
        _load_strict(generator, _unprefixed("generator", tensors), where, "generator")
        return _ready(generator, device)


def file_digest(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes (identifies a model in project files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
