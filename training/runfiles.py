"""The run folder: every file written atomically, no pickle anywhere.

    RUN_DIR/
      config.json                      TrainConfig + ModelConfig (TrainConfig.to_json)
      metrics.jsonl                    one JSON object per line (see training.loop)
      samples/step_XXXXXX.png          fixed-seed grids
      checkpoints/step_XXXXXX.safetensors, latest.safetensors   EMA generator (+ D)
      state/                           everything `--resume` needs:
        models.safetensors             generator.*, discriminator.*, generator_ema.*
        optimizers.safetensors         g_optim.<param index>.<key>, d_optim.<...>
        rng.safetensors                torch generator states as uint8 tensors
        state.json                     counters, path-length mean, optimiser param groups
      STOP                             created by anyone to ask the run to stop

Files are written to a temporary name and moved into place with os.replace. The state
folder is written as `state.partial/` and swapped in (`state` -> `state.previous`,
`state.partial` -> `state`), so a crash at any moment leaves one complete state behind;
`read_state` falls back to `state.previous` if the swap was interrupted.
`metrics.jsonl` grows by appending whole lines with one write each (readers ignore an
incomplete last line); resuming rewrites it, atomically, without lines newer than the
resumed state.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from engine.files import replace_atomically, write_bytes_atomically, write_text_atomically
from training.config import TrainConfig

STATE_VERSION = 1
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
STOP_FILE = "STOP"
STATE_DIR = "state"


atomic_write_bytes = write_bytes_atomically
atomic_write_text = write_text_atomically


def atomic_save_tensors(
    path: Path, tensors: Mapping[str, Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """safetensors file written atomically; tensors are copied to contiguous CPU memory."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return replace_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_tensors(path: Path) -> dict[str, Tensor]:
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def save_png(path: Path, image: np.ndarray) -> Path:
    """uint8 [H, W, 3] -> PNG, atomically."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


# Config and metrics ----------------------------------------------------------------------


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    atomic_write_text(run_dir / CONFIG_FILE, cfg.to_json() + "\n")


def read_config(run_dir: Path) -> TrainConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} holds no training run ({CONFIG_FILE} missing)")
    return TrainConfig.from_json(path.read_text(encoding="utf-8"))


def append_metrics(run_dir: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line with a single write (non-finite numbers become null)."""
    line = json.dumps(_finite(record), allow_nan=False, sort_keys=False) + "\n"
    fd = os.open(run_dir / METRICS_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All complete records of metrics.jsonl (an incomplete last line is ignored)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop records of steps after `step` (written after the state being resumed)."""
    records = [r for r in read_metrics(run_dir) if r.get("step", 0) <= step]
    text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)
    atomic_write_text(run_dir / METRICS_FILE, text)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# Training state ---------------------------------------------------------------------------


@dataclass
class SavedState:
    """The training state as files hold it (CPU tensors, plain JSON values)."""

    models: dict[str, dict[str, Tensor]]  # "generator", "discriminator", "generator_ema"
    optimizers: dict[str, dict[str, Any]]  # name -> torch optimizer state_dict
    rng: dict[str, Tensor]  # name -> uint8 generator state
    info: dict[str, Any]  # counters and scalars (JSON)


def write_state(run_dir: Path, state: SavedState) -> Path:
    """Write the state folder (see module docstring for the swap); returns its path."""
    final = run_dir / STATE_DIR
    partial = run_dir / (STATE_DIR + ".partial")
    previous = run_dir / (STATE_DIR + ".previous")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    models = {f"{name}.{k}": v for name, sd in state.models.items() for k, v in sd.items()}
    atomic_save_tensors(partial / "models.safetensors", models)
    tensors, groups = {}, {}
    for name, sd in state.optimizers.items():
        for index, slots in sd["state"].items():
            for key, value in slots.items():
                tensors[f"{name}.{index}.{key}"] = (
                    value if torch.is_tensor(value) else torch.tensor(value)
                )
        groups[name] = sd["param_groups"]
    atomic_save_tensors(partial / "optimizers.safetensors", tensors)
    atomic_save_tensors(partial / "rng.safetensors", state.rng)
    info = {"version": STATE_VERSION, **state.info, "param_groups": groups}
    atomic_write_text(partial / "state.json", json.dumps(info, indent=2, allow_nan=False) + "\n")
    shutil.rmtree(previous, ignore_errors=True)
    if final.exists():
        os.replace(final, previous)
    os.replace(partial, final)
    shutil.rmtree(previous, ignore_errors=True)
    return final


def has_state(run_dir: Path) -> bool:
    return _state_dir(run_dir) is not None


def _state_dir(run_dir: Path) -> Path | None:
    for name in (STATE_DIR, STATE_DIR + ".previous"):
        folder = Path(run_dir) / name
        if (folder / "state.json").is_file():
            return folder
    return None


def read_state(run_dir: Path) -> SavedState:
    """Load the state folder; ValueError if it is missing or inconsistent."""
    folder = _state_dir(run_dir)
    if folder is None:
        raise ValueError(f"{run_dir} has no saved training state to resume")
    try:
        info = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        if info.get("version") != STATE_VERSION:
            raise ValueError(f"state version {info.get('version')} is not supported")
        models: dict[str, dict[str, Tensor]] = {}
        for key, value in load_tensors(folder / "models.safetensors").items():
            name, param = key.split(".", 1)
            models.setdefault(name, {})[param] = value
        optimizers: dict[str, dict[str, Any]] = {
            name: {"state": {}, "param_groups": groups}
            for name, groups in info.pop("param_groups").items()
        }
        for key, value in load_tensors(folder / "optimizers.safetensors").items():
            name, index, slot = key.split(".", 2)
            optimizers[name]["state"].setdefault(int(index), {})[slot] = value
        rng = load_tensors(folder / "rng.safetensors")
    except ValueError:
        raise
    except Exception as exc:  # safetensors reports damaged files with several exception types
        raise ValueError(f"the saved training state in {folder} is unreadable ({exc})") from exc
    return SavedState(models, optimizers, rng, info)
