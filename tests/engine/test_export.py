"""Giant export: streamed formats equal the world's render, cancel, resume, clear errors."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import sys
import threading
import zlib
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
import tifffile
from PIL import Image

from app import cli
from engine import export as export_module
from engine import export_formats, load_generator
from engine.edits import RerollRegion
from engine.export import (
    RENDER_REVISION,
    ExportCancelled,
    ExportError,
    ExportJob,
    ExportPaths,
    measure_speed,
    plan_export,
    run_export,
    unfinished_export,
    write_tiles,
)
from engine.export_formats import adler32_combine, deflate_function
from engine.tile_workers import SingleDevice
from engine.tiles import Rect
from engine.world import World

try:
    import pyvips
except Exception:  # ImportError, or OSError without libvips
    pyvips = None
try:
    import imagecodecs
except ImportError:
    imagecodecs = None

needs_vips = pytest.mark.skipif(
    pyvips is None, reason="pyvips is not installed (pip install 'infinity-canvas[export]')"
)
needs_codecs = pytest.mark.skipif(
    imagecodecs is None,
    reason="imagecodecs is not installed (pip install 'infinity-canvas[export]')",
)

RECT = Rect(-150, -90, 300, 200)  # negative corner, not a multiple of the tile size


@pytest.fixture(scope="module")
def generator():
    return load_generator(preset="tiny", device="cpu")


@pytest.fixture
def world(generator):
    return World(generator, seed=3, precision="fp32")


@pytest.fixture(scope="module")
def reference(generator):
    return World(generator, seed=3, precision="fp32").render(RECT)


def read_image(path: Path) -> np.ndarray:
    """uint8 [H, W, 3] of the full-resolution level of any export."""
    if path.suffix == ".dzi":
        return read_dzi(path)
    if path.suffix == ".png":
        return np.asarray(Image.open(path).convert("RGB"))
    if pyvips is not None:
        image = pyvips.Image.new_from_file(str(path))  # page 0: the full resolution
        buffer = image.write_to_memory()
        return np.ndarray(buffer=buffer, dtype=np.uint8, shape=(image.height, image.width, 3))
    return tifffile.imread(path)


def read_dzi(path: Path) -> np.ndarray:
    """Stitch the finest level of a Deep Zoom pyramid (tiles with 1 px overlap)."""
    root = ElementTree.parse(path).getroot()
    size = root.find("{*}Size")
    w, h = int(size.get("Width")), int(size.get("Height"))
    tile, overlap = int(root.get("TileSize")), int(root.get("Overlap"))
    level_dir = sorted(
        (path.parent / f"{path.stem}_files").iterdir(),
        key=lambda p: int(p.name) if p.name.isdigit() else -1,
    )[-1]
    out = np.zeros((h, w, 3), np.uint8)
    for f in level_dir.iterdir():
        col, row = (int(v) for v in f.stem.split("_"))
        x0, y0 = col * tile - (overlap if col else 0), row * tile - (overlap if row else 0)
        pixels = np.asarray(Image.open(f).convert("RGB"))
        out[y0 : y0 + pixels.shape[0], x0 : x0 + pixels.shape[1]] = pixels
    return out


def export(world, tmp_path, name, **options):
    render_tile = options.pop("render_tile", None)
    resume = options.pop("resume", False)
    names = ("on_progress", "should_stop", "compile", "one_shape")
    passed = {k: options.pop(k) for k in names if k in options}
    job = ExportJob(rect=options.pop("rect", RECT), out=tmp_path / name, tile=64, **options)
    return run_export(world, job, render_tile=render_tile, resume=resume, **passed)


# Every format equals the render --------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "name", "compression"),
    [
        ("tiff", "out.tif", None),
        ("tiff", "raw.tif", "none"),
        ("png", "out.png", None),
        pytest.param("pyramid", "pyr.tif", None, marks=needs_vips),
        pytest.param("dzi", "out.dzi", "png", marks=needs_vips),
    ],
)
def test_lossless_export_equals_world_render_exactly(
    world, reference, tmp_path, fmt, name, compression
):
    path = export(world, tmp_path, name, format=fmt, compression=compression)
    assert path == tmp_path / name
    assert np.array_equal(read_image(path), reference)
    leftovers = {p.name for p in tmp_path.iterdir()} - {name, "out_files"}
    assert not leftovers  # no .part, sidecar or spill once complete


def _jpeg_error(image: np.ndarray, quality: int) -> float:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    decoded = np.asarray(Image.open(buffer).convert("RGB"))
    return float(np.abs(decoded.astype(int) - image).mean())


@pytest.mark.parametrize(
    ("fmt", "name"),
    [
        pytest.param("tiff", "j.tif", marks=[needs_codecs, needs_vips]),
        pytest.param("pyramid", "jp.tif", marks=needs_vips),
        pytest.param("dzi", "j.dzi", marks=needs_vips),
    ],
)
def test_jpeg_export_is_close_to_world_render(world, reference, tmp_path, fmt, name):
    path = export(world, tmp_path, name, format=fmt, compression="jpeg", quality=90)
    image = read_image(path)
    assert image.shape == reference.shape
    error = np.abs(image.astype(int) - reference).mean()
    assert error <= 1.5 * _jpeg_error(reference, 90) + 1.0


def test_export_of_many_render_tiles_equals_them_rendered_alone(world, tmp_path):
    rect = Rect(-203, -77, 291, 213)  # render tiles of 96 rows, strips of 64: bands carry rows
    path = export(world, tmp_path, "many.png", rect=rect, format="png", render_tile=96)
    plan = plan_export(world, ExportJob(rect, tmp_path / "x.png", format="png"), render_tile=96)
    expected = np.zeros((rect.h, rect.w, 3), np.uint8)
    for r in plan.tile_rects():
        expected[r.y - rect.y : r.bottom - rect.y, r.x - rect.x : r.right - rect.x] = (
            world.render_lod([r], 0)[0]
        )
    image = read_image(path)
    assert plan.total_tiles == 12
    assert np.array_equal(image, expected)
    assert np.abs(image.astype(int) - world.render(rect)).max() <= 1  # float rounding only


def test_one_shape_export_renders_every_tile_as_one_window_shape_and_crops_the_edges(
    world, tmp_path
):
    rect = Rect(-203, -77, 291, 213)  # 4 x 3 render tiles of 96 px, the last ones clipped
    shapes = []

    class Recording(SingleDevice):
        def render_in_order(self, rects, *args):
            shapes.extend((r.w, r.h) for r in rects)
            return super().render_in_order(rects, *args)

    job = ExportJob(rect, tmp_path / "one.png", format="png", tile=64)
    path = run_export(world, job, render_tile=96, one_shape=True, renderer=Recording(world))
    assert set(shapes) == {(96, 96)} and len(shapes) == 12
    plan = plan_export(world, job, render_tile=96, one_shape=True)
    expected = np.zeros((rect.h, rect.w, 3), np.uint8)
    for i, r in enumerate(plan.tile_rects()):
        window = world.render_lod([plan.render_rect(i)], 0)[0]
        expected[r.y - rect.y : r.bottom - rect.y, r.x - rect.x : r.right - rect.x] = plan.cropped(
            i, window
        )
    image = read_image(path)
    assert np.array_equal(image, expected)
    assert np.abs(image.astype(int) - world.render(rect)).max() <= 1  # float rounding only


def test_one_shape_grids_split_evenly_and_cover_the_export(world, tmp_path):
    job = ExportJob(Rect(0, 0, 32768, 1000), tmp_path / "wide.tif")
    plain = plan_export(world, job, one_shape=False)
    even = plan_export(world, job, one_shape=True)
    assert even.tile_w % 256 == 0 and even.tile_w <= plain.tile_w
    assert export_module.tiles_are_tiff_aligned(even)
    assert (even.columns - 1) * even.tile_w < 32768 <= even.columns * even.tile_w
    overhang = even.columns * even.tile_w - 32768
    assert overhang < 256 * even.columns  # no window mostly thrown away
    assert {(r.w, r.h) for r in map(even.render_rect, range(even.total_tiles))} == {
        even.window_size
    }
    assert sum(r.area for r in even.tile_rects()) == even.pixels
    small = plan_export(world, ExportJob(Rect(5, 5, 300, 200), tmp_path / "s.tif"), one_shape=True)
    assert small.total_tiles == 1 and small.render_rect(0) == Rect(5, 5, 300, 200)


def test_tiff_encoded_straight_from_render_tiles_equals_the_one_assembled_from_bands(
    world, tmp_path, monkeypatch
):
    rect = Rect(-150, -90, 300, 200)  # 5 x 4 render tiles of 64 px, the last ones clipped
    plan = plan_export(world, ExportJob(rect, tmp_path / "x.tif", tile=64), render_tile=64)
    tiles = [world.render_lod([r], 0)[0] for r in plan.tile_rects()]
    assert export_module.tiles_are_tiff_aligned(plan)
    straight = write_tiles(plan, tiles, tmp_path / "straight.tif")
    monkeypatch.setattr(export_module, "tiles_are_tiff_aligned", lambda plan: False)
    banded = write_tiles(plan, tiles, tmp_path / "banded.tif")
    assert straight.read_bytes() == banded.read_bytes()
    mosaic = np.zeros((rect.h, rect.w, 3), np.uint8)
    for r, pixels in zip(plan.tile_rects(), tiles, strict=True):
        mosaic[r.y - rect.y : r.y - rect.y + r.h, r.x - rect.x : r.x - rect.x + r.w] = pixels
    assert np.array_equal(read_image(straight), mosaic)


def test_default_tiff_render_tiles_hold_whole_tiff_tiles_and_wide_ones_are_short(world, tmp_path):
    square = plan_export(world, ExportJob(Rect(0, 0, 5000, 3000), tmp_path / "s.tif"))
    assert square.tile_w % 256 == 0 and square.tile_h % 256 == 0
    assert export_module.tiles_are_tiff_aligned(square)
    wide = plan_export(world, ExportJob(Rect(0, 0, 60_000, 1000), tmp_path / "w.tif"))
    assert wide.tile_h % 256 == 0 and wide.tile_h * 60_000 * 3 <= export_module.BAND_BYTES
    assert wide.tile_w > square.tile_w and wide.tile_w % 256 == 0  # about the same area
    assert wide.tile_w * wide.tile_h <= 1.1 * world.chunk_px(0) ** 2


def test_half_scale_export_equals_world_render_at_half_scale(world, tmp_path):
    rect = Rect(-128, -64, 256, 192)
    path = export(world, tmp_path, "half.tif", rect=rect, scale=0.5)
    image = read_image(path)
    assert image.shape == (96, 128, 3)
    assert np.array_equal(image, world.render(rect, 0.5))


def test_unaligned_rect_at_quarter_scale_is_snapped_outward(world, tmp_path):
    plan = plan_export(world, ExportJob((-5, 3, 10, 10), tmp_path / "q.tif", scale=0.25))
    assert plan.rect == Rect(-8, 0, 16, 16)
    assert (plan.width, plan.height) == (4, 4)


def test_export_renders_the_edits_of_the_world(world, tmp_path):
    world.apply(RerollRegion(-10, -6, 8, 6, salt=5))
    path = export(world, tmp_path, "edited.tif")
    assert np.array_equal(read_image(path), world.render(RECT))


# Cancel and resume ----------------------------------------------------------------------


def _cancel_after(k: int, world, tmp_path, name, **options) -> None:
    """An export in render tiles of 64 px (5 a row, a strip a row), cancelled after k
    progress reports."""
    seen = []
    with pytest.raises(ExportCancelled):
        export(
            world,
            tmp_path,
            name,
            render_tile=64,
            on_progress=seen.append,
            should_stop=lambda: len(seen) >= k,
            **options,
        )


def test_cancel_leaves_no_file_at_the_final_name_and_keeps_resume_data(world, tmp_path):
    _cancel_after(7, world, tmp_path, "c.tif")
    paths = ExportPaths.of(tmp_path / "c.tif")
    assert not paths.out.exists()
    assert paths.sidecar.exists() and paths.spill.exists()
    unfinished = unfinished_export(paths.out)
    assert unfinished is not None
    assert 1 <= unfinished.done_strips < unfinished.total_strips == 4  # strips of 64 rows
    assert unfinished.identity["seed"] == 3
    assert json.loads(paths.sidecar.read_text())["done_strips"] == unfinished.done_strips
    assert not [t for t in threading.enumerate() if t.name.startswith("export-")]


@pytest.mark.parametrize("name", ["r.tif", "r.png"])
def test_resume_after_cancel_is_byte_identical_to_an_uninterrupted_export(world, tmp_path, name):
    (tmp_path / "whole").mkdir()
    whole = export(world, tmp_path / "whole", name, render_tile=64)
    _cancel_after(12, world, tmp_path, name)
    progress = []
    resumed = export(world, tmp_path, name, resume=True, on_progress=progress.append)
    assert resumed.read_bytes() == whole.read_bytes()
    assert progress[-1].done_tiles == progress[-1].total_tiles == 20
    assert progress[-1].resumed_tiles >= 10  # their strips came from the spill
    assert not ExportPaths.of(resumed).spill.exists()


def _compiling_stand_in(monkeypatch, world, *, fails=False):
    """Make `world.compiled()` (CUDA only) return a copy whose one-style renders go through
    a counting stand-in for the compiled generator (optionally failing); the calls list."""
    calls = []

    def compiled():
        other = world._sharing(edits=world.edits)

        def synthesize(*args, **kwargs):
            calls.append(1)
            if fails:
                raise RuntimeError("no C++ compiler found")
            return world.generator.synthesize(*args, **kwargs)

        other._synthesize, other.is_compiled = synthesize, True
        return other

    monkeypatch.setattr(world, "compiled", compiled)
    return calls


def _cancelled_compiled_export(world, tmp_path, name: str, stop_after: int) -> dict:
    """Start a compiled export of `name`, cancel it after `stop_after` progress reports;
    its sidecar."""
    _cancel_after(stop_after, world, tmp_path, name, compile=True)
    return json.loads(ExportPaths.of(tmp_path / name).sidecar.read_text())


def test_a_compiled_export_keeps_compiling_when_resumed_and_equals_the_eager_one(
    world, tmp_path, monkeypatch
):
    (tmp_path / "whole").mkdir()
    whole = export(world, tmp_path / "whole", "w.tif", render_tile=64, one_shape=True)
    calls = _compiling_stand_in(monkeypatch, world)  # compiled exports render in one shape
    assert _cancelled_compiled_export(world, tmp_path, "w.tif", 12)["compiled"] and calls
    before = len(calls)
    resumed = export(world, tmp_path, "w.tif", resume=True)  # compile=False: the sidecar wins
    assert len(calls) > before
    assert resumed.read_bytes() == whole.read_bytes()  # the stand-in computes eager numbers


def test_an_export_whose_compilation_fails_renders_eagerly(world, tmp_path, monkeypatch, caplog):
    calls = _compiling_stand_in(monkeypatch, world, fails=True)
    assert _cancelled_compiled_export(world, tmp_path, "e.tif", 3)["compiled"] is False
    assert len(calls) == 1  # the throwaway window that compiles
    assert "compiling the generator failed" in caplog.text
    assert export(world, tmp_path, "e.tif", resume=True).exists()


def test_a_really_compiled_export_differs_from_the_eager_one_by_rounding_only(world, tmp_path):
    """torch.compile itself, on the CPU (about 25 s; where no C++ compiler is found the export
    renders eagerly instead, which this test also accepts)."""
    rect = Rect(-70, -40, 150, 90)
    eager = export(world, tmp_path, "eager.png", rect=rect, format="png", render_tile=64)
    compiled = export(
        world, tmp_path, "compiled.png", rect=rect, format="png", render_tile=64, compile=True
    )
    difference = np.abs(read_image(compiled).astype(int) - read_image(eager))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01


def test_a_compiled_world_is_a_copy_that_compiles_lazily_and_once(world):
    assert world.can_compile and not world.is_compiled
    compiled = world.compiled()  # torch.compile only wraps: nothing is compiled before a call
    assert compiled is not world and compiled.is_compiled
    assert compiled.generator is world.generator and compiled.compiled() is compiled
    assert world.compiled()._synthesize is compiled._synthesize  # one compiled function


def test_resume_after_a_crash_mid_record_drops_the_torn_record(world, tmp_path):
    (tmp_path / "whole").mkdir()
    whole = export(world, tmp_path / "whole", "t.tif", render_tile=64)
    _cancel_after(12, world, tmp_path, "t.tif")
    spill = ExportPaths.of(tmp_path / "t.tif").spill
    with open(spill, "r+b") as f:  # a crash during the last append
        f.truncate(spill.stat().st_size - 100)
    resumed = export(world, tmp_path, "t.tif", resume=True)
    assert resumed.read_bytes() == whole.read_bytes()


def test_resume_of_another_job_is_refused(generator, world, tmp_path):
    _cancel_after(2, world, tmp_path, "m.tif")
    other_seed = World(generator, seed=4, precision="fp32")
    with pytest.raises(ExportError, match="world seed 3 -> 4"):
        export(other_seed, tmp_path, "m.tif", resume=True)
    with pytest.raises(ExportError, match="rectangle"):
        export(world, tmp_path, "m.tif", rect=Rect(0, 0, 300, 200), resume=True)
    world.apply(RerollRegion(-4, -4, 4, 4, salt=1))
    with pytest.raises(ExportError, match="edits"):
        export(world, tmp_path, "m.tif", resume=True)
    assert ExportPaths.of(tmp_path / "m.tif").spill.exists()  # refused, nothing discarded


def test_resume_of_an_export_begun_by_an_older_renderer_warns(world, tmp_path, caplog):
    _cancel_after(2, world, tmp_path, "o.tif")
    sidecar = ExportPaths.of(tmp_path / "o.tif").sidecar
    data = json.loads(sidecar.read_text())
    assert data["render_revision"] == RENDER_REVISION
    del data["render_revision"]  # as written before the revision was recorded
    sidecar.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="engine.export"):
        out = export(world, tmp_path, "o.tif", resume=True)
    assert out.exists()
    assert "older version" in caplog.text


def test_export_without_resume_discards_an_unfinished_one(world, reference, tmp_path):
    _cancel_after(2, world, tmp_path, "d.png", format="png")
    progress = []
    path = export(world, tmp_path, "d.png", format="png", on_progress=progress.append)
    assert progress[-1].resumed_tiles == 0
    assert np.array_equal(read_image(path), reference)


@pytest.mark.parametrize("name", ["v.tif", pytest.param("v.dzi", marks=needs_vips), "p.png"])
def test_a_render_error_reaches_the_caller_and_stops_every_thread(world, tmp_path, name):
    fmt = {"v.tif": "tiff", "v.dzi": "dzi", "p.png": "png"}[name]
    render, calls = world.render_lod_float, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8:
            raise RuntimeError("out of GPU memory (simulated)")
        return render(*args, **kwargs)

    world.render_lod_float = failing
    with pytest.raises(RuntimeError, match="simulated"):
        export(world, tmp_path, name, format=fmt, render_tile=64)
    assert not (tmp_path / name).exists()
    assert ExportPaths.of(tmp_path / name).spill.exists()
    assert not [t for t in threading.enumerate() if t.name.startswith("export-")]


@needs_vips
def test_cancel_of_a_libvips_export_leaves_no_file_and_resumes(world, reference, tmp_path):
    _cancel_after(12, world, tmp_path, "c.tif", format="pyramid")
    assert not (tmp_path / "c.tif").exists()
    assert not [t for t in threading.enumerate() if t.name.startswith("export-")]
    progress = []
    path = export(
        world, tmp_path, "c.tif", format="pyramid", resume=True, on_progress=progress.append
    )
    assert progress[-1].resumed_tiles >= 10
    (tmp_path / "whole").mkdir()
    whole = export(world, tmp_path / "whole", "w.tif", render_tile=64)
    assert np.array_equal(read_image(path), read_image(whole))
    assert np.abs(read_image(path).astype(int) - reference).max() <= 1


# Clear errors ---------------------------------------------------------------------------


def test_missing_or_unusable_folder_is_a_clear_error(world, tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        export(world, tmp_path / "missing", "a.tif")
    (tmp_path / "file").write_text("")
    with pytest.raises(ExportError, match="is not a folder"):
        export(world, tmp_path / "file", "a.tif")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_read_only_folder_is_a_clear_error(world, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: folder permissions are not enforced")
        with pytest.raises(ExportError, match="not writable"):
            export(world, folder, "a.tif")
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("name", ["full.tif", "full.png"])
def test_full_disk_is_a_clear_error_and_keeps_resume_data(world, tmp_path, monkeypatch, name):
    def no_space(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export_formats.OutputFile, "write", no_space)
    with pytest.raises(ExportError, match=r"disk full .* needed about .*B"):
        export(world, tmp_path, name)
    assert not (tmp_path / name).exists()
    assert ExportPaths.of(tmp_path / name).sidecar.exists()


@pytest.mark.parametrize(
    ("fmt", "name", "width", "message"),
    [
        ("png", "big.png", 2**31, "png image holds at most 2,147,483,647"),
        ("tiff", "big.tif", 2**32, "tiff image holds at most 4,294,967,295"),
        ("tiff", "wide.tif", 2**30, "at most 2,796,202 pixels wide"),
    ],
)
def test_sizes_that_cannot_be_written_are_refused(world, tmp_path, fmt, name, width, message):
    job = ExportJob((0, 0, width, 64), tmp_path / name, format=fmt)
    with pytest.raises(ExportError, match=message):
        plan_export(world, job)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scale": 0.3}, "scale must be 1, 1/2, 1/4"),
        ({"scale": 2.0}, "scale must be 1, 1/2, 1/4"),
        ({"format": "png", "compression": "jpeg"}, "png exports cannot use 'jpeg'"),
        ({"format": "gif"}, "unknown format"),
        ({"tile": 100}, "multiple of 16"),
        ({"quality": 0}, "quality"),
        ({"rect": (0, 0, 0, 5)}, "empty"),
    ],
)
def test_impossible_jobs_are_refused_with_a_message(tmp_path, options, message):
    options = {"rect": (0, 0, 64, 64), "out": tmp_path / "a.png"} | options
    with pytest.raises(ExportError, match=message):
        ExportJob(**options)


def test_deep_zoom_export_must_be_named_dzi(tmp_path):
    with pytest.raises(ExportError, match=r"NAME\.dzi"):
        ExportJob((0, 0, 64, 64), tmp_path / "a.tif", format="dzi")


def test_missing_libvips_names_the_extra_to_install(world, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyvips", None)  # import pyvips now raises ImportError
    with pytest.raises(ExportError, match=r"pip install 'infinity-canvas\[export\]'"):
        export(world, tmp_path, "a.dzi", format="dzi")
    assert not list(tmp_path.iterdir())


def test_missing_imagecodecs_for_jpeg_tiff_names_the_extra(world, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imagecodecs", None)
    with pytest.raises(ExportError, match=r"imagecodecs.*infinity-canvas\[export\]"):
        export(world, tmp_path, "j.tif", compression="jpeg")
    assert not list(tmp_path.iterdir())


def test_deflate_tiff_without_imagecodecs_uses_zlib_and_equals_the_render(
    world, reference, tmp_path, monkeypatch
):
    with_codecs = export(world, tmp_path, "codecs.tif").read_bytes()
    monkeypatch.setitem(sys.modules, "imagecodecs", None)
    path = export(world, tmp_path, "zlib.tif")
    assert np.array_equal(read_image(path), reference)
    assert path.read_bytes() != with_codecs or imagecodecs is None  # other encoder, same pixels


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_deflate_function_writes_zlib_streams(level):
    data = bytes(range(256)) * 300
    assert zlib.decompress(deflate_function(level)(data)) == data


# Plan and pure helpers -------------------------------------------------------------------


def test_plan_estimates_time_from_a_given_speed(world, tmp_path):
    job = ExportJob((0, 0, 4000, 3000), tmp_path / "a.tif")
    plan = plan_export(world, job, mp_per_s=2.0)
    assert plan.estimated_seconds == pytest.approx(6.0)
    assert 0 < plan.estimated_bytes < 4000 * 3000 * 3
    assert plan_export(world, job).estimated_seconds is None
    covered = sum(r.area for r in plan.tile_rects())
    assert covered == plan.pixels == 12_000_000


def test_measured_speed_is_positive_megapixels_per_second(world):
    assert 0 < measure_speed(world, 2, seconds=0.01) < 1e4


def test_adler32_of_strips_combines_to_the_adler32_of_the_whole():
    rng = np.random.default_rng(0)
    a, b = rng.bytes(100_003), rng.bytes(70_001)
    combined = adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b))
    assert combined == zlib.adler32(a + b)


# Command line ---------------------------------------------------------------------------


def test_export_command_runs_end_to_end_with_a_progress_line(reference, tmp_path, capsys):
    out = tmp_path / "cli.png"
    argv = ["export", "--preset", "tiny", "--seed", "3", "--device", "cpu", "--precision", "fp32"]
    argv += [f"--rect={','.join(map(str, RECT.as_tuple()))}", "--tile", "64", "--out", str(out)]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "100.0%" in err and f"wrote {out}" in err
    assert np.array_equal(read_image(out), reference)


def test_export_command_resumes_only_when_asked(tmp_path, capsys):
    out = tmp_path / "r.png"
    paths = ExportPaths.of(out)
    paths.sidecar.write_text(
        json.dumps(
            {
                "format": "infinity-canvas-export",
                "version": 1,
                "identity": {},
                "key": "00" * 32,
                "render_tile": [64, 64],
                "total_strips": 1,
            }
        )
    )
    argv = ["export", "--preset", "tiny", "--rect", "0,0,64,64", "--out", str(out)]
    assert cli.main(argv) == 2
    assert "add --resume to continue it, or --restart" in capsys.readouterr().err
    assert cli.main([*argv, "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err
    assert cli.main([*argv, "--restart", "--device", "cpu"]) == 0
    assert out.exists() and not paths.sidecar.exists()


def test_export_command_compiles_on_one_device_only(tmp_path, capsys):
    argv = ["export", "--preset", "tiny", "--rect", "0,0,64,64", "--compile"]
    assert cli.main([*argv, "--devices", "cpu,cpu", "--out", str(tmp_path / "a.png")]) == 2
    assert "--compile renders on one device" in capsys.readouterr().err
    assert not (tmp_path / "a.png").exists()


def test_a_damaged_sidecar_is_a_clear_error(world, tmp_path):
    ExportPaths.of(tmp_path / "d.tif").sidecar.write_text('{"format": "infinity-canvas-export"')
    with pytest.raises(ExportError, match="unreadable"):
        export(world, tmp_path, "d.tif", resume=True)
    ExportPaths.of(tmp_path / "d.tif").sidecar.write_text(
        '{"format": "infinity-canvas-export", "version": 1}'
    )
    with pytest.raises(ExportError, match="damaged"):
        export(world, tmp_path, "d.tif", resume=True)


def test_export_command_exports_a_project_with_its_edits(generator, tmp_path, capsys):
    project_module = pytest.importorskip("app.project")
    edit = RerollRegion(-3, -2, 4, 3, salt=9)
    project = project_module.Project(
        model=project_module.ModelRef.of_preset("tiny"), seed=5, edits=(edit,)
    )
    path = project_module.save_project(tmp_path / "p.icanvas", project)
    out = tmp_path / "p.tif"
    argv = ["export", "--project", str(path), "--rect=-64,-48,128,96", "--device", "cpu"]
    assert cli.main([*argv, "--precision", "fp32", "--out", str(out)]) == 0
    world = World(generator, seed=5, precision="fp32")
    world.apply(edit)
    assert np.array_equal(read_image(out), world.render((-64, -48, 128, 96)))


def test_export_command_help_hides_testing_options(capsys):
    assert cli.main(["export", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--resume" in out and "--project" in out
    assert "--preset" not in out and "--render-tile" not in out


def test_export_command_refuses_a_bad_scale_as_a_usage_error(tmp_path, capsys):
    argv = ["export", "--preset", "tiny", "--rect", "0,0,64,64", "--scale", "1/3"]
    assert cli.main([*argv, "--out", str(tmp_path / "a.tif")]) == 2
    assert "scale must be 1, 1/2" in capsys.readouterr().err


def test_an_output_file_goes_to_the_disk_while_it_grows(tmp_path, monkeypatch):
    from engine import files

    synced = threading.Event()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced.set()

    monkeypatch.setattr(files, "SYNC_SECONDS", 0.01)
    monkeypatch.setattr(os, "fsync", fsync)
    with export_formats.OutputFile(tmp_path / "out.bin") as f:
        f.write(b"x" * (2 << 20))  # more than the buffer: it reaches the file
        assert synced.wait(5)  # before the file is closed
        syncer = f._syncer._thread
    assert not syncer.is_alive() and (tmp_path / "out.bin").stat().st_size == 2 << 20
