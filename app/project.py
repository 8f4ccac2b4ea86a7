"""Project files (`.icanvas`): model reference, seed, view and edit log, as JSON. Qt-free.

A project never stores pixels: every pixel is a function of the model, the seed and the
edit log (DESIGN.md §2), so a project is a few kilobytes however much was explored.

    {
      "format": "infinity-canvas-project",
      "version": 2,
      "model": {"kind": "default"}                          # the shipped default model
             | {"kind": "preset", "preset": "lite"}         # random weights of a preset
             | {"kind": "file", "path": "/abs/m.safetensors", "sha256": "…"},
      "seed": 7,
      "view": {"center_x": 0.0, "center_y": 0.0, "zoom": 1.0},
      "styles": [{"id": 0, "name": "Base style", "style": null},     # the style gallery
                 {"id": 1, "name": "Dusk", "style": {"seed": 42}}, …],
      "edits": [{"kind": "reroll", "x": 3, "y": -2, "w": 4, "h": 3, "salt": 12345},
                {"kind": "style_stroke", "points": [[0, 0], [40, 8]], "radius": 64.0,
                 "softness": 0.5, "opacity": 1.0, "style": {"seed": 42}}, …]
    }

Version 1 files (before the style gallery) are read as well: they get the default gallery.

`load_project` validates everything at this one boundary and raises `ProjectError` (a
ValueError) with a message meant for the user; `save_project` writes atomically (a
temporary file in the same folder, then `os.replace`), so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.gallery import StyleGallery
from engine.checkpoint import file_digest
from engine.edits import Edit, edit_from_json
from engine.files import write_text_atomically
from engine.model import PRESETS

if TYPE_CHECKING:
    from engine.world import World

FORMAT = "infinity-canvas-project"
VERSION = 2
SUFFIX = ".icanvas"
MODEL_KINDS = ("default", "preset", "file")


class ProjectError(ValueError):
    """A project file cannot be used; the message says why in user terms."""


@dataclass(frozen=True, slots=True)
class ModelRef:
    """Which model a project renders with: the default, a preset's random weights, or a file."""

    kind: str = "default"
    preset: str | None = None
    path: Path | None = None
    sha256: str | None = None  # of the file's bytes (engine.checkpoint.file_digest)

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model kind must be one of {', '.join(MODEL_KINDS)}")
        if self.kind == "preset" and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; known: {', '.join(PRESETS)}")
        if self.kind == "file" and self.path is None:
            raise ValueError("a model file reference needs a path")

    @classmethod
    def default(cls) -> ModelRef:
        return cls("default")

    @classmethod
    def of_preset(cls, name: str) -> ModelRef:
        return cls("preset", preset=name)

    @classmethod
    def of_file(cls, path: str | Path, sha256: str | None = None) -> ModelRef:
        return cls("file", path=Path(path), sha256=sha256)

    def label(self) -> str:
        """A short name for menus and the status bar."""
        if self.kind == "default":
            return "Default model"
        if self.kind == "preset":
            return f"Random weights: {self.preset}"
        assert self.path is not None
        return self.path.stem

    def same_model(self, other: ModelRef) -> bool:
        """Whether both refer to the same model (files: same path, and same digest if known)."""
        if self.kind != other.kind:
            return False
        if self.kind == "file":
            assert self.path is not None and other.path is not None
            same_path = _resolved(self.path) == _resolved(other.path)
            digests = (self.sha256, other.sha256)
            return same_path and (None in digests or digests[0] == digests[1])
        return self.preset == other.preset

    def to_json(self) -> dict[str, Any]:
        if self.kind == "default":
            return {"kind": "default"}
        if self.kind == "preset":
            return {"kind": "preset", "preset": self.preset}
        return {"kind": "file", "path": str(self.path), "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class ProjectView:
    """The world point at the canvas centre (full-resolution px) and the zoom."""

    center_x: float = 0.0
    center_y: float = 0.0
    zoom: float = 1.0


@dataclass(frozen=True)
class Project:
    model: ModelRef = field(default_factory=ModelRef.default)
    seed: int = 0
    view: ProjectView = field(default_factory=ProjectView)
    edits: tuple[Edit, ...] = ()
    gallery: StyleGallery = field(default_factory=StyleGallery)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model.to_json(),
            "seed": self.seed,
            "view": {
                "center_x": self.view.center_x,
                "center_y": self.view.center_y,
                "zoom": self.view.zoom,
            },
            "styles": self.gallery.to_json(),
            "edits": [edit.to_json() for edit in self.edits],
        }


# Saving -------------------------------------------------------------------------------


def save_project(path: str | Path, project: Project) -> Path:
    """Write `project` to `path` atomically; returns the path. OSError if the folder is not
    writable."""
    path = Path(path)
    text = json.dumps(project.to_json(), indent=2, sort_keys=False) + "\n"
    return write_text_atomically(path, text)


# Loading ------------------------------------------------------------------------------


def load_project(path: str | Path) -> Project:
    """Read and validate a project file; ProjectError (a ValueError) says what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProjectError(f"{path} does not exist") from None
    except UnicodeDecodeError:
        raise ProjectError(f"{path.name} is not an Infinity Canvas project (not text)") from None
    except OSError as exc:
        raise ProjectError(f"{path.name} cannot be read: {exc.strerror or exc}") from None
    return parse_project(text, name=path.name)


def parse_project(text: str, *, name: str = "the project") -> Project:
    """Validate the JSON text of a project file; `name` is used in messages."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProjectError(
            f"{name} is not an Infinity Canvas project: it is not valid JSON "
            f"({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ProjectError(f"{name} is not an Infinity Canvas project (no '{FORMAT}' format tag)")
    version = raw.get("version")
    if type(version) is not int:
        raise ProjectError(f"{name} has no valid format version")
    if version > VERSION:
        raise ProjectError(
            f"{name} was saved by a newer Infinity Canvas (project format {version}); "
            f"this version reads format {VERSION} and older"
        )
    if version < 1:
        raise ProjectError(f"{name} has an unknown project format version {version}")
    return Project(
        model=_model(raw.get("model"), name),
        seed=_int(raw, "seed", name),
        view=_view(raw.get("view"), name),
        edits=_edits(raw.get("edits", []), name),
        gallery=_gallery(raw.get("styles"), version, name),
    )


def _gallery(raw: Any, version: int, name: str) -> StyleGallery:
    if version < 2 and raw is None:
        return StyleGallery()  # migration: version 1 had no style gallery
    try:
        return StyleGallery.from_json(raw)
    except ValueError as exc:
        raise ProjectError(f"{name}: the style gallery cannot be used: {exc}") from None


def _int(raw: dict[str, Any], key: str, name: str) -> int:
    value = raw.get(key)
    if type(value) is not int:
        raise ProjectError(f"{name}: '{key}' must be a whole number, got {value!r}")
    return value


def _number(raw: dict[str, Any], key: str, name: str) -> float:
    value = raw.get(key)
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ProjectError(f"{name}: view '{key}' must be a finite number, got {value!r}")
    return float(value)


def _model(raw: Any, name: str) -> ModelRef:
    if not isinstance(raw, dict):
        raise ProjectError(f"{name} does not say which model it uses ('model' is missing)")
    kind = raw.get("kind")
    if kind == "default":
        return ModelRef.default()
    if kind == "preset":
        preset = raw.get("preset")
        if preset not in PRESETS:
            raise ProjectError(
                f"{name} uses the unknown model preset {preset!r} (known: {', '.join(PRESETS)})"
            )
        return ModelRef.of_preset(preset)
    if kind == "file":
        path, sha = raw.get("path"), raw.get("sha256")
        if not isinstance(path, str) or not path:
            raise ProjectError(f"{name}: the model file reference has no path")
        if sha is not None and not (isinstance(sha, str) and len(sha) == 64):
            raise ProjectError(f"{name}: the model file's sha256 is malformed")
        return ModelRef.of_file(path, sha)
    raise ProjectError(f"{name} uses an unknown kind of model reference {kind!r}")


def _view(raw: Any, name: str) -> ProjectView:
    if raw is None:
        return ProjectView()
    if not isinstance(raw, dict):
        raise ProjectError(f"{name}: 'view' must be an object with center_x, center_y and zoom")
    zoom = _number(raw, "zoom", name)
    if zoom <= 0:
        raise ProjectError(f"{name}: view zoom must be positive, got {zoom}")
    return ProjectView(_number(raw, "center_x", name), _number(raw, "center_y", name), zoom)


def _edits(raw: Any, name: str) -> tuple[Edit, ...]:
    if not isinstance(raw, list):
        raise ProjectError(f"{name}: 'edits' must be a list")
    edits = []
    for i, item in enumerate(raw, start=1):
        try:
            edits.append(edit_from_json(item))
        except ValueError as exc:
            detail = str(exc)
            if detail.startswith("unknown edit"):
                kind = item.get("kind") if isinstance(item, dict) else item
                detail = f"unknown kind {kind!r} (made by a newer version or another application?)"
            raise ProjectError(f"{name}: edit {i} of {len(raw)} cannot be used: {detail}") from None
    return tuple(edits)


# Model checks -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelCheck:
    """Whether a project's model file is usable: `problem` is None when it is."""

    ref: ModelRef  # with the path that was found and its digest
    problem: str | None = None
    changed: bool = False  # the file exists but its bytes differ from the saved digest


def check_model(ref: ModelRef, project_dir: str | Path | None = None) -> ModelCheck:
    """Find a file reference's model and compare its digest with the saved one.

    A missing file is also looked for next to the project (a project folder that was moved
    with its model). Hashes the file, so call it off the UI thread for big models.
    """
    if ref.kind != "file":
        return ModelCheck(ref)
    assert ref.path is not None
    candidates = [ref.path]
    if project_dir is not None:
        candidates.append(Path(project_dir) / ref.path.name)
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        return ModelCheck(ref, f"The model file {ref.path} was not found.")
    digest = file_digest(found)
    resolved = ModelRef.of_file(found, digest)
    if ref.sha256 is not None and digest != ref.sha256:
        return ModelCheck(
            resolved,
            f"The model file {found} has changed since the project was saved "
            "(its contents differ), so the landscape would not look the same.",
            changed=True,
        )
    return ModelCheck(resolved)


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path


def world_of_project(
    path: Path, *, device: str = "auto", precision: str = "auto"
) -> tuple[World, ModelRef]:
    """Load a project's model (checked against its saved digest) and build its World with
    the project's seed and edits; ProjectError / ValueError / CheckpointError explain
    problems. Slow (loads a model): for commands, or off the UI thread."""
    from engine import load_generator, read_checkpoint
    from engine.world import World

    project = load_project(path)
    ref = project.model
    if ref.kind == "file":
        checked = check_model(ref, path.parent)
        if checked.problem is not None:
            raise ValueError(checked.problem)
        ref = checked.ref
        assert ref.path is not None
        generator = read_checkpoint(ref.path, device=device).generator
    elif ref.kind == "preset":
        generator = load_generator(preset=ref.preset, device=device)
    else:
        generator = load_generator(None, device=device)
    world = World(generator, project.seed, precision=precision)
    world.replace_edits(project.edits)
    return world, ref


def project_title(path: Path | None) -> str:
    return "Untitled" if path is None else path.stem


def with_suffix(path: str | Path) -> Path:
    """`path` with the `.icanvas` suffix added when it has none."""
    path = Path(path)
    return path if path.suffix == SUFFIX else path.with_name(path.name + SUFFIX)
