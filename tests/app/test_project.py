"""Project files: round trip, atomic writes, clear errors for bad files, model checks."""

from __future__ import annotations

import json

import pytest

from app.project import (
    FORMAT,
    VERSION,
    ModelRef,
    Project,
    ProjectError,
    ProjectView,
    check_model,
    load_project,
    save_project,
    with_suffix,
)
from engine.checkpoint import file_digest
from engine.edits import RerollRegion


def sample(**overrides) -> Project:
    fields = {
        "model": ModelRef.of_preset("tiny"),
        "seed": 1234,
        "view": ProjectView(-1536.5, 40.25, 0.125),
        "edits": (RerollRegion(3, -2, 4, 3, 99), RerollRegion(-10, 0, 1, 1, 7)),
    }
    return Project(**(fields | overrides))


def write(tmp_path, data, name="p.icanvas"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "model",
    [
        ModelRef.default(),
        ModelRef.of_preset("lite"),
        ModelRef.of_file("/models/m.safetensors", "a" * 64),
    ],
)
def test_project_round_trips_exactly(tmp_path, model):
    project = sample(model=model)
    path = save_project(tmp_path / "p.icanvas", project)
    assert load_project(path) == project


def test_saved_project_is_small_readable_json_without_pixels(tmp_path):
    path = save_project(tmp_path / "p.icanvas", sample())
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT and data["version"] == VERSION
    assert data["edits"][0] == {"kind": "reroll", "x": 3, "y": -2, "w": 4, "h": 3, "salt": 99}
    assert path.stat().st_size < 2000


def test_save_replaces_atomically_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "p.icanvas"
    save_project(path, sample(seed=1))
    save_project(path, sample(seed=2))
    assert load_project(path).seed == 2
    assert [p.name for p in tmp_path.iterdir()] == ["p.icanvas"]


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_project(tmp_path / "p.icanvas", sample(seed=1))

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr("engine.files.os.replace", broken)
    with pytest.raises(OSError):
        save_project(path, sample(seed=2))
    assert load_project(path).seed == 1
    assert [p.name for p in tmp_path.iterdir()] == ["p.icanvas"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not an Infinity Canvas project"),
        ({"format": "something-else"}, "not an Infinity Canvas project"),
        ({"format": FORMAT, "version": 99}, "newer Infinity Canvas (project format 99)"),
        ({"format": FORMAT, "version": "1"}, "no valid format version"),
        ({"format": FORMAT, "version": 1, "seed": 1}, "does not say which model"),
        (
            {"format": FORMAT, "version": 1, "model": {"kind": "preset", "preset": "huge"}},
            "unknown model preset 'huge'",
        ),
        (
            {"format": FORMAT, "version": 1, "model": {"kind": "default"}, "seed": 1.5},
            "'seed' must be a whole number",
        ),
        (
            {
                "format": FORMAT,
                "version": 1,
                "model": {"kind": "default"},
                "seed": 1,
                "view": {"center_x": 0, "center_y": 0, "zoom": -1},
            },
            "zoom must be positive",
        ),
        (
            {
                "format": FORMAT,
                "version": 1,
                "model": {"kind": "default"},
                "seed": 1,
                "edits": [{"kind": "paint", "x": 0}],
            },
            "edit 1 of 1 cannot be used: unknown kind 'paint'",
        ),
        (
            {
                "format": FORMAT,
                "version": 1,
                "model": {"kind": "default"},
                "seed": 1,
                "edits": [{"kind": "reroll", "x": 0}],
            },
            "malformed reroll edit",
        ),
    ],
)
def test_bad_project_files_raise_value_error_saying_what_is_wrong(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(ValueError, match="p.icanvas") as info:
        load_project(path)
    assert isinstance(info.value, ProjectError)
    assert message in str(info.value)


def test_missing_project_file_is_a_clear_error(tmp_path):
    with pytest.raises(ProjectError, match="does not exist"):
        load_project(tmp_path / "nope.icanvas")


def test_binary_file_is_not_a_project(tmp_path):
    path = tmp_path / "p.icanvas"
    path.write_bytes(b"\x80\x02\xff\xfe")
    with pytest.raises(ProjectError, match="not an Infinity Canvas project"):
        load_project(path)


def test_check_model_accepts_an_unchanged_file(tmp_path):
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"weights")
    check = check_model(ModelRef.of_file(model, file_digest(model)))
    assert check.problem is None
    assert check.ref.sha256 == file_digest(model)


def test_check_model_reports_a_missing_file(tmp_path):
    check = check_model(ModelRef.of_file(tmp_path / "gone.safetensors", "0" * 64))
    assert "was not found" in check.problem
    assert not check.changed


def test_check_model_reports_a_changed_file(tmp_path):
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"weights")
    check = check_model(ModelRef.of_file(model, "0" * 64))
    assert check.changed
    assert "has changed since the project was saved" in check.problem


def test_check_model_finds_a_model_moved_with_its_project(tmp_path):
    (tmp_path / "m.safetensors").write_bytes(b"weights")
    ref = ModelRef.of_file("/elsewhere/m.safetensors", file_digest(tmp_path / "m.safetensors"))
    check = check_model(ref, tmp_path)
    assert check.problem is None
    assert check.ref.path == tmp_path / "m.safetensors"


def test_same_model_compares_files_by_path_and_digest(tmp_path):
    a = ModelRef.of_file(tmp_path / "m.safetensors", "a" * 64)
    assert a.same_model(ModelRef.of_file(tmp_path / "m.safetensors"))
    assert not a.same_model(ModelRef.of_file(tmp_path / "m.safetensors", "b" * 64))
    assert not a.same_model(ModelRef.default())
    assert ModelRef.of_preset("tiny").same_model(ModelRef.of_preset("tiny"))


def test_with_suffix_adds_the_project_suffix_once():
    assert with_suffix("a/b").name == "b.icanvas"
    assert with_suffix("a/b.icanvas").name == "b.icanvas"
