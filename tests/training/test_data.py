"""The image folder: validation up front, in-memory bank, patches and their vertical labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine.model import preset_config
from training.data import load_images

TINY = preset_config("tiny")


def test_images_are_found_recursively_and_bad_files_are_listed(tmp_path):
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (120, 90), (10, 20, 30)).save(tmp_path / "a.jpg")
    Image.new("L", (90, 100), 128).save(tmp_path / "sub" / "b.webp")
    Image.new("RGB", (20, 20)).save(tmp_path / "small.png")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "notes.txt").write_text("ignored")
    bank = load_images(tmp_path, full_size=TINY.full_size, patch_size=TINY.patch_size)
    assert len(bank) == 2
    assert sorted(bank.report.short_sides) == [90, 90]
    skipped = dict(bank.report.skipped)
    assert set(skipped) == {"small.png", "broken.png"}
    assert "too small" in skipped["small.png"]
    assert "unreadable" in skipped["broken.png"]
    assert "2 usable images" in bank.report.describe()


def test_a_folder_without_usable_images_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_images(tmp_path / "missing", full_size=101, patch_size=53)
    with pytest.raises(ValueError, match="no image files"):
        load_images(tmp_path, full_size=101, patch_size=53)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match=r"no usable image.*broken\.jpg"):
        load_images(tmp_path, full_size=101, patch_size=53)


def test_real_label_is_the_vertical_offset_of_the_patch_in_the_full_image(tmp_path):
    full, patch = TINY.full_size, TINY.patch_size
    rows = np.repeat(np.arange(full, dtype=np.uint8)[:, None], full, axis=1)  # pixel value = row
    Image.fromarray(np.stack([rows] * 3, axis=-1)).save(tmp_path / "rows.png")
    bank = load_images(tmp_path, full_size=full, patch_size=patch, scale_crops=False)
    patches, labels = bank.sample_patches(16, torch.Generator().manual_seed(0))
    assert patches.shape == (16, 3, patch, patch)
    oy = torch.round((patches[:, 0, 0, 0] + 1) * 127.5)
    torch.testing.assert_close(labels, oy / (full - patch) * 2 - 1)


def test_photos_are_kept_at_the_resolution_the_crops_can_use(tmp_path):
    Image.new("RGB", (600, 400), (200, 100, 50)).save(tmp_path / "big.jpg")
    full = TINY.full_size
    with_scale = load_images(tmp_path, full_size=full, patch_size=TINY.patch_size, scale_crops=True)
    _, h, w = with_scale.images[0].shape
    assert h == 2 * full and abs(w - 3 * full) <= 1  # a 50% crop keeps full detail
    centre = load_images(tmp_path, full_size=full, patch_size=TINY.patch_size, scale_crops=False)
    assert centre.images[0].shape == (3, full, full)  # the official centre square
    assert with_scale.report.short_sides == centre.report.short_sides == (400,)


def test_a_seed_fixes_the_sampled_patches(landscapes):
    bank = load_images(
        landscapes, full_size=TINY.full_size, patch_size=TINY.patch_size, scale_crops=True
    )
    a = bank.sample_patches(6, torch.Generator().manual_seed(3))
    b = bank.sample_patches(6, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].min() >= -1 and a[0].max() <= 1
