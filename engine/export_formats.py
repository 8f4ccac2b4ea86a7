"""Streaming image writers for exports: tiled BigTIFF, PNG, pyramidal TIFF and Deep Zoom.

    write_image("tiff", part_path, strips, ImageSpec(width, height, tile=256), pool, store)

A writer consumes full-width *strips* of `spec.tile` rows (the last may be shorter), top to
bottom, and holds only a few: memory does not grow with the image's height. Each strip is
encoded on its own into a *payload* (the exact bytes its rows contribute to the file), on
the `pool` threads (zlib and libjpeg release the GIL) a bounded number of strips ahead of
the file writes, so encoding overlaps rendering. Every payload goes to the `store` (the
export's spill, engine.export) as it is written; a strip given as None is one the store
already has, and its payload is taken from there: that is how a resumed export writes the
same bytes without rendering or encoding those strips again.

- `tiff`: tiled BigTIFF through tifffile, fed encoded tiles in row-major order: deflate
  with the horizontal predictor (libdeflate through imagecodecs where installed, else the
  standard library's zlib) or JPEG (imagecodecs, YCbCr 4:2:0 as libtiff writes it). A
  strip's payload is its row of tiles.
- `png`: written here with zlib and struct: one deflate stream made of independently
  compressed strips, each ending with a sync flush (as pigz does), so strips compress in
  parallel; the adler32 checksums of the strips are combined. Each strip's first row uses
  the Sub filter and the others Up, so a strip needs no row of another.
- `pyramid` (pyramidal BigTIFF) and `dzi` (Deep Zoom): libvips, through pyvips and its
  binary wheel (the optional extra `export`). libvips reads the image as the same PNG
  stream (fast deflate level) from a custom source, strip by strip, with sequential
  access, and writes the pyramid as it goes.

Every byte this module writes itself goes through `OutputFile.write`, so a full disk
surfaces there as OSError(ENOSPC).

Legend: T tile side = rows per strip (S <= T for the last), W/H image width/height, pixels.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
import struct
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from engine.files import BackgroundSync

log = logging.getLogger(__name__)

FORMATS = ("tiff", "pyramid", "dzi", "png")
COMPRESSIONS: dict[str, tuple[str, ...]] = {  # the first one is the format's default
    "tiff": ("deflate", "jpeg", "none"),
    "pyramid": ("deflate", "jpeg", "none"),
    "dzi": ("jpeg", "png"),
    "png": ("deflate",),
}
EXTRA = "export"  # pip install 'infinity-canvas[export]': pyvips[binary] and imagecodecs
# Largest side each format can hold: TIFF stores sizes as 32-bit LONGs, PNG as 31-bit
# integers; libvips refuses sides over VIPS_MAX_COORD (1e7 in older builds, 1e8 in 8.18).
VIPS_MAX_SIDE = 10_000_000
MAX_SIDE = {"tiff": 2**32 - 1, "png": 2**31 - 1, "pyramid": VIPS_MAX_SIDE, "dzi": VIPS_MAX_SIDE}
# zlib level 1 (the default) compresses rendered landscapes (after prediction) ~1.5x faster
# than level 4 and ~4x faster than level 6, into files ~13% and ~20% larger: the encoder
# then costs under 10% of CPU generation time, and keeps up with fast GPUs. 4 is the
# balanced choice, 6 the smallest-files one.
DEFAULT_DEFLATE_LEVEL = 1
VIPS_STREAM_LEVEL = 1  # the PNG stream libvips reads: cheap to make and to inflate
SOFTWARE = "Infinity Canvas"
STRIPS_IN_FLIGHT_BYTES = 128 << 20  # raw strips encoded ahead of the file writes (>= 2)
_IDAT_MAX = 1 << 24  # compressed strips are split into IDAT chunks of at most 16 MiB

# A strip's payload: byte pieces whose concatenation is what the store keeps for it. Pieces
# pass to the file as they are: joining a gigapixel's tiles would copy it, holding the GIL.
Payload = Sequence[bytes]
T_ = TypeVar("T_")
R_ = TypeVar("R_")


class ExportError(ValueError):
    """An export cannot be done as asked; the message says why in user terms."""


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """What a writer needs beyond the pixels."""

    width: int
    height: int
    tile: int = 256  # T: tile side of TIFF and DZI tiles, and rows per strip
    compression: str = "deflate"
    quality: int = 90  # JPEG quality, 1..100
    deflate_level: int = DEFAULT_DEFLATE_LEVEL  # zlib level of deflate and PNG, 1..9
    description: str = ""  # stored in the file (TIFF ImageDescription, PNG tEXt)

    @property
    def strips(self) -> int:
        return -(-self.height // self.tile)


class StripStore(Protocol):
    """Where encoded strips are kept for a resume (engine.export's spill)."""

    def __contains__(self, index: object) -> bool: ...

    def get(self, index: int) -> Payload:
        """The payload of strip `index`, which the store has (as one piece)."""
        ...

    def put(self, index: int, payload: Payload) -> None: ...


class NullStore:
    """A store that keeps nothing: for writing without resume data."""

    def __contains__(self, index: object) -> bool:
        return False

    def get(self, index: int) -> Payload:
        raise KeyError(index)

    def put(self, index: int, payload: Payload) -> None:
        pass


class OutputFile(io.BufferedWriter):
    """A buffered binary output file; every write of this module passes `write`. It goes to
    the disk while it grows (engine.files.BackgroundSync), so the fsync before its rename
    finds little left to write."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(io.FileIO(str(path), "wb"), buffer_size=1 << 20)
        self._syncer = BackgroundSync(self.fileno(), Path(path).name)

    def write(self, data: Any) -> int:  # a seam for tests that simulate a full disk
        written = super().write(data)
        self._syncer.changed()
        return written

    def close(self) -> None:
        """Flush, fsync (the file is renamed into place next) and close."""
        if not self.closed:
            self._syncer.stop()
            try:
                self.flush()
                os.fsync(self.fileno())
            finally:
                super().close()


# Availability of the optional parts ----------------------------------------------------


def require(fmt: str, compression: str) -> None:
    """ExportError naming the extra to install when `fmt` with `compression` cannot be written."""
    if fmt in ("pyramid", "dzi"):
        _pyvips()
    elif fmt == "tiff" and compression == "jpeg":
        _imagecodecs()


def _pyvips() -> Any:
    try:
        import pyvips
    except Exception as exc:  # ImportError, or OSError when libvips itself is missing
        raise ExportError(
            "pyramidal TIFF and Deep Zoom exports need libvips: install the optional extra "
            f"with `pip install 'infinity-canvas[{EXTRA}]'` (pyvips and its binary wheel) "
            f"({type(exc).__name__}: {exc})"
        ) from None
    return pyvips


def deflate_function(level: int) -> Callable[[Any], bytes]:
    """zlib-format deflate at `level`: libdeflate (through imagecodecs) where it is installed,
    about 1.5x as fast as the standard library's zlib at level 1 and 10% smaller; else zlib.
    Both release the GIL, so encoder threads compress in parallel."""
    try:
        from imagecodecs import deflate_encode
    except ImportError:
        return lambda data: zlib.compress(data, level)
    return lambda data: bytes(deflate_encode(data, level=level))


def _imagecodecs() -> Any:
    try:
        import imagecodecs
    except ImportError:
        raise ExportError(
            "JPEG compression in a tiled TIFF needs the imagecodecs package: install the "
            f"optional extra with `pip install 'infinity-canvas[{EXTRA}]'`, or use deflate"
        ) from None
    return imagecodecs


# Helpers ------------------------------------------------------------------------------


def ordered_map(
    pool: Executor, fn: Callable[[T_], R_], items: Iterable[T_], ahead: int
) -> Iterator[R_]:
    """`map(fn, items)` on `pool`, in order, with at most `ahead` items in flight; results
    are handed on as soon as they and those before them are done. Items already submitted
    run to the end even when the consumer stops early (the pool's shutdown waits for them)."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        while pending and (len(pending) >= ahead or pending[0].done()):
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def encoded_strips(
    strips: Iterable[np.ndarray | None],
    encode: Callable[[int, np.ndarray], Payload],
    spec: ImageSpec,
    pool: Executor,
    store: StripStore,
) -> Iterator[Payload]:
    """The payload of every strip, in order: `encode(index, strip)` on the pool and put in
    the store as soon as it is encoded (so a cancelled export keeps every strip it encoded);
    or, for a strip given as None, the store's."""
    ahead = max(2, min(8, STRIPS_IN_FLIGHT_BYTES // (spec.tile * spec.width * 3)))

    def job(item: tuple[int, np.ndarray | None]) -> Payload:
        index, strip = item
        if strip is None:
            return store.get(index)
        payload = encode(index, strip)
        store.put(index, payload)
        return payload

    yield from ordered_map(pool, job, enumerate(strips), ahead)


def adler32_combine(adler1: int, adler2: int, len2: int) -> int:
    """adler32(a + b) from adler32(a), adler32(b) and len(b) (zlib's adler32_combine)."""
    base = 65521
    rem = len2 % base
    sum1 = adler1 & 0xFFFF
    sum2 = (rem * sum1) % base
    sum1 += (adler2 & 0xFFFF) + base - 1
    sum2 += ((adler1 >> 16) & 0xFFFF) + ((adler2 >> 16) & 0xFFFF) + base - rem
    return (sum1 % base) | ((sum2 % base) << 16)


# Tiled BigTIFF (tifffile) -------------------------------------------------------------


def _tile_grid(block: np.ndarray, side: int, pad: str) -> np.ndarray:
    """uint8 [n, T, T, 3]: the tiles of a block of a strip's rows, left to right, grown to
    full tiles (zeros, or `edge` repeats for JPEG) where the block ends inside one. A view
    of the block where it holds whole tiles (a padded copy otherwise): whole-block numpy
    operations keep the encoder threads' trips through the GIL few."""
    s, w = block.shape[:2]
    n = -(-w // side)
    if (s, w) != (side, n * side):
        mode = "edge" if pad == "edge" else "constant"
        block = np.pad(block, ((0, side - s), (0, n * side - w), (0, 0)), mode=mode)
    return block.reshape(side, n, side, 3).transpose(1, 0, 2, 3)


def tiff_tile_encoder(spec: ImageSpec) -> Callable[[np.ndarray], list[bytes]]:
    """Encodes a block uint8 [S, w, 3] of one strip's rows into its TIFF tiles, left to
    right: `w` is a multiple of T, or the block reaches the image's right edge (its last
    tile is padded, as are the tiles of a last strip shorter than T)."""
    side = spec.tile
    if spec.compression == "deflate":
        deflate = deflate_function(spec.deflate_level)

        def encode_tiles(block: np.ndarray) -> list[bytes]:
            tiles = _tile_grid(block, side, "zero")  # [n, T, T, 3]
            d = np.empty(tiles.shape, np.uint8)  # after the TIFF predictor 2 (horizontal)
            d[:, :, 0] = tiles[:, :, 0]
            np.subtract(tiles[:, :, 1:], tiles[:, :, :-1], out=d[:, :, 1:])
            return [deflate(tile.data) for tile in d]

    elif spec.compression == "jpeg":
        codecs = _imagecodecs()

        def encode_tiles(block: np.ndarray) -> list[bytes]:
            return [
                bytes(
                    codecs.jpeg8_encode(
                        tile,
                        level=spec.quality,
                        colorspace="RGB",
                        outcolorspace="YCBCR",
                        subsampling="420",
                    )
                )
                for tile in np.ascontiguousarray(_tile_grid(block, side, "edge"))
            ]

    else:

        def encode_tiles(block: np.ndarray) -> list[bytes]:
            return [tile.tobytes() for tile in _tile_grid(block, side, "zero")]

    return encode_tiles


def tiff_payload(tiles: list[bytes]) -> Payload:
    """A strip's payload from its encoded tiles: a head (their count and byte counts, uint32
    LE), then the tiles."""
    return [struct.pack(f"<I{len(tiles)}I", len(tiles), *(len(t) for t in tiles)), *tiles]


def _tiff_strip_encoder(spec: ImageSpec) -> Callable[[int, np.ndarray], Payload]:
    encode_tiles = tiff_tile_encoder(spec)
    return lambda index, strip: tiff_payload(encode_tiles(strip))


def _tiff_tiles(payloads: Iterable[Payload]) -> Iterator[bytes]:
    """The encoded tiles of every strip: the pieces after the head as encoded, or cut from
    the one piece a store gives back (bytes: tifffile takes nothing else)."""
    for payload in payloads:
        if len(payload) > 1:
            yield from payload[1:]
            continue
        whole = payload[0]
        (count,) = struct.unpack_from("<I", whole)
        offset = 4 + 4 * count
        for length in struct.unpack_from(f"<{count}I", whole, 4):
            yield whole[offset : offset + length]
            offset += length


def write_tiff(
    path: Path,
    strips: Iterable[np.ndarray | None],
    spec: ImageSpec,
    pool: Executor,
    store: StripStore,
) -> None:
    """A tiled BigTIFF."""
    payloads = encoded_strips(strips, _tiff_strip_encoder(spec), spec, pool, store)
    write_tiff_payloads(path, payloads, spec)


def write_tiff_payloads(path: Path, payloads: Iterable[Payload], spec: ImageSpec) -> None:
    """A tiled BigTIFF from the payload of every strip, in order (see `tiff_payload`)."""
    import tifffile

    if spec.compression == "jpeg":
        _imagecodecs()  # tifffile looks the codec up even for encoded tiles
    options: dict[str, Any] = {"compression": None}
    if spec.compression == "deflate":
        options = {"compression": "zlib", "predictor": 2}
    elif spec.compression == "jpeg":
        options = {"compression": "jpeg", "subsampling": (2, 2)}
    with OutputFile(path) as f, tifffile.TiffWriter(f, bigtiff=True) as tif:
        tif.write(
            data=_tiff_tiles(payloads),
            shape=(spec.height, spec.width, 3),
            dtype=np.uint8,
            tile=(spec.tile, spec.tile),
            photometric="rgb",
            metadata=None,
            software=SOFTWARE,
            description=spec.description or None,
            **options,
        )


# PNG (standard library) ----------------------------------------------------------------


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


_PNG_PAYLOAD = struct.Struct("<IQ")  # adler32 and length of the filtered rows, then deflate


def _png_strip_encoder(spec: ImageSpec, level: int) -> Callable[[int, np.ndarray], Payload]:
    last = spec.strips - 1

    def encode(index: int, strip: np.ndarray) -> Payload:
        """Filter and deflate one strip on its own (raw deflate, ends byte-aligned)."""
        s, w = strip.shape[:2]
        rows = strip.reshape(s, w * 3)
        raw = np.empty((s, w * 3 + 1), np.uint8)
        raw[0, 0] = 1  # Sub: each byte minus the byte 3 to its left (the same channel)
        raw[0, 1:4] = rows[0, :3]
        np.subtract(rows[0, 3:], rows[0, :-3], out=raw[0, 4:])
        raw[1:, 0] = 2  # Up: each byte minus the byte above it
        np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])
        c = zlib.compressobj(level, zlib.DEFLATED, -15)
        data = c.compress(raw.data) + c.flush(zlib.Z_FINISH if index == last else zlib.Z_SYNC_FLUSH)
        return [_PNG_PAYLOAD.pack(zlib.adler32(raw.data), raw.nbytes) + data]

    return encode


def png_stream(
    strips: Iterable[np.ndarray | None],
    spec: ImageSpec,
    pool: Executor,
    store: StripStore,
    *,
    level: int,
) -> Iterator[bytes]:
    """The bytes of a PNG of `strips`, piece by piece (8-bit RGB, not interlaced)."""
    ihdr = struct.pack(">IIBBBBB", spec.width, spec.height, 8, 2, 0, 0, 0)
    head = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
    head += _png_chunk(b"tEXt", b"Software\0" + SOFTWARE.encode())
    if spec.description:
        head += _png_chunk(b"tEXt", b"Comment\0" + spec.description.encode("latin-1", "replace"))
    yield head
    adler = 1
    zlib_header = zlib.compress(b"", level)[:2]
    pending = zlib_header
    for (payload,) in encoded_strips(strips, _png_strip_encoder(spec, level), spec, pool, store):
        piece_adler, length = _PNG_PAYLOAD.unpack_from(payload)
        adler = adler32_combine(adler, piece_adler, length)
        data = pending + memoryview(payload)[_PNG_PAYLOAD.size :]
        pending = b""
        for start in range(0, len(data), _IDAT_MAX):
            yield _png_chunk(b"IDAT", data[start : start + _IDAT_MAX])
    yield _png_chunk(b"IDAT", struct.pack(">I", adler)) + _png_chunk(b"IEND", b"")


def write_png(
    path: Path,
    strips: Iterable[np.ndarray | None],
    spec: ImageSpec,
    pool: Executor,
    store: StripStore,
) -> None:
    with OutputFile(path) as f:
        for piece in png_stream(strips, spec, pool, store, level=spec.deflate_level):
            f.write(piece)


# libvips: pyramidal TIFF and Deep Zoom --------------------------------------------------


class _IteratorSource:
    """A pyvips source reading from an iterator of byte pieces.

    libvips calls `read` from its worker threads, one at a time; the lock makes that a
    rule. An exception of the iterator (a cancellation, a render error) must not unwind
    through C: it is kept in `error` and libvips sees the end of the stream.
    """

    def __init__(self, pyvips: Any, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self.error: BaseException | None = None
        self.source = pyvips.SourceCustom()
        self.source.on_read(self.read)

    def read(self, size: int) -> bytes:
        with self._lock:
            if self.error is not None:
                return b""
            try:
                while len(self._buffer) < size:
                    piece = next(self._pieces, None)
                    if piece is None:
                        break
                    self._buffer += piece
            except BaseException as exc:  # noqa: B036 - handed back to the caller of libvips
                self.error = exc
                return b""
            out = bytes(self._buffer[:size])
            del self._buffer[:size]
            return out


def write_vips(
    fmt: str,
    path: Path,
    strips: Iterable[np.ndarray | None],
    spec: ImageSpec,
    pool: Executor,
    store: StripStore,
) -> None:
    """A pyramidal BigTIFF file at `path`; or for Deep Zoom the folder `path` (NAME.dzi.part)
    holding NAME.dzi and NAME_files/ (`finish` moves them beside it)."""
    pyvips = _pyvips()
    stream = png_stream(strips, spec, pool, store, level=VIPS_STREAM_LEVEL)
    source = _IteratorSource(pyvips, stream)
    quiet = _QuietWhenStopped(source)  # a stopped stream is not libvips' warning to give
    logging.getLogger("pyvips").addFilter(quiet)
    try:
        image = pyvips.Image.new_from_source(source.source, "", access="sequential")
        if fmt == "pyramid":
            options: dict[str, Any] = {"compression": spec.compression}
            if spec.compression == "jpeg":
                options["Q"] = spec.quality
            elif spec.compression == "deflate":
                options |= {"predictor": "horizontal", "level": spec.deflate_level}
            image.tiffsave(
                str(path),
                tile=True,
                pyramid=True,
                bigtiff=True,
                tile_width=spec.tile,
                tile_height=spec.tile,
                **options,
            )
        else:
            path.mkdir(parents=True, exist_ok=True)
            suffix = f".jpg[Q={spec.quality}]" if spec.compression == "jpeg" else ".png"
            # 1 px overlap, so tiles of T - 2 px are T px images, the usual Deep Zoom layout
            image.dzsave(
                str(path / _dzi_stem(path)), tile_size=spec.tile - 2, overlap=1, suffix=suffix
            )
    except pyvips.Error as exc:
        if source.error is not None:
            raise source.error from None
        if "No space left" in str(exc):
            raise OSError(errno.ENOSPC, "No space left on device", str(path)) from None
        raise ExportError(f"libvips could not write {path.name}: {exc}") from None
    finally:
        logging.getLogger("pyvips").removeFilter(quiet)
    if source.error is not None:
        raise source.error
    if fmt == "pyramid":  # durable before it is renamed into place
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _QuietWhenStopped(logging.Filter):
    def __init__(self, source: _IteratorSource) -> None:
        super().__init__()
        self.source = source

    def filter(self, record: logging.LogRecord) -> bool:
        return self.source.error is None


def dzi_paths(out: Path) -> tuple[Path, Path]:
    """The two things a Deep Zoom export is: NAME.dzi and the folder NAME_files."""
    return out, out.with_name(out.stem + "_files")


def _dzi_stem(part_dir: Path) -> str:
    return part_dir.name.removesuffix(".part").removesuffix(".dzi")


# Dispatch -----------------------------------------------------------------------------


def write_image(
    fmt: str,
    path: Path,
    strips: Iterable[np.ndarray | None],
    spec: ImageSpec,
    pool: Executor,
    store: StripStore | None = None,
) -> None:
    """Write `strips` (uint8 [S, W, 3], or None for strips the store has) as `fmt` at `path`."""
    store = NullStore() if store is None else store
    if fmt == "tiff":
        write_tiff(path, strips, spec, pool, store)
    elif fmt == "png":
        write_png(path, strips, spec, pool, store)
    elif fmt in ("pyramid", "dzi"):
        write_vips(fmt, path, strips, spec, pool, store)
    else:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def finish(fmt: str, part: Path, out: Path) -> None:
    """Move a complete `part` to its final name(s); for Deep Zoom the .dzi moves last."""
    if fmt != "dzi":
        part.replace(out)
        return
    stem = _dzi_stem(part)
    dzi, files = dzi_paths(out)
    if files.exists():
        shutil.rmtree(files)
    (part / f"{stem}_files").replace(files)
    (part / f"{stem}.dzi").replace(dzi)
    shutil.rmtree(part, ignore_errors=True)


def remove(path: Path) -> None:
    """Remove a partial output, a file or (Deep Zoom) a folder; nothing if it is absent."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def compressed_ratio(fmt: str, compression: str, quality: int) -> float:
    """Rough output bytes per raw RGB byte of rendered landscapes (estimates only)."""
    if compression == "none":
        ratio = 1.0
    elif compression == "jpeg":
        ratio = 0.03 + 0.12 * (quality / 100) ** 3
    else:  # deflate, or PNG tiles
        ratio = 0.4
    return ratio * (4 / 3 if fmt in ("pyramid", "dzi") else 1.0)


def spill_ratio(fmt: str, compression: str, quality: int) -> float:
    """Rough spill bytes per raw byte: the spill holds the encoded strips."""
    if fmt in ("pyramid", "dzi"):
        return 0.45  # the PNG stream libvips reads, at VIPS_STREAM_LEVEL
    return compressed_ratio(fmt, compression, quality)
