"""Photo placement by inversion: reconstruction, continuation, cancel, undo, save/open."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from engine import FillBetween, InversionSettings, Photo, PhotoPlacement, World, invert_photo
from engine.checkpoint import load_generator, random_generator
from engine.edits import edit_from_json
from engine.inversion import psnr
from engine.model import Discriminator, preset_config
from engine.tiles import Rect

RECT = Rect(-24, -24, 48, 48)  # world pixels of the placed photo (tiny: 8 px per cell)
PSNR_THRESHOLD_DB = 25.0


@pytest.fixture(scope="module")
def single_thread():
    """These optimisations are small: one thread is faster than two fighting for a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def generator():
    return load_generator(preset="tiny", device="cpu")


@pytest.fixture(scope="module")
def known_target(generator) -> np.ndarray:
    """An image the model itself generated with known latents: another world's style,
    local latents and noise at RECT."""
    return World(generator, seed=1).render(RECT)


@pytest.fixture(scope="module")
def placement(generator, known_target, single_thread) -> PhotoPlacement:
    result = invert_photo(World(generator, seed=0), Photo(known_target), RECT)
    assert result is not None
    return result


def as_float(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb.astype(np.float32)) / 127.5 - 1


def test_inverting_a_generated_image_reconstructs_it_within_the_default_steps(
    generator, known_target, placement
) -> None:
    world = World(generator, seed=0)
    before = psnr(as_float(world.render(RECT)), as_float(known_target))
    world.apply(placement)
    after = psnr(as_float(world.render(RECT)), as_float(known_target))
    assert before < 15
    assert after >= PSNR_THRESHOLD_DB, f"{after:.2f} dB after {InversionSettings().steps} steps"
    assert placement.psnr >= PSNR_THRESHOLD_DB


def _border_jump(image: np.ndarray, inner: Rect, frame: Rect) -> float:
    """Mean step across the rectangle's left and right borders over the mean step between
    neighbouring columns inside it (1 = the border is as smooth as the photo itself)."""
    f = image.astype(np.float32)
    x0, x1 = inner.x - frame.x, inner.right - frame.x
    y0, y1 = inner.y - frame.y, inner.bottom - frame.y
    rows = f[y0:y1]
    across = (
        np.abs(rows[:, x0] - rows[:, x0 - 1]).mean() + np.abs(rows[:, x1] - rows[:, x1 - 1]).mean()
    )
    inside = np.abs(np.diff(rows[:, x0:x1], axis=1)).mean()
    return float(across / 2 / inside)


def test_surroundings_continue_the_photo_and_far_surroundings_change_on_reroll(
    generator, known_target, placement
) -> None:
    frame = RECT.grown(64)
    world = World(generator, seed=0)
    world.apply(placement.with_photo_shown(True))
    shown = world.render(frame)
    # The photo pasted into the world it was not inverted for jumps at its border.
    pasted = World(generator, seed=3).render(frame)
    inner = Rect(RECT.x - frame.x, RECT.y - frame.y, RECT.w, RECT.h)
    pasted[inner.y : inner.bottom, inner.x : inner.right] = known_target
    continued, naive = _border_jump(shown, RECT, frame), _border_jump(pasted, RECT, frame)
    assert continued <= 1.5, continued
    assert continued < naive

    # Re-rolls: the far surroundings (beyond the inverted latent cells) change, the photo stays.
    frame = RECT.grown(160)
    inner = Rect(RECT.x - frame.x, RECT.y - frame.y, RECT.w, RECT.h)
    first = World(generator, seed=0)
    first.apply(placement.with_salt(1))
    second = World(generator, seed=0)
    second.apply(placement.with_salt(2))
    a, b = first.render(frame), second.render(frame)
    far = (slice(0, 40), slice(None))  # 120 px and more above the photo
    changed = (np.abs(a[far].astype(int) - b[far].astype(int)) > 16).mean()
    assert changed > 0.25, changed
    inside = (slice(inner.y + 8, inner.bottom - 8), slice(inner.x + 8, inner.right - 8))
    for image in (a, b):  # while the photo stays
        assert psnr(as_float(image[inside]), as_float(known_target[8:-8, 8:-8])) >= 22


def test_shown_photo_replaces_the_pixels_inside_its_feathered_border(
    generator, known_target, placement
) -> None:
    world = World(generator, seed=0)
    world.apply(placement.with_photo_shown(True))
    inner = world.render(RECT.grown(-placement.feather))
    f = placement.feather
    np.testing.assert_allclose(inner, known_target[f:-f, f:-f], atol=1)


def test_cancel_stops_at_once_and_leaves_the_world_unchanged(generator, known_target) -> None:
    world = World(generator, seed=0)
    before = world.render(RECT)
    steps = []
    result = world.place_photo(
        Photo(known_target),
        RECT,
        on_progress=steps.append,
        should_stop=lambda: len(steps) >= 2,
    )
    assert result is None and len(steps) == 2
    assert world.edits == ()
    np.testing.assert_array_equal(world.render(RECT), before)


def test_undo_removes_the_placement_and_a_tile_alone_equals_the_big_render(
    generator, placement
) -> None:
    world = World(generator, seed=0, precision="fp32")  # exact tiling
    before = world.render(RECT.grown(40))
    world.apply(placement)
    big = world.render(RECT.grown(40))
    assert not np.array_equal(big, before)
    for tile in (Rect(-64, -64, 40, 40), Rect(-20, -13, 24, 37), Rect(5, 9, 32, 16)):
        x, y = tile.x - (RECT.x - 40), tile.y - (RECT.y - 40)
        np.testing.assert_array_equal(world.render(tile), big[y : y + tile.h, x : x + tile.w])
    world.undo()
    np.testing.assert_array_equal(world.render(RECT.grown(40)), before)


def test_coarse_levels_render_the_placement_tile_by_tile(generator, placement) -> None:
    world = World(generator, seed=0, precision="fp32")  # exact tiling
    world.apply(placement.with_photo_shown(True))
    big = world.render(RECT.grown(64), scale=0.5)  # lod 1: 2 world px per pixel
    for tile in (Rect(-88, -88, 64, 64), Rect(-24, -40, 48, 80)):
        part = world.render(tile, scale=0.5)
        x, y = (tile.x - RECT.x + 64) // 2, (tile.y - RECT.y + 64) // 2
        np.testing.assert_array_equal(part, big[y : y + tile.h // 2, x : x + tile.w // 2])


def test_a_placement_made_for_another_model_renders_as_if_absent(placement) -> None:
    other = random_generator(dataclasses.replace(preset_config("tiny"), local_dim=8))
    assert not placement.fits(other.config)
    with_it, without = World(other, seed=0), World(other, seed=0)
    with_it.apply(placement)
    np.testing.assert_array_equal(with_it.render(RECT.grown(16)), without.render(RECT.grown(16)))
    assert with_it.digest(RECT, 0) == ""


def test_the_discriminator_features_join_the_loss(generator, known_target, single_thread) -> None:
    torch.manual_seed(0)
    discriminator = Discriminator(generator.config).eval()
    losses = {}
    for name, d in (("without", None), ("with", discriminator)):
        steps = []
        settings = InversionSettings(steps=2)
        invert_photo(
            World(generator, seed=0), Photo(known_target), RECT, settings=settings,
            discriminator=d, on_progress=steps.append,
        )  # fmt: skip
        losses[name] = steps[0].loss
    assert losses["with"] > losses["without"]


def test_save_and_open_reproduce_the_placement(generator, placement) -> None:
    shown = placement.with_photo_shown(True).with_salt(4)
    text = json.dumps(shown.to_json())
    loaded = edit_from_json(json.loads(text))
    assert isinstance(loaded, PhotoPlacement) and loaded.digest() == shown.digest()
    a, b = World(generator, seed=0), World(generator, seed=0)
    a.apply(shown)
    b.apply(loaded)
    np.testing.assert_array_equal(a.render(RECT.grown(30)), b.render(RECT.grown(30)))
    assert shown.digest() != placement.digest()


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d["latents"].update(data="not base64!"),
        lambda d: d["latents"].update(shape=[3, 3]),
        lambda d: d.update(rect=[0, 0, 0, 5]),
        lambda d: d.update(noises=d["noises"][:-1]),
        lambda d: d.update(photo_png="aGVsbG8="),
        lambda d: d.update(unknown=1),
    ],
    ids=["base64", "shape", "empty-rect", "noise-count", "photo", "unknown-field"],
)
def test_damaged_placement_data_is_refused(placement, damage) -> None:
    data = json.loads(json.dumps(placement.to_json()))
    damage(data)
    with pytest.raises(ValueError):
        edit_from_json(data)


def test_fill_between_regenerates_only_the_gap(generator, placement) -> None:
    c = generator.config.cell_px
    shift = placement.latent_cells[2] + 6  # cells: a gap of 6 cells between the two
    x, y, w, h = placement.latent_cells
    right = PhotoPlacement.from_json_fields(
        {
            **{k: v for k, v in placement.to_json().items() if k != "kind"},
            "rect": [placement.rect[0] + shift * c, *placement.rect[1:]],
            "latent_cells": [x + shift, y, w, h],
            "noise_origins": [
                [ox + shift * 2 ** (i // 2 + 1), oy]
                for i, (ox, oy) in enumerate(placement.noise_origins)
            ],
        }
    )
    fill = FillBetween.between(placement, right, salt=9)
    assert fill.cells() == Rect(x + w, y, 6, h)
    assert len(fill.style_layers()) == 2  # the left photo's style, the right one's over it
    loaded = edit_from_json(json.loads(json.dumps(fill.to_json())))
    assert isinstance(loaded, FillBetween) and loaded.digest() == fill.digest()
    world = World(generator, seed=0)
    world.apply(placement)
    world.apply(right)
    before = world.render(Rect(RECT.x, RECT.y, shift * c + RECT.w, RECT.h))
    world.apply(fill)
    after = world.render(Rect(RECT.x, RECT.y, shift * c + RECT.w, RECT.h))
    assert not np.array_equal(before, after)
    with pytest.raises(ValueError, match="overlap"):
        FillBetween.between(placement, placement, salt=1)
    near = PhotoPlacement.from_json_fields(
        {
            **{k: v for k, v in placement.to_json().items() if k != "kind"},
            "rect": [placement.rect[0] + (w - 4) * c, *placement.rect[1:]],
            "latent_cells": [x + w - 4, y, w, h],
        }
    )
    with pytest.raises(ValueError, match="too close"):
        FillBetween.between(placement, near, salt=1)
