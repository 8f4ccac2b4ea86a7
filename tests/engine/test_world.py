"""The central invariant: a tile is a pure function of (weights, seed, edits, position, lod)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from engine import load_generator
from engine.edits import RerollRegion, edit_from_json
from engine.latents import Field, Stream, field_key, normal_fields, normal_grid, normal_grids
from engine.tiles import Rect
from engine.world import (
    ACTIVATION_BUDGET,
    MIN_CHUNK_PX,
    VIEW_BUDGET_MAX,
    VIEW_BYTES_PER_ELEMENT,
    World,
    view_budget,
)

from .conftest import assert_tiles_match_one_render


@pytest.mark.parametrize("lod", [0, 1, 2, 3, 5])
def test_tile_alone_equals_the_same_pixels_of_one_big_render(world, lod):
    shrink = 2 ** max(0, lod - 2)  # keep the lattice work of coarse lods small
    big = Rect(-230 // shrink, -170 // shrink, 420 // shrink, 330 // shrink)
    assert_tiles_match_one_render(world, big, lod, tiles=6)


def test_tile_alone_equals_tile_in_a_batch_of_nine(world):
    rects = [Rect(64 * i - 100, 64 * j - 50, 64, 64) for i in range(3) for j in range(3)]
    batch = world.render_lod_float(rects, 0)
    for i, r in enumerate(rects):
        alone = world.render_lod_float([r], 0)[0]
        assert (alone - batch[i]).abs().max().item() <= 1e-4


def test_uint8_render_is_off_by_at_most_one_level(world):
    big = world.render((-100, -60, 240, 160))
    part = world.render((-37, -11, 90, 77))
    diff = np.abs(part.astype(int) - big[49:126, 63:153].astype(int))
    assert diff.max() <= 1


def test_same_seed_same_pixels_in_any_order_and_other_seeds_differ(generator):
    a, b = World(generator, 5, precision="fp32"), World(generator, 5, precision="fp32")
    rects = [Rect(0, 0, 50, 50), Rect(-500, 300, 50, 50)]
    first = [a.render(r.as_tuple()) for r in rects]
    second = [b.render(r.as_tuple()) for r in reversed(rects)][::-1]
    assert all(np.array_equal(x, y) for x, y in zip(first, second, strict=True))
    other = World(generator, 6, precision="fp32").render(rects[0].as_tuple())
    assert not np.array_equal(first[0], other)


def test_render_shape_follows_scale(world):
    assert world.render((10, 20, 300, 200), 1.0).shape == (200, 300, 3)
    assert world.render((10, 20, 300, 200), 0.5).shape == (100, 150, 3)
    assert world.render((10, 20, 300, 200), 0.3).shape == (60, 90, 3)
    assert world.render((10, 20, 30, 20), 2.5).shape == (50, 75, 3)


def test_coarse_lod_is_a_downscaled_picture_of_the_full_render(world):
    full = world.render_lod_float([Rect(0, 0, 256, 256)], 0)[0]
    coarse = world.render_lod_float([Rect(0, 0, 128, 128)], 1)[0]
    downscaled = torch.nn.functional.avg_pool2d(full[None], 2)[0]
    # a preview, not a copy: same picture, finer texture missing
    correlation = torch.corrcoef(torch.stack([coarse.flatten(), downscaled.flatten()]))[0, 1]
    assert correlation > 0.5


def test_reroll_changes_only_pixels_inside_its_influence_and_undo_restores(world):
    view = Rect(-400, -300, 800, 600)
    before = world.render(view.as_tuple())
    edit = RerollRegion(x=-2, y=-1, w=3, h=2, salt=99)
    world.apply(edit)
    after = world.render(view.as_tuple())
    influence = world.influence(edit)
    mask = np.zeros(before.shape[:2], bool)
    inside = influence.intersection(view)
    mask[inside.y - view.y : inside.bottom - view.y, inside.x - view.x : inside.right - view.x] = (
        True
    )
    changed = np.any(before != after, axis=2)
    assert changed.any()
    assert not changed[~mask].any()
    assert world.undo() == edit
    assert np.array_equal(world.render(view.as_tuple()), before)
    assert world.redo() == edit
    assert np.array_equal(world.render(view.as_tuple()), after)


def test_tile_digest_changes_only_for_tiles_an_edit_touches(world):
    from engine.tiles import TileIndex

    near, far = TileIndex(0, 0, 0), TileIndex(0, 40, 40)
    d_near, d_far = world.tile_digest(near), world.tile_digest(far)
    world.apply(RerollRegion(x=0, y=0, w=2, h=2, salt=1))
    assert world.tile_digest(near) != d_near
    assert world.tile_digest(far) == d_far


def test_edits_round_trip_through_json():
    edit = RerollRegion(x=-5, y=3, w=4, h=4, salt=12)
    assert edit_from_json(edit.to_json()) == edit
    with pytest.raises(ValueError):
        edit_from_json({"kind": "nonsense"})
    with pytest.raises(ValueError):
        edit_from_json({"kind": "reroll", "x": 1})


def test_addressed_noise_does_not_depend_on_the_window():
    key = field_key(3, Stream.NOISE, 2)
    big = normal_grid(key, -50, -40, 100, 80, channels=2)
    small = normal_grid(key, -7, 9, 13, 5, channels=2)
    assert torch.equal(big[:, 49:54, 43:56], small)
    assert abs(big.mean().item()) < 0.05 and abs(big.std().item() - 1) < 0.05


def test_addressed_values_never_change():
    """Every world's pixels are made of these values: a change to the hash would change
    every saved project and resumed export."""
    key = field_key(7, Stream.NOISE, 1)
    assert key == 2991923255
    noise = normal_grid(key, -3, 5, 4, 1).flatten().tolist()
    assert noise == [
        -0.003005842911079526,
        0.37233054637908936,
        0.3682664632797241,
        0.03568551689386368,
    ]
    latent = normal_grid(field_key(7, Stream.LOCAL_LATENT), 100, -2, 2, 1, channels=2)
    assert latent.flatten().tolist() == [
        2.041220188140869,
        0.44632676243782043,
        0.29687783122062683,
        -0.7408604025840759,
    ]


def test_fields_drawn_together_equal_fields_drawn_alone():
    """One normal_fields call for a latent and several noise layers (as a render draws
    them) gives the same bits as drawing each field by itself."""
    fields = [
        Field(field_key(3, Stream.LOCAL_LATENT), [(-4, 2), (9, -1)], 6, 5, channels=3),
        Field(field_key(3, Stream.NOISE, 0), [(-30, 12), (40, -7)], 21, 17),
        Field(field_key(3, Stream.NOISE, 1), [(-31, 11), (39, -8)], 44, 9),
    ]
    together = normal_fields(fields)
    for field, drawn in zip(fields, together, strict=True):
        alone = normal_grids(field.key, list(field.origins), field.w, field.h, field.channels)
        assert drawn.shape == (2, field.channels, field.h, field.w)
        assert torch.equal(drawn, alone)
    assert not torch.equal(together[1][:, :, :9, :21], together[2][:, :, :9, :21])


def test_public_api_renders_the_documented_shape():
    from engine import World as PublicWorld
    from engine import load_generator as public_loader

    world = PublicWorld(public_loader(preset="tiny", seed=0, device="cpu"), seed=7)
    assert world.render((5, -7, 33, 21), scale=1.0).shape == (21, 33, 3)
    assert world.render((5, -7, 40, 20), scale=0.5).shape == (10, 20, 3)


def test_views_get_a_larger_budget_only_on_a_gpu_with_room_for_it(monkeypatch):
    def on_a_gpu_of(gib: int) -> int:
        memory = SimpleNamespace(total_memory=gib * 2**30)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: memory)
        return view_budget(torch.device("cuda"))

    assert view_budget(torch.device("cpu")) == ACTIVATION_BUDGET["cpu"]
    assert on_a_gpu_of(8) == ACTIVATION_BUDGET["cuda"]  # never below the default
    assert on_a_gpu_of(24) == 24 * 2**30 // VIEW_BYTES_PER_ELEMENT
    assert on_a_gpu_of(141) == VIEW_BUDGET_MAX < 2**31  # below cuDNN's slow kernels


def test_render_chunks_keep_a_smallest_side_whatever_the_budget():
    """`paper` on a CPU: its budget alone would allow 128-px windows, mostly margin."""
    paper = World(load_generator(preset="paper", seed=0, device="cpu"), 0)
    assert paper.largest_activation(Rect(0, 0, 512, 512), 0) > ACTIVATION_BUDGET["cpu"]
    assert [paper.chunk_px(lod) for lod in range(4)] == [MIN_CHUNK_PX, MIN_CHUNK_PX // 2, 128, 128]
