"""TileScheduler: newest view wins, visible first, cache in front, errors as values.

Most tests drive a fake world whose pixels encode their position (so a tile cut from a
larger window can be checked) and whose render can be slowed, blocked or made to fail;
the last ones run the real tiny engine.
"""

import threading
import time

import numpy as np
import pytest
import torch

import engine
from engine.cache import TileCache
from engine.edits import RerollRegion, edits_digest
from engine.scheduler import TileKey, TileResult, TileScheduler
from engine.tile_workers import replicas
from engine.tiles import TILE_PX, Rect, TileIndex, lod_rect, tiles_covering
from engine.world import World, to_uint8

WAIT_S = 60.0  # generous bound for waits that normally take milliseconds


class FakeWorld:
    """Duck-typed World: lod pixel (x, y) renders as (x mod 251, y mod 251, lod)."""

    def __init__(
        self,
        delay: float = 0.0,
        gate: threading.Event | None = None,
        max_window_tiles: int = 10_000,  # stands for the activation budget
    ) -> None:
        self.edits: tuple = ()
        self.max_window_tiles = max_window_tiles
        self.device = torch.device("cpu")
        self.delay = delay
        self.gate = gate
        self.fail_next = False
        self.calls: list[tuple[int, list[Rect]]] = []  # (lod, rects) per render call
        self.started = threading.Event()

    @property
    def rendered_tiles(self) -> int:
        return sum(r.area for _, rects in self.calls for r in rects) // TILE_PX**2

    def digest(self, rect: Rect, lod: int, edits: tuple | None = None) -> str:
        return edits_digest(self.edits if edits is None else edits, rect, stages=3)

    def tile_digest(self, tile: TileIndex) -> str:
        return self.digest(tile.rect, tile.lod)

    def add_listener(self, callback) -> None:
        pass

    def window_fits(self, rect: Rect, lod: int) -> bool:
        return rect.area // TILE_PX**2 <= self.max_window_tiles

    def max_batch(self, rect: Rect, lod: int) -> int:
        return max(1, self.max_window_tiles // (rect.area // TILE_PX**2))

    def render_lod_float(self, rects, lod, edits=None) -> torch.Tensor:
        self.calls.append((lod, list(rects)))
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(WAIT_S)
        time.sleep(self.delay)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("out of memory")
        out = []
        for r in rects:
            ys, xs = torch.meshgrid(
                torch.arange(r.y, r.bottom), torch.arange(r.x, r.right), indexing="ij"
            )
            out.append(torch.stack([xs % 251, ys % 251, torch.full_like(xs, lod)]))
        return torch.stack(out).float() / 127.5 - 1  # [B, 3, h, w]

    def render_lod(self, rects, lod) -> np.ndarray:
        return to_uint8(self.render_lod_float(rects, lod))


class Collector:
    """on_tile callback that records results (from any thread)."""

    def __init__(self) -> None:
        self.results: list[TileResult] = []
        self.lock = threading.Lock()

    def __call__(self, result: TileResult) -> None:
        with self.lock:
            self.results.append(result)

    def tiles(self, epoch: int | None = None) -> list[TileIndex]:
        with self.lock:
            return [r.key.tile for r in self.results if epoch is None or r.epoch == epoch]


def assert_shows_its_position(result: TileResult) -> None:
    t = result.key.tile
    ys, xs = np.mgrid[t.rect.y : t.rect.bottom, t.rect.x : t.rect.right]
    expected = np.stack([xs % 251, ys % 251, np.full_like(xs, t.lod)], axis=-1)
    np.testing.assert_array_equal(result.rgb, expected.astype(np.uint8))


def scheduler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tile-scheduler" and t.is_alive()]


@pytest.fixture
def make_scheduler():
    made: list[TileScheduler] = []

    def make(world, on_tile, **kwargs) -> TileScheduler:
        made.append(TileScheduler(world, on_tile, **kwargs))
        return made[-1]

    yield make
    for scheduler in made:
        if scheduler.world.gate is not None:
            scheduler.world.gate.set()
        assert scheduler.close(timeout=WAIT_S)


# Fake world ---------------------------------------------------------------------------


def test_tiles_are_cut_correctly_from_block_windows_at_negative_coordinates(make_scheduler):
    world, got = FakeWorld(), Collector()
    s = make_scheduler(world, got, block_tiles=4, prefetch_ring=1)
    view = Rect(-700, -300, 900, 500)
    s.request(view, scale=1.0, epoch=1)
    assert s.wait_idle(WAIT_S)
    visible = tiles_covering(view, 0)
    assert set(visible) <= set(got.tiles(epoch=1))
    assert len(got.results) == len(set(got.tiles())) == (8 + 2) * (5 + 2)
    for result in got.results:
        assert result.error is None and not result.from_cache
        assert_shows_its_position(result)
    assert len(world.calls) < len(got.results) / 2  # tiles share windows


def test_a_partly_cached_block_renders_only_its_missing_tiles(make_scheduler):
    world, got = FakeWorld(), Collector()
    s = make_scheduler(world, got, block_tiles=4, prefetch_ring=0)
    s.request(Rect(0, 0, 3 * TILE_PX, 3 * TILE_PX), scale=1.0, epoch=1)
    assert s.wait_idle(WAIT_S) and world.rendered_tiles == 9
    s.request(Rect(0, 0, 4 * TILE_PX, 4 * TILE_PX), scale=1.0, epoch=2)  # an L of 7 more
    assert s.wait_idle(WAIT_S) and world.rendered_tiles == 9 + 7
    assert len(world.calls) <= 1 + 4
    assert sorted(got.tiles(epoch=2)) == sorted(tiles_covering(Rect(0, 0, 512, 512), 0))
    for result in got.results:
        assert_shows_its_position(result)


def test_zoomed_out_requests_render_the_coarser_lod(make_scheduler):
    world, got = FakeWorld(), Collector()
    s = make_scheduler(world, got, prefetch_ring=0)
    view = Rect(0, 0, 2048, 1024)
    s.request(view, scale=0.25, epoch=1)
    assert s.wait_idle(WAIT_S)
    assert sorted(got.tiles()) == sorted(tiles_covering(lod_rect(view, 2), 2))
    assert {lod for lod, _ in world.calls} == {2}
    for result in got.results:
        assert_shows_its_position(result)


def test_a_burst_of_requests_renders_only_the_newest_view(make_scheduler):
    gate = threading.Event()  # the first render lasts until the whole burst is issued
    world, got = FakeWorld(gate=gate), Collector()
    s = make_scheduler(world, got, block_tiles=2, prefetch_ring=1, batch_max=4)
    burst_tiles = 0
    for epoch in range(1, 21):  # panning right, much faster than rendering
        view = Rect(200 * epoch, 0, 640, 384)
        s.request(view, scale=1.0, epoch=epoch)
        burst_tiles += len(tiles_covering(view, 0))
        world.started.wait(WAIT_S)
    gate.set()
    assert s.wait_idle(WAIT_S)
    assert set(tiles_covering(view, 0)) <= set(got.tiles(epoch=20))
    final_tiles = len(set(got.tiles(epoch=20)))  # visible and prefetch ring
    first_batch = sum(r.area for r in world.calls[0][1]) // TILE_PX**2
    assert world.rendered_tiles == first_batch + final_tiles
    assert world.rendered_tiles < burst_tiles / 3
    assert all(r.epoch == 20 for r in got.results)


def test_visible_tiles_are_delivered_before_prefetch_tiles_centre_outwards(make_scheduler):
    world, got = FakeWorld(), Collector()
    s = make_scheduler(world, got, block_tiles=1, prefetch_ring=1, batch_max=1)
    view = Rect(0, 0, 3 * TILE_PX, 3 * TILE_PX)
    s.request(view, scale=1.0, epoch=1)
    assert s.wait_idle(WAIT_S)
    visible = set(tiles_covering(view, 0))
    order = got.tiles()
    assert len(order) == 5 * 5
    assert set(order[: len(visible)]) == visible
    assert order[0] == TileIndex(0, 1, 1)  # the centre tile first


def test_cached_tiles_are_delivered_synchronously_inside_request(make_scheduler):
    world, got = FakeWorld(), Collector()
    s = make_scheduler(world, got, prefetch_ring=0)
    view = Rect(0, 0, 384, 256)
    s.request(view, scale=1.0, epoch=1)
    assert s.wait_idle(WAIT_S)
    calls = len(world.calls)
    got.results.clear()
    s.request(view, scale=1.0, epoch=2)
    assert len(got.results) == 6  # before request returned
    assert all(r.from_cache and r.epoch == 2 for r in got.results)
    assert s.wait_idle(WAIT_S) and len(world.calls) == calls
    assert s.stats().cache_hits == 6 and s.stats().cache_misses == 6


def test_same_shape_jobs_are_batched_into_one_render_call(make_scheduler):
    world, got = FakeWorld(), Collector()
    s = make_scheduler(world, got, block_tiles=1, prefetch_ring=0, batch_max=4)
    s.request(Rect(0, 0, 4 * TILE_PX, 2 * TILE_PX), scale=1.0, epoch=1)
    assert s.wait_idle(WAIT_S)
    assert [len(rects) for _, rects in world.calls] == [4, 4]
    assert len(got.results) == 8


def test_a_batch_stays_within_the_activation_budget(make_scheduler):
    world, got = FakeWorld(max_window_tiles=2), Collector()
    s = make_scheduler(world, got, block_tiles=1, prefetch_ring=0, batch_max=4)
    s.request(Rect(0, 0, 4 * TILE_PX, 2 * TILE_PX), scale=1.0, epoch=1)
    assert s.wait_idle(WAIT_S)
    assert [len(rects) for _, rects in world.calls] == [2, 2, 2, 2]
    assert len(got.results) == 8


def test_without_blocks_a_view_is_one_window(make_scheduler):
    world, got = FakeWorld(), Collector()
    s = make_scheduler(world, got, block_tiles=0, prefetch_ring=1)
    view = Rect(-1000, -300, 1920, 1080)
    s.request(view, scale=1.0, epoch=1)
    assert s.wait_idle(WAIT_S)
    visible = tiles_covering(view, 0)
    assert world.calls[0] == (0, [Rect(-1024, -384, 16 * TILE_PX, 10 * TILE_PX)])
    assert set(got.tiles()[: len(visible)]) == set(visible)
    assert len(got.results) == (16 + 2) * (10 + 2)
    assert len(world.calls) == 5  # the view, then the ring's four sides
    for result in got.results:
        assert_shows_its_position(result)


def test_without_blocks_the_budget_cuts_a_view_into_nearly_equal_windows(make_scheduler):
    world, got = FakeWorld(max_window_tiles=60), Collector()
    s = make_scheduler(world, got, block_tiles=0, prefetch_ring=0, batch_max=1)
    view = Rect(0, 0, 16 * TILE_PX, 10 * TILE_PX)  # 160 tiles: three pieces of columns
    s.request(view, scale=1.0, epoch=1)
    assert s.wait_idle(WAIT_S)
    widths = sorted(rect.w // TILE_PX for _, rects in world.calls for rect in rects)
    assert widths == [5, 5, 6]
    assert all(rect.h == view.h for _, rects in world.calls for rect in rects)
    assert sorted(got.tiles()) == sorted(tiles_covering(view, 0))
    for result in got.results:
        assert_shows_its_position(result)


def test_a_tile_in_flight_is_delivered_to_a_newer_request_without_rendering_again(
    make_scheduler,
):
    gate = threading.Event()
    world, got = FakeWorld(gate=gate), Collector()
    s = make_scheduler(world, got, block_tiles=1, prefetch_ring=0, batch_max=1)
    s.request(Rect(0, 0, 128, 128), scale=1.0, epoch=1)
    assert world.started.wait(WAIT_S)
    s.request(Rect(0, 0, 256, 128), scale=1.0, epoch=2)  # still wants tile (0, 0)
    gate.set()
    assert s.wait_idle(WAIT_S)
    assert sorted(got.tiles(epoch=2)) == [TileIndex(0, 0, 0), TileIndex(0, 1, 0)]
    assert got.tiles(epoch=1) == []
    assert world.rendered_tiles == 2


def test_results_no_longer_wanted_are_cached_but_not_delivered(make_scheduler):
    gate = threading.Event()
    world, got = FakeWorld(gate=gate), Collector()
    s = make_scheduler(world, got, prefetch_ring=0)
    s.request(Rect(0, 0, 128, 128), scale=1.0, epoch=1)
    assert world.started.wait(WAIT_S)
    s.request(Rect(80 * TILE_PX, 0, 128, 128), scale=1.0, epoch=2)
    gate.set()
    assert s.wait_idle(WAIT_S)
    assert got.tiles() == [TileIndex(0, 80, 0)]
    assert TileKey(TileIndex(0, 0, 0), "") in s.cache


def test_a_request_older_than_the_newest_is_ignored(make_scheduler):
    world, got = FakeWorld(), Collector()
    s = make_scheduler(world, got, prefetch_ring=0)
    s.request(Rect(0, 0, 128, 128), scale=1.0, epoch=5)
    s.request(Rect(1280, 0, 128, 128), scale=1.0, epoch=4)
    assert s.wait_idle(WAIT_S)
    assert [(r.key.tile, r.epoch) for r in got.results] == [(TileIndex(0, 0, 0), 5)]


def test_cancel_drops_queued_work_and_the_job_in_flight_is_only_cached(make_scheduler):
    gate = threading.Event()
    world, got = FakeWorld(gate=gate), Collector()
    s = make_scheduler(world, got, block_tiles=1, prefetch_ring=0, batch_max=1)
    s.request(Rect(0, 0, 4 * TILE_PX, 2 * TILE_PX), scale=1.0, epoch=1)
    assert world.started.wait(WAIT_S)
    assert s.stats().queued_tiles == 7 and s.stats().in_flight_tiles == 1
    s.cancel()
    assert s.stats().queued_tiles == 0
    gate.set()
    assert s.wait_idle(WAIT_S)
    assert len(world.calls) == 1 and got.results == []
    assert len(s.cache) == 1


def test_close_returns_once_the_job_in_flight_ends_and_leaves_no_thread():
    gate = threading.Event()
    world, got = FakeWorld(gate=gate), Collector()
    s = TileScheduler(world, got, prefetch_ring=0)
    s.request(Rect(0, 0, 512, 512), scale=1.0, epoch=1)
    assert world.started.wait(WAIT_S)
    assert not s.close(timeout=0.05)  # the render is blocked: close gives up waiting
    threading.Timer(0.2, gate.set).start()
    start = time.perf_counter()
    assert s.close(timeout=WAIT_S)
    assert time.perf_counter() - start < 5.0
    assert scheduler_threads() == []
    assert got.results == []  # closed: the in-flight tiles are cached, never delivered
    s.request(Rect(0, 0, 512, 512), scale=1.0, epoch=2)  # after close: a no-op
    assert got.results == [] and scheduler_threads() == []


def test_close_from_inside_the_callback_does_not_deadlock():
    world = FakeWorld()
    closed: list[bool] = []
    s = TileScheduler(world, lambda r: closed.append(s.close(timeout=1.0)), prefetch_ring=0)
    s.request(Rect(0, 0, 256, 128), scale=1.0, epoch=1)
    deadline = time.monotonic() + WAIT_S
    while scheduler_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closed == [False] and scheduler_threads() == []


def test_an_idle_worker_ends_and_the_next_request_starts_another(monkeypatch):
    monkeypatch.setitem(engine.scheduler.IDLE_EXIT_S, "cpu", 0.05)
    world, got = FakeWorld(), Collector()
    with TileScheduler(world, got, prefetch_ring=0) as s:
        s.request(Rect(0, 0, 128, 128), scale=1.0, epoch=1)
        assert s.wait_idle(WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while scheduler_threads() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert scheduler_threads() == []  # a forgotten close() cannot hang interpreter exit
        s.request(Rect(128, 0, 128, 128), scale=1.0, epoch=2)
        assert s.wait_idle(WAIT_S)
    assert got.tiles() == [TileIndex(0, 0, 0), TileIndex(0, 1, 0)]
    assert scheduler_threads() == []


def test_a_render_error_is_delivered_as_a_value_and_the_worker_keeps_going(make_scheduler):
    world, got = FakeWorld(), Collector()
    world.fail_next = True
    s = make_scheduler(world, got, prefetch_ring=0)
    s.request(Rect(0, 0, 256, 128), scale=1.0, epoch=1)
    assert s.wait_idle(WAIT_S)
    assert [(r.rgb, r.error) for r in got.results] == [(None, "RuntimeError: out of memory")] * 2
    assert len(s.cache) == 0
    s.request(Rect(0, 0, 256, 128), scale=1.0, epoch=2)
    assert s.wait_idle(WAIT_S)
    good = [r for r in got.results if r.epoch == 2]
    assert len(good) == 2 and all(r.error is None and r.rgb is not None for r in good)


def test_a_failing_callback_does_not_stop_the_worker(make_scheduler):
    world, calls = FakeWorld(), []

    def on_tile(result: TileResult) -> None:
        calls.append(result)
        raise ValueError("GUI bug")

    s = make_scheduler(world, on_tile, block_tiles=1, prefetch_ring=0)
    s.request(Rect(0, 0, 384, 128), scale=1.0, epoch=1)
    assert s.wait_idle(WAIT_S)
    assert len(calls) == 3


def test_stats_count_rendered_pixels_and_time(make_scheduler):
    world, got = FakeWorld(delay=0.01), Collector()
    s = make_scheduler(world, got, prefetch_ring=0)
    s.request(Rect(0, 0, 256, 256), scale=1.0, epoch=1)
    assert s.wait_idle(WAIT_S)
    stats = s.stats()
    assert (stats.rendered_tiles, stats.rendered_pixels) == (4, 4 * TILE_PX**2)
    assert stats.render_seconds >= 0.01 and stats.pixels_per_second > 0
    assert (stats.queued_tiles, stats.in_flight_tiles) == (0, 0)


# Real tiny engine ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def world() -> World:
    g = engine.load_generator(preset="tiny", device="cpu")
    return World(g, seed=3, precision="fp32")


def paste(results: list[TileResult], view: Rect, lod: int) -> np.ndarray:
    area = lod_rect(view, lod)
    out = np.zeros((area.h, area.w, 3), np.uint8)
    for r in results:
        part = r.key.tile.rect.intersection(area)
        if part is None:
            continue
        t = r.key.tile.rect
        out[part.y - area.y : part.bottom - area.y, part.x - area.x : part.right - area.x] = r.rgb[
            part.y - t.y : part.bottom - t.y, part.x - t.x : part.right - t.x
        ]
    return out


@pytest.mark.parametrize(
    ("view", "scale"), [(Rect(-200, 40, 300, 200), 1.0), (Rect(-512, -256, 640, 512), 0.5)]
)
def test_scheduled_tiles_paste_into_the_same_image_as_one_render(world, view, scale):
    got = Collector()
    with TileScheduler(world, got, block_tiles=2, prefetch_ring=0) as s:
        s.request(view, scale=scale, epoch=1)
        assert s.wait_idle(WAIT_S)
    assert all(r.error is None for r in got.results)
    lod = 0 if scale == 1.0 else 1
    tiled = paste(got.results, view, lod).astype(int)
    whole = world.render(view, scale).astype(int)
    assert np.abs(tiled - whole).max() <= 1


def test_an_edit_re_renders_only_the_tiles_it_touches_and_undo_serves_the_cache(world):
    view = Rect(-256, 0, 768, 128)  # tiles tx -2..3 of row 0
    edit = RerollRegion(0, 0, 2, 2, salt=1)  # its influence reaches tiles -2..0 only
    got = Collector()
    with TileScheduler(world, got, prefetch_ring=0, cache=TileCache()) as s:
        s.request(view, scale=1.0, epoch=1)
        assert s.wait_idle(WAIT_S)
        before = {r.key.tile: r for r in got.results}
        assert len(before) == 6 and s.stats().rendered_tiles == 6

        world.apply(edit)
        try:
            s.request(view, scale=1.0, epoch=2)
            assert s.wait_idle(WAIT_S)
        finally:
            world.undo()
        after = {r.key.tile: r for r in got.results if r.epoch == 2}
        touched = {TileIndex(0, tx, 0) for tx in (-2, -1, 0)}
        assert {t for t, r in after.items() if not r.from_cache} == touched
        assert all(after[t].key.digest != before[t].key.digest for t in touched)
        assert all(after[t].key == before[t].key for t in set(after) - touched)
        assert not np.array_equal(after[TileIndex(0, 0, 0)].rgb, before[TileIndex(0, 0, 0)].rgb)
        assert s.stats().rendered_tiles == 6 + 3

        s.request(view, scale=1.0, epoch=3)  # after undo: every tile from the cache at once
        undone = {r.key.tile: r for r in got.results if r.epoch == 3}
        assert len(undone) == 6 and all(r.from_cache for r in undone.values())
        for tile, r in undone.items():
            assert r.key == before[tile].key
            assert r.rgb.tobytes() == before[tile].rgb.tobytes()
        assert s.wait_idle(WAIT_S) and s.stats().rendered_tiles == 6 + 3


def test_two_devices_render_the_same_tiles_as_one_each_on_its_own_worker(world):
    view = Rect(-256, -128, 640, 256)
    edit = RerollRegion(-2, -2, 3, 3, salt=4)
    world.apply(edit)
    try:
        results = {}
        for worlds in (None, replicas(world, ["cpu", "cpu"])):
            got, threads = Collector(), set()

            def on_tile(result, got=got, threads=threads):
                threads.add(threading.current_thread().name)
                got(result)

            with TileScheduler(world, on_tile, block_tiles=1, prefetch_ring=0, worlds=worlds) as s:
                s.request(view, scale=1.0, epoch=1)
                assert s.wait_idle(WAIT_S)
                assert s.stats().rendered_tiles == 10
            assert all(r.error is None for r in got.results)
            results[worlds is None] = {r.key: r.rgb.tobytes() for r in got.results}
            if worlds is not None:
                assert threads == {"tile-scheduler-0", "tile-scheduler-1"}
                assert s.worlds[0] is world and s.worlds[1].generator is not world.generator
    finally:
        world.undo()
    assert results[False] == results[True]
    assert not [t for t in threading.enumerate() if t.name.startswith("tile-scheduler")]
