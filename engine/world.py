"""An endless world: every pixel is a pure function of (weights, seed, edits, position, lod).

    world = World(generator, seed=7)
    rgb = world.render((x, y, w, h), scale=1.0)   # uint8 [round(h*scale), round(w*scale), 3]

Rendering a rectangle draws the local latents, coordinates and per-layer noise of
exactly the lattice window that covers it (addressed randomness, engine.latents), runs
the generator once on that window and crops. Because the generator is padding-free,
any rectangle rendered alone equals the same pixels cut from any larger render.

Levels of detail: lod k shows the world downscaled by 2**k. For k < stages the texture
synthesizer stops k stages early and its skip RGB is the picture (no full-resolution
work is done and thrown away). Such a preview is the image the generator had built by
that stage: the same structure, colours and layout, without the finer stages' texture
and with a sub-pixel alignment offset (engine.model.geometry.level_shift). Beyond that,
lod k renders the coarsest level (2 pixels per lattice cell) and averages 2**(k-stages+1)
square blocks of it. A trained generator's later stages still shift the colours, so a
level whose colours are off goes through an affine colour map fitted to the world's full
renders (engine.preview).

Styles: edits may paint other global styles onto the world (engine.styles). A window
that no style layer reaches renders with the world's base style through the generator's
one-style path, exactly as without them; a window entirely covered by one style renders
through the same path with that style; only a window where styles meet blends them per
pixel, with the weights evaluated at every layer's own positions.

Legend: B batch, C local latent channels, Hc/Wc lattice cells, H/W pixels.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.device import fast_dtype, to_device
from engine.edits import Edit, edit_cells, edits_digest
from engine.latents import Field, Stream, field_key, normal_fields
from engine.model import Generator, coordinate_grid
from engine.model.generator import StyleBlend
from engine.model.geometry import (
    CellWindow,
    structure_layer_grids,
    texture_layer_grids,
    texture_layer_sizes,
    window_covering,
)
from engine.model.graphs import GraphedCalls
from engine.model.kernel_choice import shapes_are_steady
from engine.preview import apply_colour_map, colour_maps
from engine.styles import Style, StyleLayer, composite_weights
from engine.tiles import Rect, TileIndex, lod_for_scale, lod_rect

if TYPE_CHECKING:
    from engine.photo import Photo
    from engine.placement import PhotoPlacement

RENDER_CHUNK_PX = 2048  # largest window side `render` asks for at once, in lod pixels
# Largest tensor of one generator call, in elements: bounds memory (latent hashing works in
# int64), and on GPUs cuDNN slows down by half once a tensor exceeds 2**31 elements.
ACTIVATION_BUDGET = {"cuda": 2**30, "cpu": 2**25}
# Smallest side of a chunk at lod 0, whatever the budget (MIN_CHUNK_PX >> lod at lod > 0, at
# least 128): smaller windows spend most of their work on margins. `paper`'s CPU budget
# allowed 128-px windows: 0.044 MP/s on a 2-core CPU, against 0.101 MP/s at 512 x 512 (a
# peak of 1.4 GB). At lod 4, 256-px chunks were slower than 128-px ones (29-30 s against
# 24-26 s for a 12,000 x 8,000 px overview).
MIN_CHUNK_PX = 512
# Interactive windows (engine.scheduler's) may be larger on a GPU with room for them: fewer
# windows per view, fewer shapes for cuDNN to plan. A window's peak is about 4 bytes of
# GPU memory per element of its largest tensor (5.3 GB at 1.26 * 2**30), so it gets at most
# a quarter of the GPU's memory, and never 2**31 elements.
VIEW_BUDGET_MAX = 2**31 - 2**24
VIEW_BYTES_PER_ELEMENT = 16

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
COMPILED_DEVICES = ("cuda", "cpu")  # where `World.compiled` compiles (inductor's backends)


@dataclass(frozen=True, eq=False)
class ResolvedStyle:
    """A style as the generator reads it: z_g [1, Dg] and w [1, Dg] or W+ [1, slots, Dg]."""

    z_g: torch.Tensor
    w: torch.Tensor


@dataclass(frozen=True, slots=True)
class LodPlan:
    """How lod pixels map to generator output: texture `level` and block-average `pool`."""

    level: int
    pool: int


class World:
    """A seed, an edit log and a generator; renders any rectangle at any level of detail.

    Thread-safety: rendering may run on worker threads while another thread edits; every
    render reads one consistent snapshot of the edit log.
    """

    def __init__(self, generator: Generator, seed: int = 0, *, precision: str = "auto") -> None:
        """`precision`: auto (bf16/fp16 where it pays), fp32, bf16 or fp16. For a world that
        renders through torch.compile, see `compiled()`."""
        self.generator = generator
        self.config = generator.config
        self.seed = int(seed)
        self.device = generator.device
        if precision == "auto":
            self.dtype = fast_dtype(self.device)
        elif precision in PRECISIONS:
            self.dtype = PRECISIONS[precision]
        else:
            raise ValueError(f"precision must be auto or one of {', '.join(PRECISIONS)}")
        self._styles: dict[Style, ResolvedStyle] = {}
        self._styles_lock = threading.Lock()
        self.base_style = Style.from_seed(self.seed)
        base = self.resolve_style(self.base_style)
        self.z_g = base.z_g  # [1, Dg]: one style shared by every tile
        self.w = base.w  # [1, Dg]
        self._budget = ACTIVATION_BUDGET.get(self.device.type, ACTIVATION_BUDGET["cpu"])
        self._view_budget = view_budget(self.device)
        self._synthesize = generator.synthesize
        self._compiled_synthesize: list[Callable[..., torch.Tensor]] = []  # shared by copies
        self.is_compiled = False
        # Steady renders (exports) on a GPU replay one-style calls from CUDA graphs.
        self._graphs: GraphedCalls | None = None
        if self.device.type == "cuda":
            self._graphs = GraphedCalls(self.device)
        self._edits: tuple[Edit, ...] = ()
        self._redo: list[Edit] = []
        self._lock = threading.Lock()
        self._listeners: list[Callable[[Rect], None]] = []

    # Edit log ---------------------------------------------------------------------------

    @property
    def edits(self) -> tuple[Edit, ...]:
        return self._edits

    def apply(self, edit: Edit) -> None:
        """Append an edit (clears redo)."""
        with self._lock:
            self._edits = (*self._edits, edit)
            self._redo.clear()
        self._changed(edit)

    def undo(self) -> Edit | None:
        """Remove the newest edit; returns it (None if the log is empty)."""
        with self._lock:
            if not self._edits:
                return None
            edit = self._edits[-1]
            self._edits = self._edits[:-1]
            self._redo.append(edit)
        self._changed(edit)
        return edit

    def redo(self) -> Edit | None:
        """Re-apply the newest undone edit; returns it (None if there is none)."""
        with self._lock:
            if not self._redo:
                return None
            edit = self._redo.pop()
            self._edits = (*self._edits, edit)
        self._changed(edit)
        return edit

    def replace(self, old: Edit, new: Edit) -> None:
        """Put `new` where `old` is in the log (e.g. a re-rolled placement); redo is kept.

        ValueError when `old` is not in the log.
        """
        with self._lock:
            index = next((i for i, e in enumerate(self._edits) if e is old), None)
            if index is None:
                raise ValueError("that edit is not in the world's log")
            self._edits = (*self._edits[:index], new, *self._edits[index + 1 :])
        self._changed(old)
        self._changed(new)

    def replace_edits(self, edits: Sequence[Edit]) -> None:
        """Set the whole log (opening a project); clears redo."""
        with self._lock:
            old = self._edits
            self._edits = tuple(edits)
            self._redo.clear()
        for edit in (*old, *self._edits):
            self._changed(edit)

    @property
    def can_undo(self) -> bool:
        return bool(self._edits)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def add_listener(self, callback: Callable[[Rect], None]) -> None:
        """Call `callback(influence)` (world pixels) after every change of the edit log."""
        self._listeners.append(callback)

    @property
    def precision(self) -> str:
        """The name of the render precision (fp32, bf16 or fp16), as `World(precision=)` takes."""
        return next(name for name, dtype in PRECISIONS.items() if dtype == self.dtype)

    def replica(self, device: torch.device | str) -> World:
        """The same world on `device`: its own copy of the weights, the same seed, base style,
        precision and edit log (a snapshot; later edits do not reach it). Renders of a
        replica on a device of the same kind are identical to this world's (engine.tile_workers
        spreads tile jobs over replicas)."""
        device = torch.device(device)
        generator = copy.deepcopy(self.generator).to(device)
        generator.requires_grad_(False)
        other = World(generator, self.seed, precision=self.precision)
        if self.base_style != other.base_style:
            other.base_style = self.base_style
            base = other.resolve_style(self.base_style)
            other.z_g, other.w = base.z_g, base.w
        other._edits = self._edits
        return other

    @property
    def can_compile(self) -> bool:
        """Whether `compiled()` compiles on this world's device."""
        return self.device.type in COMPILED_DEVICES

    def compiled(self) -> World:
        """This world (its generator and styles, a snapshot of its edit log) rendering its
        one-style windows through torch.compile, on CUDA or the CPU (elsewhere: this world
        itself). Meant for exports, whose windows have one shape: a canvas's changing
        windows would compile again and again.

        Each new window shape compiles once (the CPU needs a C++ compiler): about 15 s for
        `paper` on an H200 and 33 s for `lite` on a 2-core CPU, or 3-5 s once torch's
        on-disk cache holds it, with up to 3 GB of memory in use meanwhile. Then `paper`'s
        2048 x 512 windows render at 54 MP/s instead of 44 on the H200 (61 and 48 as an
        export renders them, one ahead: engine.tile_workers.SingleDevice), and `lite`'s
        1024 x 768 windows at 1.55 MP/s instead of 1.15 on the CPU. The numbers differ
        from eager ones by float rounding (one level in 0.02% of the CPU's pixels), the
        same in every process."""
        if not self.can_compile or self.is_compiled:
            return self
        if not self._compiled_synthesize:  # one compiled function for this world's copies
            torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
            compiled = torch.compile(self.generator.synthesize, dynamic=False)
            self._compiled_synthesize.append(compiled)
        other = self._sharing(edits=self._edits)
        other._synthesize, other._graphs = self._compiled_synthesize[0], None
        other.is_compiled = True
        return other

    def restyled(self, style: Style) -> World:
        """The same generator and seed with `style` as the base style and no edits (for
        previews such as a style gallery's thumbnails)."""
        other = self._sharing(edits=())
        other.base_style = style
        base = self.resolve_style(style)
        other.z_g, other.w = base.z_g, base.w
        return other

    def with_edit(self, edit: Edit) -> World:
        """This world with `edit` applied on top, sharing generator and styles, leaving this
        world as it is (for previews of an edit that is not made yet, such as a stroke
        being painted)."""
        return self._sharing(edits=(*self._edits, edit))

    def _sharing(self, *, edits: tuple[Edit, ...]) -> World:
        """A shallow copy (generator and style cache shared) with its own edit
        log `edits`, no redo history and no listeners."""
        other = copy.copy(self)
        other._edits, other._redo = edits, []
        other._lock, other._listeners = threading.Lock(), []
        return other

    def resolve_style(self, style: Style) -> ResolvedStyle:
        """z_g and w (or W+) of `style` on the render device, cached; ValueError when an
        explicit style does not fit this model."""
        with self._styles_lock:
            found = self._styles.get(style)
        if found is not None:
            return found
        cfg = self.config
        z_g = style.global_latent(cfg.global_dim).to(self.device)[None]  # [1, Dg]
        if style.w_plus is None:
            with torch.no_grad():
                w = self.generator.mapping(z_g)  # [1, Dg]
        else:
            w = torch.tensor(style.w_plus, dtype=torch.float32, device=self.device)[None]
            if tuple(w.shape[1:]) != (cfg.style_slots, cfg.global_dim):
                raise ValueError(
                    f"style W+ is {tuple(w.shape[1:])}, the model needs "
                    f"{(cfg.style_slots, cfg.global_dim)}"
                )
        resolved = ResolvedStyle(z_g, w)
        with self._styles_lock:
            if len(self._styles) > 256:
                self._styles.clear()
            self._styles[style] = resolved
        return resolved

    def _changed(self, edit: Edit) -> None:
        influence = self.influence(edit)
        for callback in list(self._listeners):
            callback(influence)

    def fitting(self, edits: tuple[Edit, ...]) -> tuple[Edit, ...]:
        """The edits that can act on this model (a photo inverted with another model cannot:
        it renders as if absent until the model it was made for is back)."""
        if all(edit.fits(self.config) for edit in edits):
            return edits
        return tuple(edit for edit in edits if edit.fits(self.config))

    def influence(self, edit: Edit) -> Rect:
        """World pixels an edit can change: its cells grown by the generator's receptive field.

        Texture cell c feeds pixels [cell_px * (c - 5), cell_px * (c + 1)) (a 5-cell window is
        the smallest with output), and z_l cell c feeds texture cells c - m .. c + m; one cell
        more on each side covers the sub-pixel offset of the coarse levels.
        """
        cells = edit_cells(edit, self.config.stages)
        m, c = self.config.structure_margin, self.config.cell_px
        x0, y0 = cells.x - m - 6, cells.y - m - 6
        x1, y1 = cells.right + m + 2, cells.bottom + m + 2
        return Rect(x0 * c, y0 * c, (x1 - x0) * c, (y1 - y0) * c)

    def place_photo(
        self, photo: Photo, rect: Rect | tuple[int, int, int, int], **options: Any
    ) -> PhotoPlacement | None:
        """Invert `photo` at world pixels `rect` and apply the resulting `PhotoPlacement`.

        Options are those of `engine.inversion.invert_photo` (settings, discriminator,
        on_progress, should_stop). Returns the placement, or None when cancelled, in which
        case the world is unchanged. Long: call it off the UI thread.
        """
        from engine.inversion import invert_photo  # the inversion module imports this one

        placement = invert_photo(self, photo, rect, **options)
        if placement is not None:
            self.apply(placement)
        return placement

    # Geometry ---------------------------------------------------------------------------

    def plan(self, lod: int) -> LodPlan:
        stages = self.config.stages
        if lod < 0:
            raise ValueError(f"lod must be >= 0, got {lod}")
        if lod < stages:
            return LodPlan(level=stages - lod, pool=1)
        return LodPlan(level=1, pool=2 ** (lod - stages + 1))

    def window(self, rect: Rect, lod: int) -> CellWindow:
        """The lattice window whose output covers `rect` (lod pixels)."""
        plan = self.plan(lod)
        p = plan.pool
        return window_covering(
            (rect.x * p, rect.y * p, rect.w * p, rect.h * p), plan.level, self.config.stages
        )

    def largest_activation(self, rect: Rect, lod: int) -> int:
        """Elements of the largest intermediate tensor when rendering `rect` at `lod`."""
        win, plan, cfg = self.window(rect, lod), self.plan(lod), self.config
        m = cfg.structure_margin
        largest = (cfg.local_dim + cfg.coord_dim) * (win.w + 2 * m) * (win.h + 2 * m)
        widths = texture_layer_sizes(win.w, plan.level)
        heights = texture_layer_sizes(win.h, plan.level)
        for i, (w, h) in enumerate(zip(widths, heights, strict=True)):
            largest = max(largest, cfg.texture_channels[i // 2] * w * h)
        return largest

    def window_fits(self, rect: Rect, lod: int) -> bool:
        """Whether one interactive window of `rect` (lod pixels) stays within the view
        budget (`view_budget`)."""
        return self.largest_activation(rect, lod) <= self._view_budget

    def max_batch(self, rect: Rect, lod: int) -> int:
        """How many interactive windows of `rect`'s size one call may render within the view
        budget."""
        return max(1, self._view_budget // self.largest_activation(rect, lod))

    def chunk_px(self, lod: int) -> int:
        """Side (lod px, a multiple of 128) of the largest square window within the budget,
        at least MIN_CHUNK_PX >> lod."""
        side, smallest = RENDER_CHUNK_PX, max(128, MIN_CHUNK_PX >> lod)
        while (
            side > smallest and self.largest_activation(Rect(0, 0, side, side), lod) > self._budget
        ):
            side -= 128
        return side

    def chunk_width(self, lod: int, height: int) -> int:
        """Width (lod px, a multiple of 128, at least `chunk_px`) of the widest window of
        `height` rows that costs no more than the square chunk: wide, short windows keep the
        chunk's throughput (their margins are what they add, under 1% at 8192 x 512)."""
        side = self.chunk_px(lod)
        width = max(side, side * side // max(height, 1) // 128 * 128)
        while (
            width > side and self.largest_activation(Rect(0, 0, width, height), lod) > self._budget
        ):
            width -= 128
        return width

    def digest(self, rect: Rect, lod: int, edits: tuple[Edit, ...] | None = None) -> str:
        """Digest of the edits that can change the pixels of `rect` at `lod`."""
        win = self.window(rect, lod)
        cells = Rect(*win.latent_rect(self.config.structure_margin))
        edits = self.fitting(self._edits if edits is None else edits)
        return edits_digest(edits, cells, stages=self.config.stages)

    def tile_digest(self, tile: TileIndex) -> str:
        return self.digest(tile.rect, tile.lod)

    # Rendering --------------------------------------------------------------------------

    def render(
        self,
        rect: Rect | tuple[int, int, int, int],
        scale: float = 1.0,
        *,
        calibrated: bool = True,
    ) -> np.ndarray:
        """uint8 [round(h * scale), round(w * scale), 3] of a world rectangle (full-res pixels).

        Exact at scale 1 and at 2**-k for rectangles on the 2**k grid; other scales render
        the next finer lod and resample it (box filter down, nearest neighbour up).
        `calibrated=False` leaves previews in the generator's own colours (no colour map to
        fit first: quick one-off previews such as a style's thumbnail).
        """
        rect = Rect.of(rect)
        out_w, out_h = round(rect.w * scale), round(rect.h * scale)
        if out_w <= 0 or out_h <= 0:
            raise ValueError(f"rect {rect.as_tuple()} at scale {scale} is empty")
        lod = lod_for_scale(scale)
        f = 2**lod
        src = lod_rect(rect, lod)
        image = self._render_chunked(src, lod, calibrated)
        box = ((rect.x - src.x * f) / f, (rect.y - src.y * f) / f)
        exact = box == (0.0, 0.0) and (src.w, src.h) == (out_w, out_h)
        if exact:
            return image
        resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BOX
        pil = Image.fromarray(image).resize(
            (out_w, out_h), resample, box=(box[0], box[1], box[0] + rect.w / f, box[1] + rect.h / f)
        )
        return np.asarray(pil)

    def _render_chunked(self, rect: Rect, lod: int, calibrated: bool) -> np.ndarray:
        out = np.empty((rect.h, rect.w, 3), np.uint8)
        step = self.chunk_px(lod)
        for y in range(0, rect.h, step):
            for x in range(0, rect.w, step):
                part = Rect(rect.x + x, rect.y + y, min(step, rect.w - x), min(step, rect.h - y))
                rgb = self.render_lod_float([part], lod, calibrated=calibrated)
                out[y : y + part.h, x : x + part.w] = to_uint8(rgb, pinned=True)[0]
        return out

    def render_lod(self, rects: Sequence[Rect], lod: int) -> np.ndarray:
        """uint8 [B, h, w, 3] of equal-sized rectangles at `lod`, in one generator call."""
        rgb = self.render_lod_float(rects, lod)
        return to_uint8(rgb)

    @torch.no_grad()
    def render_lod_float(
        self,
        rects: Sequence[Rect],
        lod: int,
        edits: tuple[Edit, ...] | None = None,
        *,
        calibrated: bool = True,
    ) -> torch.Tensor:
        """float32 [B, 3, h, w] (about -1..1, on the render device) of equal-sized rects.

        Previews (lod >= 1) go through the generator's colour map of their texture level
        (engine.preview) unless `calibrated` is False."""
        if not rects:
            raise ValueError("nothing to render")
        size = (rects[0].w, rects[0].h)
        if any((r.w, r.h) != size for r in rects):
            raise ValueError("a batch needs rectangles of one size")
        edits = self.fitting(self._edits if edits is None else edits)
        plan = self.plan(lod)
        p = plan.pool
        windows = [self.window(r, lod) for r in rects]
        cw, ch = max(w.w for w in windows), max(w.h for w in windows)
        windows = [CellWindow(w.x, w.y, cw, ch) for w in windows]  # one shape per batch
        # z_l [B, C, Hc, Wc], noises per layer [B, 1, H_l, W_l], coords [B, 3, Hc, Wc]
        z_l, noises = self._random_inputs(windows, plan.level, edits)
        coords = self._coordinates(windows)
        autocast = (
            torch.autocast(self.device.type, dtype=self.dtype)
            if self.dtype != torch.float32
            else contextlib.nullcontext()
        )
        groups = self._style_groups(windows, plan.level, edits)
        with autocast:
            if len(groups) == 1 and len(groups[0][1]) == len(windows):
                style, _ = groups[0]
                rgb = self._synthesize_styled(style, z_l, coords, noises, plan.level)
            else:
                rgb = torch.empty(0)
                for style, index in groups:
                    part = self._synthesize_styled(
                        style,
                        z_l[index],
                        coords[index],
                        [n[index] for n in noises],
                        plan.level,
                    )
                    if rgb.numel() == 0:
                        rgb = part.new_empty((len(windows), *part.shape[1:]))
                    rgb[index] = part
        rgb = rgb.float()  # [B, 3, H, W]
        crops = []
        for i, (r, w) in enumerate(zip(rects, windows, strict=True)):
            ox, oy, _, _ = w.output_rect(plan.level, self.config.stages)
            x0, y0 = r.x * p - ox, r.y * p - oy
            crops.append(rgb[i, :, y0 : y0 + r.h * p, x0 : x0 + r.w * p])
        out = torch.stack(crops)
        out = F.avg_pool2d(out, p) if p > 1 else out
        colour_map = self.preview_colour_maps().get(plan.level) if calibrated and lod else None
        if colour_map is not None:
            out = apply_colour_map(out, colour_map)
        self._composite(out, rects, lod, edits)
        return out

    def preview_colour_maps(self) -> dict[int, torch.Tensor]:
        """The preview colour map per texture level of this world's base style (fitted on
        first use)."""
        return colour_maps(self.generator, self.base_style, self._calibration_render)

    def _calibration_render(self, rect: Rect, lod: int) -> torch.Tensor:
        world = World(self.generator, self.seed, precision="fp32").restyled(self.base_style)
        return world.render_lod_float([rect], lod, edits=(), calibrated=False)[0]

    def _composite(
        self, rgb: torch.Tensor, rects: Sequence[Rect], lod: int, edits: tuple[Edit, ...]
    ) -> None:
        """Let edits change finished pixels (e.g. a placed photo shown as is), in place."""
        compositing = [e for e in edits if type(e).modify_rgb is not Edit.modify_rgb]
        f = 2**lod
        for i, r in enumerate(rects):
            world_rect = Rect(r.x * f, r.y * f, r.w * f, r.h * f)
            for edit in compositing:
                if self.influence(edit).intersects(world_rect):
                    edit.modify_rgb(rgb[i], r, lod)

    def _synthesize_styled(
        self,
        style: ResolvedStyle | StyleBlend,
        z_l: torch.Tensor,
        coords: torch.Tensor,
        noises: list[torch.Tensor],
        level: int,
    ) -> torch.Tensor:
        if isinstance(style, StyleBlend):
            return self.generator.synthesize(style, style, z_l, coords, noises, levels=level)
        if self._graphs is not None and shapes_are_steady():
            return self._graphs(
                level,
                lambda z_g, w, z_l, coords, *noises: self._synthesize(
                    z_g, w, z_l, coords, list(noises), levels=level
                ),
                [style.z_g, style.w, z_l, coords, *noises],
            )
        return self._synthesize(style.z_g, style.w, z_l, coords, noises, levels=level)

    def _style_groups(
        self, windows: list[CellWindow], level: int, edits: tuple[Edit, ...]
    ) -> list[tuple[ResolvedStyle | StyleBlend, list[int]]]:
        """Windows grouped by how they are styled: one group per single style (the base
        style for windows no style layer reaches), one group per window that blends."""
        layers = [layer for edit in edits for layer in edit.style_layers()]
        base = ResolvedStyle(self.z_g, self.w)
        if not layers:
            return [(base, list(range(len(windows))))]
        single: dict[Style | None, list[int]] = {}
        blended: list[tuple[ResolvedStyle | StyleBlend, list[int]]] = []
        for i, window in enumerate(windows):
            style = self._window_style(window, level, layers)
            if isinstance(style, StyleBlend):
                blended.append((style, [i]))
            else:
                single.setdefault(style, []).append(i)
        groups: list[tuple[ResolvedStyle | StyleBlend, list[int]]] = [
            (base if style is None else self.resolve_style(style), index)
            for style, index in single.items()
        ]
        return groups + blended

    def _window_style(
        self, window: CellWindow, level: int, layers: list[StyleLayer]
    ) -> Style | None | StyleBlend:
        """The single style of a window (None: the base style), or its per-pixel blend."""
        cfg = self.config
        grids = structure_layer_grids(
            window, blocks=cfg.structure_blocks, kernel=cfg.structure_kernel, stages=cfg.stages
        )
        widest = grids[0]  # every layer's positions lie within the G_S input's
        extent = Rect(
            widest.x0,
            widest.y0,
            widest.step * (widest.w - 1) + 1,
            widest.step * (widest.h - 1) + 1,
        )
        touching = [layer for layer in layers if layer.bounds.intersects(extent)]
        if not touching:
            return None
        palette: list[Style | None] = [None]
        indexed = []
        for layer in touching:
            style = None if layer.style == self.base_style else layer.style
            if style not in palette:
                palette.append(style)
            indexed.append((palette.index(style), layer))
        grids += texture_layer_grids(window, cfg.stages, level)
        maps = [composite_weights(indexed, g, len(palette), self.device) for g in grids]
        for k, style in enumerate(palette):
            if all(bool((m[k] == 1.0).all()) for m in maps):
                return style
        resolved = [self.resolve_style(s) if s is not None else None for s in palette]
        z_g = torch.cat([self.z_g if r is None else r.z_g for r in resolved])  # [K, Dg]
        w_plus = torch.cat([self._w_plus(self.w if r is None else r.w) for r in resolved])
        n = cfg.structure_blocks + 1
        return StyleBlend(
            z_g=z_g,
            w_plus=w_plus,  # [K, slots, Dg]
            structure_weights=tuple(m[None] for m in maps[:n]),  # [1, K, h, w]
            texture_weights=tuple(m[None] for m in maps[n:]),
        )

    def _w_plus(self, w: torch.Tensor) -> torch.Tensor:
        """[1, Dg] or [1, slots, Dg] -> [1, slots, Dg]."""
        return w[:, None].expand(-1, self.config.style_slots, -1) if w.ndim == 2 else w

    def _random_inputs(
        self, windows: list[CellWindow], level: int, edits: tuple[Edit, ...] = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The windows' local latents z_l [B, C, Hc, Wc] and the noise of their first
        2 * `level` texture layers (per layer [B, 1, H_l, W_l]), edits applied; drawn together
        (engine.latents.normal_fields)."""
        m = self.config.structure_margin
        cells = [Rect(*w.latent_rect(m)) for w in windows]
        per_window = [w.noise_rects(self.config.stages, level) for w in windows]
        fields = [
            Field(
                field_key(self.seed, Stream.LOCAL_LATENT),
                [(c.x, c.y) for c in cells],
                cells[0].w,
                cells[0].h,
                self.config.local_dim,
            )
        ] + [
            Field(
                field_key(self.seed, Stream.NOISE, layer),
                [(rects[layer][0], rects[layer][1]) for rects in per_window],
                per_window[0][layer][2],
                per_window[0][layer][3],
            )
            for layer in range(2 * level)
        ]
        z_l, *noises = normal_fields(fields, device=self.device)
        for i, c in enumerate(cells):
            for edit in edits:
                if edit.cells().intersects(c):
                    edit.modify_local_latents(z_l[i], c, self.seed)
                    for layer, (field, noise) in enumerate(zip(fields[1:], noises, strict=True)):
                        x, y = field.origins[i]
                        edit.modify_noise(noise[i], layer, Rect(x, y, field.w, field.h))
        return z_l, noises

    def _coordinates(self, windows: list[CellWindow]) -> torch.Tensor:
        m = self.config.structure_margin
        # Lattice cell c is centred on full-resolution pixel cell_px * c - 2 * (cell_px - 1):
        # positions are measured from y = 0 in cells, so y = 0 is the vertical middle.
        centre = 2 * (self.config.cell_px - 1) / self.config.cell_px
        rows = torch.stack([torch.arange(w.y - m, w.y + w.h + m) for w in windows]).float() - centre
        cols = torch.stack([torch.arange(w.x - m, w.x + w.w + m) for w in windows]).float() - centre
        return coordinate_grid(
            to_device(rows, self.device), to_device(cols, self.device), self.config
        )


def view_budget(device: torch.device) -> int:
    """Elements of the largest tensor of one interactive render call on `device`: the
    activation budget, or on a GPU with room for it up to VIEW_BUDGET_MAX.

    On an H200 a 1920 x 1080 `paper` view is then one window of 2048 x 1280 px instead of
    two of 1024 x 1280: warm views took 75-81 ms against 81-101 ms, and the first view on
    a new thread 89-98 ms against 147-168 ms (one shape to plan, not two)."""
    budget = ACTIVATION_BUDGET.get(device.type, ACTIVATION_BUDGET["cpu"])
    if device.type != "cuda":
        return budget
    memory = torch.cuda.get_device_properties(device).total_memory
    return max(budget, min(VIEW_BUDGET_MAX, memory // VIEW_BYTES_PER_ELEMENT))


def quantised(rgb: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] floats in [-1, 1] -> uint8 [B, H, W, 3] (contiguous), on their device."""
    q = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return q.permute(0, 2, 3, 1).contiguous()


def to_uint8(rgb: torch.Tensor, *, pinned: bool = False) -> np.ndarray:
    """[B, 3, H, W] floats in [-1, 1] -> uint8 [B, H, W, 3] on the CPU.

    `pinned`: from a GPU, copy through pinned host memory (a copy to pageable memory took
    4.5 ms on an H200 for the 7.9 MB of a 2048 x 1280 view window, 1.8 GB/s).
    The array is then a view of torch's pool of pinned memory: for arrays that are copied
    or dropped soon."""
    q = quantised(rgb)
    if not pinned or q.device.type != "cuda":
        return q.cpu().numpy()
    host = torch.empty(q.shape, dtype=torch.uint8, pin_memory=True)
    return host.copy_(q).numpy()
