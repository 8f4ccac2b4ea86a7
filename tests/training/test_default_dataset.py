"""Offline tests of the default-dataset assembly: selection, licences, conversion, attribution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training import default_dataset as dd
from training.default_dataset import Manifest, PhotoSpec

COPYRIGHT = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: 2014 Someone
License: GPL-2+

Files: debian/*
Copyright: 2015 Packager
License: LGPL-2.1+

Files: data/themes/beach/*
Copyright: 2013 Theme author
License: CC-BY-SA-3.0

Files: data/themes/beach/background.jpg
       16.04/other.jpg
Copyright: 2008 Photographer
License: CC-BY-3.0
 The full licence text follows here.
"""


def _image(path: Path, size: tuple[int, int], mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(size[0])
    channels = {"RGB": 3, "RGBA": 4}[mode]
    data = rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(data).save(path, format="PNG" if mode == "RGBA" else None)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "pkg" / "root"
    images = root / "usr/share/wallpapers/Lake/contents/images"
    _image(images / "64x40.jpg", (64, 40))
    meta = {"KPlugin": {"Authors": [{"Name": "Jane Doe"}], "License": "LGPLv3", "Name": "Lake"}}
    (root / "usr/share/wallpapers/Lake/metadata.json").write_text(json.dumps(meta))
    _image(images / "160x100.jpg", (160, 100))
    _image(images / "128x80.jpg", (128, 80))
    (images / "100x100.jpg").symlink_to("160x100.jpg")  # KDE style: other sizes are symlinks
    (images / "broken.jpg").write_bytes(b"not an image")
    _image(root / "usr/share/themes/beach/background.jpg", (90, 120), "RGBA")
    (root / "usr/share/edj").mkdir(parents=True)
    (root / "usr/share/edj/Peaks.edj").write_bytes(b"edj")
    doc = root / "usr/share/doc/fake-pkg"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(COPYRIGHT)
    return root


SPECS = [
    PhotoSpec("Lake", "fake-pkg", "usr/share/wallpapers/Lake/contents/images/*", "MIT"),
    PhotoSpec("beach", "fake-pkg", "usr/share/themes/beach/background.jpg", "MIT"),
    PhotoSpec("Missing", "fake-pkg", "usr/share/wallpapers/Missing/*.jpg", "MIT"),
    PhotoSpec("Peaks", "fake-pkg", "usr/share/edj/Peaks.edj", "MIT", kind="edj"),
]


def _fake_expand(edj: Path, dest: Path) -> Path:
    _image(dest / edj.stem / "img-50x30.png", (50, 30))
    _image(dest / edj.stem / "img-150x90.png", (150, 90))
    (dest / edj.stem / "bg.edc").write_text("collections {}")
    return dest


def test_select_file_takes_the_largest_readable_image(tree: Path) -> None:
    assert dd.select_file(tree, SPECS[0]).name == "160x100.jpg"
    assert dd.select_file(tree, SPECS[2]) is None
    assert dd.select_file(tree, SPECS[3]).name == "Peaks.edj"


def test_licence_for_prefers_exact_names_and_shared_folders() -> None:
    beach = "/usr/share/sddm/themes/beach/background.jpg"
    assert dd.licence_for(beach, COPYRIGHT) == "CC-BY-3.0"
    assert dd.licence_for("/usr/share/sddm/themes/beach/icon.png", COPYRIGHT) == "CC-BY-SA-3.0"
    assert dd.licence_for("/usr/share/backgrounds/other.jpg", COPYRIGHT) == "CC-BY-3.0"
    assert dd.licence_for("/usr/share/wallpapers/x.jpg", COPYRIGHT) == "GPL-2+"
    assert dd.licence_for("/usr/share/wallpapers/x.jpg", None) is None
    assert dd.copyright_for(beach, COPYRIGHT) == ("CC-BY-3.0", "2008 Photographer")
    # A shared outer folder ("data/") is not enough: the innermost one must match.
    fonts = COPYRIGHT + "\nFiles: data/fonts/*\nCopyright: x\nLicense: GPL-FE\n"
    assert dd.licence_for("/usr/share/e/data/backgrounds/Peaks.edj", fonts) == "GPL-2+"


def test_convert_photo_limits_the_longer_side(tmp_path: Path) -> None:
    src = _image(tmp_path / "big.png", (300, 120), "RGBA")
    original, size = dd.convert_photo(src, tmp_path / "out.jpg", max_side=100)
    assert original == (300, 120) and size == (100, 40)
    with Image.open(tmp_path / "out.jpg") as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (100, 40)
    # Small images are not upscaled.
    _, size = dd.convert_photo(src, tmp_path / "same.jpg", max_side=1000)
    assert size == (300, 120)


def test_process_tree_and_outputs(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    manifest = Manifest(max_side=100)
    messages: list[str] = []
    dd.process_tree(
        tree,
        SPECS,
        out,
        manifest,
        package_version="1.0-1",
        expand=_fake_expand,
        on_progress=messages.append,
    )
    dd.write_outputs(out, manifest)

    by_name = {p.file: p for p in manifest.photos}
    assert set(by_name) == {"fake-pkg__Lake.jpg", "fake-pkg__beach.jpg", "fake-pkg__Peaks.jpg"}
    for name in by_name:
        with Image.open(out / name) as im:
            assert max(im.size) <= 100 and im.mode == "RGB"
    lake = by_name["fake-pkg__Lake.jpg"]
    assert lake.original_size == (160, 100) and lake.size == (100, 62)
    assert lake.source_path == "/usr/share/wallpapers/Lake/contents/images/160x100.jpg"
    assert lake.licence == "GPL-2+" and lake.licence_source == "copyright"
    assert lake.copyright == "2014 Someone"
    assert lake.notes == "metadata.json: License LGPLv3; Jane Doe"
    assert by_name["fake-pkg__beach.jpg"].licence == "CC-BY-3.0"  # exact name beats beach/*
    peaks = by_name["fake-pkg__Peaks.jpg"]
    assert peaks.source_path == "/usr/share/edj/Peaks.edj::Peaks/img-150x90.png"
    assert peaks.original_size == (150, 90)
    assert [(s.name, s.package) for s in manifest.skipped] == [("Missing", "fake-pkg")]
    assert "no match" in manifest.skipped[0].reason

    rows = [
        line
        for line in (out / "ATTRIBUTION.md").read_text().splitlines()
        if line.startswith("| fake-pkg__")
    ]
    assert len(rows) == 3
    assert (
        "| fake-pkg__Lake.jpg | fake-pkg 1.0-1 | "
        "`/usr/share/wallpapers/Lake/contents/images/160x100.jpg` | GPL-2+ | 2014 Someone "
        "| 160x100 | metadata.json: License LGPLv3; Jane Doe |"
    ) in rows
    assert "- Missing (fake-pkg): no match" in (out / "ATTRIBUTION.md").read_text()

    data = json.loads((out / "manifest.json").read_text())
    assert data["count"] == 3 and data["max_side"] == 100
    assert data["total_bytes"] == sum((out / n).stat().st_size for n in by_name)
    assert data["skipped"][0]["name"] == "Missing"
    assert {p["file"] for p in data["photos"]} == set(by_name)


def test_edj_failure_is_skipped(tree: Path, tmp_path: Path) -> None:
    def failing(edj: Path, dest: Path) -> Path:
        raise RuntimeError("edje_decc not found")

    manifest = Manifest(max_side=100)
    dd.process_tree(tree, [SPECS[3]], tmp_path / "o", manifest, expand=failing, on_progress=str)
    assert not manifest.photos
    assert manifest.skipped[0].reason == "edj: edje_decc not found"


def test_missing_apt_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(dd.shutil, "which", lambda name: None)
    with pytest.raises(dd.AptUnavailableError, match="apt-get"):
        dd.assemble(tmp_path / "out", on_progress=str)
    assert dd.main(["--out", str(tmp_path / "out")]) == 2


def test_assemble_skips_packages_it_cannot_fetch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(dd, "require_apt", lambda: None)

    def no_download(package: str, dest: Path) -> Path:
        raise RuntimeError(f"E: Unable to locate package {package}")

    monkeypatch.setattr(dd, "fetch_deb", no_download)
    specs = (PhotoSpec("x", "nope", "a/*.jpg", "MIT"),)
    manifest = dd.assemble(
        tmp_path / "out", work_dir=tmp_path / "w", sources=specs, on_progress=str
    )
    assert not manifest.photos and "Unable to locate" in manifest.skipped[0].reason
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_sources_table_is_consistent() -> None:
    names = [(s.package, s.name) for s in dd.SOURCES]
    assert len(names) == len(set(names)) == 25
    assert {s.kind for s in dd.SOURCES} <= {"image", "edj", "wheel"}
    assert all(s.licence_hint for s in dd.SOURCES)
