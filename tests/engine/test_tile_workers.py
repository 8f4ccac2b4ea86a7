"""Several render workers: exports identical to one device's, tiles in order, errors, stop."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from app import cli
from engine import load_generator
from engine.device import resolve_devices
from engine.edits import RerollRegion, StyleStroke
from engine.export import ExportJob, run_export
from engine.styles import Style
from engine.tile_workers import TileWorkers
from engine.tiles import Rect
from engine.world import World

RECT = Rect(-192, -100, 384, 200)
# 3 x 2 render tiles (the last row clipped), large enough that torch splits their work over
# threads: a worker with another thread count would round some pixels differently
RENDER_TILE = 128


@pytest.fixture(scope="module")
def generator():
    return load_generator(preset="tiny", device="cpu")


@pytest.fixture
def world(generator):
    world = World(generator, seed=3, precision="fp32")
    world.apply(RerollRegion(-4, -3, 5, 4, salt=5))
    world.apply(StyleStroke(((-100, 0), (80, 30)), 60, 0.5, 1.0, Style.from_seed(9)))
    return world


@pytest.mark.parametrize("name", ["one.tif", "one.png"])
def test_export_with_two_cpu_workers_is_byte_identical_to_one_device(world, tmp_path, name):
    job_one = ExportJob(RECT, tmp_path / name)
    one = run_export(world, job_one, render_tile=RENDER_TILE).read_bytes()
    workers = TileWorkers(world, resolve_devices("cpu,cpu"))
    job_two = ExportJob(RECT, tmp_path / f"two{job_one.out.suffix}")
    two = run_export(world, job_two, render_tile=RENDER_TILE, renderer=workers).read_bytes()
    assert two == one
    assert workers.replicas[0] is world and workers.replicas[1].generator is not world.generator


def test_workers_hand_tiles_back_in_order_with_bounded_jobs_in_flight(world):
    rects = [Rect(x, y, 48, 32) for y in (-64, 0) for x in range(-96, 96, 48)]
    expected = [world.render(r) for r in rects]
    workers = TileWorkers(world, resolve_devices("cpu,cpu,cpu"), in_flight=2)
    started: list[int] = []
    for replica in workers.replicas:
        original = replica.render_lod_float

        def spy(rects_, lod, edits=None, original=original):
            started.append(rects.index(rects_[0]))
            return original(rects_, lod, edits)

        replica.render_lod_float = spy
    tiles = []
    for i, tile in enumerate(workers.render_in_order(rects, 0, world.edits)):
        assert max(started) <= i + 2  # never more than in_flight jobs past the oldest
        tiles.append(tile)
    assert all(np.array_equal(t, e) for t, e in zip(tiles, expected, strict=True))
    assert sorted(started) == list(range(len(rects)))


def test_a_worker_error_reaches_the_caller_and_every_worker_stops(world):
    workers = TileWorkers(world, resolve_devices("cpu,cpu"))
    broken = workers.replicas[1]

    def fail(*args, **kwargs):
        raise RuntimeError("device lost")

    broken.render_lod_float = fail
    rects = [Rect(x, 0, 32, 32) for x in range(0, 320, 32)]
    with pytest.raises(RuntimeError, match="device lost"):
        list(workers.render_in_order(rects, 0, ()))
    assert not [t for t in threading.enumerate() if t.name.startswith("tile-worker")]


def test_closing_the_iterator_early_joins_the_workers_and_restores_torch_threads(world):
    before = torch.get_num_threads()
    workers = TileWorkers(world, resolve_devices("cpu,cpu"))
    tiles = workers.render_in_order([Rect(x, 0, 32, 32) for x in range(0, 640, 32)], 0, ())
    next(tiles)
    tiles.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("tile-worker")]
    assert torch.get_num_threads() == before


def test_device_lists_are_parsed_and_bad_ones_refused():
    assert resolve_devices("cpu,cpu") == [torch.device("cpu")] * 2
    assert resolve_devices(["cpu"]) == [torch.device("cpu")]
    if not torch.cuda.is_available():
        assert resolve_devices("all") == [resolve_devices("auto")[0]]
    for bad, message in [
        ("cpu,", "empty entry"),
        ("all,cpu", "cannot be combined"),
        ("tpu", "unknown device"),
    ]:
        with pytest.raises(ValueError, match=message):
            resolve_devices(bad)


def test_export_command_with_devices_writes_the_same_file(tmp_path, capsys):
    common = ["export", "--preset", "tiny", "--seed", "4", "--rect=-64,-48,200,96"]
    common += ["--render-tile", "64", "--precision", "fp32"]
    assert cli.main([*common, "--out", str(tmp_path / "one.tif")]) == 0
    assert cli.main([*common, "--devices", "cpu,cpu", "--out", str(tmp_path / "two.tif")]) == 0
    assert "2 devices: cpu, cpu" in capsys.readouterr().err
    assert (tmp_path / "two.tif").read_bytes() == (tmp_path / "one.tif").read_bytes()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_one_gpu_renders_a_tile_ahead_with_the_same_bytes_and_stops():
    from engine.tile_workers import SingleDevice, render_tile

    world = World(load_generator(preset="lite", seed=0, device="cuda"), seed=3)
    world.apply(RerollRegion(-4, -3, 5, 4, salt=5))
    rects = [Rect(-700 + 512 * i, 300, 512, 256) for i in range(4)]
    alone = [render_tile(world, r, 0, world.edits) for r in rects]
    queued = list(SingleDevice(world).render_in_order(rects, 0, world.edits))
    assert all(np.array_equal(a, b) for a, b in zip(alone, queued, strict=True))
    handed: list[np.ndarray] = []
    for pixels in SingleDevice(world).render_in_order(rects, 0, world.edits, lambda: handed):
        handed.append(pixels)  # the stop is seen before the next tile is queued or handed
    assert len(handed) == 1 and np.array_equal(handed[0], alone[0])
