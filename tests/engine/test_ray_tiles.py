"""Exports on a Ray cluster (a local Ray instance on the CPU): the same file as one device.

Skipped where Ray is not installed (it is the optional `distributed` extra, not part of
`test`: starting Ray takes several seconds on a small machine).
"""

from __future__ import annotations

import pytest

from engine import load_generator
from engine.checkpoint import generator_bytes, generator_from_bytes
from engine.edits import RerollRegion, StyleStroke
from engine.export import ExportCancelled, ExportJob, run_export
from engine.styles import Style
from engine.tiles import Rect
from engine.world import World

ray = pytest.importorskip("ray")

from engine.ray_tiles import RayTiles  # noqa: E402 - after the skip

RECT = Rect(-192, -100, 384, 200)  # 3 x 2 render tiles of 128 (see test_tile_workers)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def world():
    world = World(load_generator(preset="tiny", device="cpu"), seed=3, precision="fp32")
    world.apply(RerollRegion(-4, -3, 5, 4, salt=5))
    world.apply(StyleStroke(((-100, 0), (80, 30)), 60, 0.5, 1.0, Style.from_seed(9)))
    return world


def test_ray_export_is_byte_identical_to_a_one_device_export(local_ray, world, tmp_path):
    one = run_export(world, ExportJob(RECT, tmp_path / "one.tif"), render_tile=128)
    renderer = RayTiles(world, in_flight=3)
    assert renderer.label == "Ray cluster (2 CPUs)"
    two = run_export(
        world, ExportJob(RECT, tmp_path / "ray.tif"), render_tile=128, renderer=renderer
    )
    assert two.read_bytes() == one.read_bytes()
    renderer.close()
    assert ray.is_initialized()  # it did not start this instance, so it leaves it running


def test_cancel_during_a_ray_export_stops_and_resumes_to_the_same_file(local_ray, world, tmp_path):
    renderer = RayTiles(world)
    calls = 0

    def stop_after_three() -> bool:
        nonlocal calls
        calls += 1
        return calls > 3

    job = ExportJob(RECT, tmp_path / "r.png")
    with pytest.raises(ExportCancelled):
        run_export(world, job, render_tile=128, renderer=renderer, should_stop=stop_after_three)
    resumed = run_export(world, job, render_tile=128, renderer=renderer, resume=True)
    one = run_export(world, ExportJob(RECT, tmp_path / "one.png"), render_tile=128)
    assert resumed.read_bytes() == one.read_bytes()


def test_generator_bytes_round_trip_exactly():
    generator = load_generator(preset="tiny", device="cpu")
    copy = generator_from_bytes(generator_bytes(generator))
    assert copy.config == generator.config
    for (name, a), (_, b) in zip(
        generator.state_dict().items(), copy.state_dict().items(), strict=True
    ):
        assert (a == b).all(), name


def test_export_command_on_ray_writes_the_same_file(local_ray, tmp_path, capsys):
    from app import cli

    common = ["export", "--preset", "tiny", "--seed", "4", "--rect=-64,-48,200,96"]
    common += ["--render-tile", "64", "--precision", "fp32"]
    assert cli.main([*common, "--out", str(tmp_path / "one.tif")]) == 0
    assert cli.main([*common, "--ray", "local", "--out", str(tmp_path / "ray.tif")]) == 0
    assert "rendering on Ray cluster (2 CPUs)" in capsys.readouterr().err
    assert (tmp_path / "ray.tif").read_bytes() == (tmp_path / "one.tif").read_bytes()
    assert ray.is_initialized()
