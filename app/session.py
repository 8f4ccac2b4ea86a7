"""The explored world and its renderers: World + tile feeds for the canvas and navigator.

A session owns one World and two TileFeeds on it (the canvas's, with the user's cache
size, and the navigator's, with a small cache of its own). Changing the model, the seed
or the device builds a new World and new feeds (a new *generation*) and retires the old
feeds: their queued work is dropped at once and a background thread waits for any render
in flight, so the UI never blocks on a rebuild. `shutdown` joins everything.

`load_model` (Qt-free, slow: call it off the UI thread) turns a ModelRef into a loaded
generator.

Several devices (`devices`, e.g. cuda:0,cuda:1 from `gui --devices`): each World gets
replicas on the other devices (engine.tile_workers.replicas), shared by both feeds, and
every feed's scheduler runs one worker per device.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace

from PySide6.QtCore import QObject, Signal

from app.project import ModelRef
from app.workers import TileFeed, close_in_background
from engine.cache import TileCache
from engine.checkpoint import DEFAULT_CHECKPOINT, file_digest, load_generator, read_checkpoint
from engine.device import device_label
from engine.edits import Edit
from engine.model import Generator
from engine.tile_workers import replicas
from engine.tiles import Rect
from engine.world import World

log = logging.getLogger(__name__)

NAV_CACHE_BYTES = 32 * 2**20


@dataclass(frozen=True)
class LoadedModel:
    """A generator and where it came from."""

    ref: ModelRef  # for files, with the sha256 of the bytes that were loaded
    generator: Generator
    untrained: bool  # random weights (a preset, or the default while none is shipped)

    @property
    def description(self) -> str:
        preset = self.generator.config.preset
        if self.ref.kind == "preset":
            return f"{preset} preset, random weights"
        detail = f"{preset}, untrained" if self.untrained else preset
        return f"{self.ref.label()} ({detail})"


def random_seed() -> int:
    return secrets.randbelow(2**31)


def default_is_untrained() -> bool:
    return not DEFAULT_CHECKPOINT.exists()


def load_model(ref: ModelRef, device: str) -> LoadedModel:
    """Load the model `ref` names on `device` (CheckpointError / ValueError if unusable)."""
    if ref.kind == "default":
        generator = load_generator(None, device=device)
        return LoadedModel(ref, generator, untrained=default_is_untrained())
    if ref.kind == "preset":
        generator = load_generator(preset=ref.preset, device=device)
        return LoadedModel(ref, generator, untrained=True)
    assert ref.path is not None
    checkpoint = read_checkpoint(ref.path, device=device)
    ref = replace(ref, sha256=ref.sha256 or file_digest(ref.path))
    return LoadedModel(ref, checkpoint.generator, untrained=False)


class WorldSession(QObject):
    """One World and its canvas and navigator feeds; see the module docstring."""

    edited = Signal(object)  # Rect: world pixels an edit / undo / redo may have changed
    rebuilt = Signal()  # a new World and new feeds (new generation)

    def __init__(
        self,
        model: LoadedModel,
        seed: int,
        *,
        precision: str = "auto",
        cache_bytes: int = 512 * 2**20,
        devices: Sequence[str] | None = None,
    ) -> None:
        """`devices`: render on these devices, one worker each (the model must be on the
        first); None: on the model's device."""
        super().__init__()
        self.model = model
        self.precision = precision
        self.devices = list(devices) if devices and len(devices) > 1 else None
        self._render_worlds: list[World] | None = None
        self._cache_bytes = cache_bytes
        self._generation = 0
        self._reaper: list[threading.Thread] = []
        self.world = self._new_world(model.generator, seed, (), ())
        self.feed, self.nav_feed = self._new_feeds()

    # Properties -------------------------------------------------------------------------

    @property
    def seed(self) -> int:
        return self.world.seed

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def device_text(self) -> str:
        if self._render_worlds is not None:
            names = ", ".join(str(w.device) for w in self._render_worlds)
            return f"{len(self._render_worlds)} devices ({names})"
        return device_label(self.world.device)

    @property
    def render_worlds(self) -> list[World] | None:
        """The world and its replicas, one per device of `devices`; None for one device."""
        return self._render_worlds

    @property
    def cache_bytes(self) -> int:
        return self._cache_bytes

    @cache_bytes.setter
    def cache_bytes(self, value: int) -> None:
        self._cache_bytes = int(value)
        self.feed.cache.max_bytes = self._cache_bytes

    # Rebuilding -------------------------------------------------------------------------

    def rebuild(
        self,
        *,
        model: LoadedModel | None = None,
        seed: int | None = None,
        edits: Sequence[Edit] = (),
        redo: Sequence[Edit] = (),
    ) -> None:
        """A new World (new model and/or seed) holding `edits`, with `redo` (next first)
        as its redo stack; retire the old feeds and start new ones."""
        self.model = model or self.model
        old = [self.feed, self.nav_feed]
        close_in_background(old, self._reaper)
        self.world = self._new_world(
            self.model.generator, self.seed if seed is None else seed, edits, redo
        )
        self.feed, self.nav_feed = self._new_feeds()
        self.rebuilt.emit()

    def _new_world(
        self, generator: Generator, seed: int, edits: Sequence[Edit], redo: Sequence[Edit]
    ) -> World:
        world = World(generator, seed, precision=self.precision)
        # Rebuild the redo stack through the public API: append the undone edits, then
        # undo them again, newest first, so that redo() returns redo[0] first.
        world.replace_edits([*edits, *redo])
        for _ in redo:
            world.undo()
        world.add_listener(lambda influence, w=world: self._changed(w, influence))
        # Copies of the weights, not a render: cheap enough for the UI thread.
        self._render_worlds = None if self.devices is None else replicas(world, self.devices)
        return world

    def _new_feeds(self) -> tuple[TileFeed, TileFeed]:
        self._generation += 1
        feed = TileFeed(
            self.world,
            self._generation,
            cache=TileCache(self._cache_bytes),
            prefetch_ring=1,
            worlds=self._render_worlds,
            name="canvas",
        )
        nav = TileFeed(
            self.world,
            self._generation,
            cache=TileCache(NAV_CACHE_BYTES),
            block_tiles=2,
            prefetch_ring=0,
            worlds=self._render_worlds,
            name="navigator",
        )
        return feed, nav

    def _changed(self, world: World, influence: Rect) -> None:
        # World listeners run on the thread that edited: the UI thread, here.
        if world is self.world:
            self.edited.emit(influence)

    # Shutdown ---------------------------------------------------------------------------

    def shutdown(self, timeout: float | None = None) -> None:
        """Close every feed and join every thread (renders in flight finish first)."""
        self.feed.cancel()
        self.nav_feed.cancel()
        self.feed.close(timeout)
        self.nav_feed.close(timeout)
        for thread in self._reaper:
            thread.join(timeout)
        self._reaper.clear()
