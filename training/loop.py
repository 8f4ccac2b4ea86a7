"""The training loop: `train(cfg, run_dir, ...)` turns a folder of images into checkpoints.

Per iteration, as the official code (INFINITYGAN.md section 6): a D step (logistic loss and
the auxiliary vertical-position loss on real and fake), lazy R1 every `r1_every` steps, a G
step (non-saturating loss, vertical-position loss, diversity loss over pairs), lazy path
length regularisation every `path_every` steps on a smaller batch, then the G EMA update.
On CUDA the forward passes of the D and G steps run under bf16 autocast with channels_last
tensors; weights, optimiser state and the R1 / path-length passes stay float32. There the
D and G steps' forward passes are also compiled (torch.compile, `TrainConfig.compile`):
their many elementwise passes fuse, which makes the `paper` iteration 1.8x faster (194-205
against 111 images/s on an H200), after a compilation of about 2.5 minutes in a process's
first iterations (half a minute once PyTorch's on-disk cache holds it). R1 and path length
run eagerly: they need a double backward, which compiled graphs do not support.

NaN guard: an update whose loss or gradient is not finite is skipped (the optimiser does
not step). After `GUARD_ROLLBACK_AFTER` iterations in a row with a skipped update, G, D,
G_ema, both optimisers and the path-length mean go back to the last in-memory snapshot
(taken every `snapshot_every` good iterations); the random streams are not rewound, so the
run does not replay the batch that failed. Both events are recorded in metrics.jsonl.

One process trains on one device; under torchrun each rank is such a process, and
training.distributed averages the gradients over them (rank 0 writes the run folder).

metrics.jsonl records hold `step`, `time` (training seconds, across resumes),
`wall_time` (unix time), `images_per_s`, the interval means of every loss term present in
the interval (`d_adv`, `d_coord_real`, `d_coord_fake`, `d_total`, `d_real_logit`,
`d_fake_logit`, `r1`, `g_adv`, `g_coord`, `g_diversity`, `g_total`, `path_length`,
`path_penalty`, `path_mean`, `d_grad_norm`, `g_grad_norm`, `ema_decay`), `guard_skips`,
`rollbacks`, `events` (when any), and, at metric steps, the `swd*` keys of
training.metrics.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from engine.allocator import reuse_freed_memory
from engine.checkpoint import Provenance, read_checkpoint, save_checkpoint
from engine.device import resolve_device
from engine.model import Discriminator, Generator
from training import runfiles
from training.augment import diff_augment
from training.config import TrainConfig
from training.data import ImageBank, load_images
from training.distributed import Cluster, join_cluster, leave_cluster
from training.losses import (
    d_logistic,
    diversity_loss,
    g_nonsaturating,
    path_length_penalty,
    path_lengths,
    r1_penalty,
    vertical_position_l1,
)
from training.metrics import evaluate_generator
from training.sampling import (
    FakeInputs,
    PreviewInputs,
    preview_inputs,
    render_fakes,
    render_previews,
    sample_fakes,
)

log = logging.getLogger(__name__)

GUARD_ROLLBACK_AFTER = 3
PREVIEW_SEED_OFFSET = 1_000_003  # keeps preview latents apart from the training streams
SAMPLE_COLUMNS = 4
SAMPLE_GAP = 2

LossHook = Callable[[int, str, Tensor], Tensor]


@dataclass(frozen=True)
class Progress:
    """What `train` reports through `on_progress`.

    event: "start", "log", "metrics", "sample", "checkpoint", "guard", "rollback",
    "stopped" or "done". `values` holds the numbers of the record just written ("log",
    "metrics") or of the guard event; `path` the file just written ("sample",
    "checkpoint").
    """

    event: str
    step: int
    total_steps: int
    elapsed_s: float
    images_per_s: float = 0.0
    values: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    message: str = ""


def train(
    cfg: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    on_progress: Callable[[Progress], None] = lambda p: None,
    should_stop: Callable[[], bool] = lambda: False,
    loss_hook: LossHook | None = None,
) -> Path:
    """Train until `cfg.steps` iterations are done or a stop is requested; returns the latest
    checkpoint (RUN_DIR/checkpoints/latest.safetensors).

    A stop (`should_stop()` returning True, or a file named STOP in `run_dir`) saves the
    full state and returns; `resume=True` continues a run folder exactly where its state
    was saved (`cfg` may then differ from the stored config only in schedule fields such as
    `steps`, `device` or the intervals). `loss_hook(step, term, loss) -> loss` sees every
    loss before its backward pass ("d", "r1", "g", "path"): a test seam for fault injection.

    Raises FileNotFoundError / ValueError for an unusable data folder, a run folder that
    already holds a run (without `resume`) or a state that does not fit `cfg`.
    """
    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    cluster = join_cluster(device)
    try:
        device = cluster.device(device)
        return _train(cfg, run_dir, cluster, device, resume, on_progress, should_stop, loss_hook)
    finally:
        leave_cluster(cluster)


def _train(
    cfg: TrainConfig,
    run_dir: Path,
    cluster: Cluster,
    device: torch.device,
    resume: bool,
    on_progress: Callable[[Progress], None],
    should_stop: Callable[[], bool],
    loss_hook: LossHook | None,
) -> Path:
    main = cluster.is_main
    if not main:
        on_progress = _ignore  # rank 0 reports and writes for the whole run
    model = cfg.model
    bank = load_images(
        cfg.data_dir,
        full_size=model.full_size,
        patch_size=model.patch_size,
        scale_crops=cfg.scale_crops,
    )
    saved = _prepare_run_dir_on_main(cfg, run_dir, resume, cluster)
    trainer = _Trainer(cfg, bank, device, loss_hook, cluster)
    if saved is not None:
        trainer.restore(saved)
        if main:
            runfiles.truncate_metrics(run_dir, trainer.step)
    elif cfg.init_from:
        trainer.initialise_from(Path(cfg.init_from))
    trainer.snapshot()
    files = _RunFiles(cfg, run_dir, trainer, bank)
    clock = _Clock(trainer.elapsed_before, trainer.images_seen)
    report = _Reporter(cfg, on_progress, clock)

    log.info(
        "training %s on %s (%s%s) from step %d to %d; %s",
        model.preset,
        device,
        "bf16 autocast" if trainer.amp else "float32",
        f", {cluster.world_size} processes" if cluster.active else "",
        trainer.step,
        cfg.steps,
        bank.report.describe(),
    )
    report.emit("start", trainer.step, message=bank.report.describe())
    stopped = False
    while trainer.step < cfg.steps:
        trainer.iteration()
        step = trainer.step
        for event in trainer.drain_guard_events():
            report.emit(event["kind"], step, values=event)
        final = step >= cfg.steps
        stop_asked = should_stop() or (main and (run_dir / runfiles.STOP_FILE).exists())
        stopping = not final and cluster.any(stop_asked, device)
        record: dict[str, Any] = {}
        if step % cfg.log_every == 0 or final or stopping:
            record |= trainer.interval_values()
            record["images_per_s"] = clock.images_per_s(trainer.images_seen)
        slow_work = False  # metrics, samples and checkpoints do not count against images/s
        if main and cfg.metric_every and (step % cfg.metric_every == 0 or final):
            slow_work = True
            metrics = evaluate_generator(
                trainer.g_ema,
                bank,
                images=cfg.metric_images,
                scales=cfg.metric_scales,
                seed=cfg.seed,
            )
            record |= metrics
            report.emit("metrics", step, values=metrics)
        if main and record:
            record = {
                "step": step,
                "time": round(clock.elapsed(), 3),
                "wall_time": round(time.time(), 3),
                **record,
            }
            runfiles.append_metrics(run_dir, record)
            report.emit("log", step, values=record)
        if main and cfg.sample_every and (step % cfg.sample_every == 0 or final):
            slow_work = True
            report.emit("sample", step, path=files.write_samples(step))
        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or final or stopping:
            slow_work = True
            state = trainer.state(clock.elapsed())  # every rank: the state holds all streams
            if main:
                report.emit("checkpoint", step, path=files.write_checkpoint(step, state))
        if slow_work:
            clock.images_per_s(trainer.images_seen)  # restart the rate's interval here
        if stopping:
            if main:
                (run_dir / runfiles.STOP_FILE).unlink(missing_ok=True)
            stopped = True
            report.emit("stopped", step, message=f"stopped at step {step}; resume to continue")
            break
    latest = files.latest_checkpoint
    # Nothing left to train (steps reached before this call): still leave a checkpoint.
    if cluster.any(main and not latest.exists(), device):
        state = trainer.state(clock.elapsed())
        if main:
            files.write_checkpoint(trainer.step, state)
    if not cluster.weights_agree(trainer.g, device):
        raise RuntimeError("the training processes ended with different weights")
    if not stopped:
        report.emit("done", trainer.step, path=latest)
    return latest


def _ignore(progress: Progress) -> None:
    return None


def _prepare_run_dir_on_main(
    cfg: TrainConfig, run_dir: Path, resume: bool, cluster: Cluster
) -> runfiles.SavedState | None:
    """Rank 0 checks and prepares the run folder; the others wait and read what it found."""
    saved, problem = None, None
    if cluster.is_main:
        try:
            saved = _prepare_run_dir(cfg, run_dir, resume)
        except (ValueError, FileNotFoundError) as exc:
            problem = exc
    problems = cluster.gather(None if problem is None else str(problem))
    if problem is not None:
        raise problem
    if problems[0] is not None:
        raise ValueError(str(problems[0]))
    if resume and not cluster.is_main:
        saved = runfiles.read_state(run_dir)
    return saved


def _prepare_run_dir(cfg: TrainConfig, run_dir: Path, resume: bool) -> runfiles.SavedState | None:
    """Check the run folder against `resume`, write config.json; the state to resume, if any."""
    saved = None
    if resume:
        stored = runfiles.read_config(run_dir)
        different = cfg.differences(stored)
        if different:
            raise ValueError(
                f"cannot resume {run_dir} with a different {', '.join(different)}: a resumed run "
                "keeps its config (only steps, device, data folder and intervals may change)"
            )
        saved = runfiles.read_state(run_dir)
    elif runfiles.has_state(run_dir) or (run_dir / runfiles.METRICS_FILE).exists():
        raise ValueError(
            f"{run_dir} already holds a training run: resume it or choose another folder"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    runfiles.write_config(run_dir, cfg)
    return saved


class _Clock:
    """Training time across resumes and the image rate of the current log interval."""

    def __init__(self, elapsed_before: float, images_seen: int) -> None:
        self.before = elapsed_before
        self.start = time.perf_counter()
        self._mark = (self.start, images_seen)

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.start

    def images_per_s(self, images_seen: int) -> float:
        now = time.perf_counter()
        last_time, last_images = self._mark
        self._mark = (now, images_seen)
        if now <= last_time:
            return 0.0
        return round((images_seen - last_images) / (now - last_time), 3)


class _Reporter:
    def __init__(
        self, cfg: TrainConfig, on_progress: Callable[[Progress], None], clock: _Clock
    ) -> None:
        self.cfg, self.on_progress, self.clock = cfg, on_progress, clock

    def emit(
        self,
        event: str,
        step: int,
        *,
        values: dict | None = None,
        path: Path | None = None,
        message: str = "",
    ) -> None:
        values = values or {}
        self.on_progress(
            Progress(
                event=event,
                step=step,
                total_steps=self.cfg.steps,
                elapsed_s=self.clock.elapsed(),
                images_per_s=float(values.get("images_per_s", 0.0) or 0.0),
                values=values,
                path=path,
                message=message,
            )
        )


class _Trainer:
    """Models, optimisers, random streams and counters of one process on one device."""

    def __init__(
        self,
        cfg: TrainConfig,
        bank: ImageBank,
        device: torch.device,
        loss_hook: LossHook | None,
        cluster: Cluster | None = None,
    ) -> None:
        self.cfg, self.device = cfg, device
        self.cluster = cluster or Cluster()
        self.bank = bank.to(device) if device.type == "cuda" else bank
        self.config = cfg.model
        self.amp = device.type == "cuda" if cfg.mixed_precision is None else cfg.mixed_precision
        self.memory_format = (
            torch.channels_last if device.type == "cuda" else torch.contiguous_format
        )
        self.use_augment = cfg.uses_diff_augment(len(bank))
        self.loss_hook = loss_hook
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        else:
            reuse_freed_memory()  # engine.allocator: 1.12-1.18 -> 1.30 images/s, lite on 2 cores
        self.compiled = device.type == "cuda" if cfg.compile is None else cfg.compile

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.g = Generator(self.config)
            self.d = Discriminator(self.config)
        self.g_ema = copy.deepcopy(self.g).eval().requires_grad_(False)
        for module in (self.g, self.d, self.g_ema):
            module.to(device=device, memory_format=self.memory_format)
        # The forward passes of the plain D and G steps (same modules, same parameters).
        self._render: Callable[[Generator, FakeInputs], tuple[Tensor, Tensor, Tensor]]
        self._judge: Callable[..., tuple[Tensor, Tensor]]
        if self.compiled:
            log.info("the D and G steps compile in the first iterations (up to 2.5 minutes)")
            self._render, self._judge = torch.compile(render_fakes), torch.compile(self.d)
        else:
            self._render, self._judge = render_fakes, self.d
        # One fused kernel per update on CUDA; elsewhere the (bit-exact on resume) default.
        fused = {"fused": True} if device.type == "cuda" else {}
        self.g_opt = torch.optim.Adam(
            self.g.parameters(), lr=cfg.g_lr, betas=cfg.g_betas, eps=1e-8, **fused
        )
        self.d_opt = torch.optim.Adam(
            self.d.parameters(), lr=cfg.d_lr, betas=cfg.d_betas, eps=1e-8, **fused
        )

        # Two seeded streams: data choices on the CPU, latents/noise/augmentation on the device;
        # each rank has its own pair (rank 0's are those of a single-process run).
        seed = self.cluster.seed(cfg.seed)
        self.data_rng = torch.Generator().manual_seed(seed)
        self.latent_rng = torch.Generator(device=device).manual_seed(seed + 1)
        self.path_mean = torch.zeros((), device=device)
        self.step = 0
        self.elapsed_before = 0.0
        self.bad_streak = 0
        self._snapshot: dict[str, Any] | None = None
        self._values: dict[str, list[Tensor]] = {}
        self._events: list[dict[str, Any]] = []
        self._pending_guard: list[dict[str, Any]] = []
        self._interval_skips = 0
        self._interval_rollbacks = 0

    @property
    def images_seen(self) -> int:
        return self.step * self.cfg.batch * self.cluster.world_size

    # One iteration -------------------------------------------------------------------------

    def iteration(self) -> None:
        """D step, lazy R1, G step, lazy path length, EMA; then the guard's bookkeeping."""
        cfg = self.cfg
        done, step = self.step, self.step + 1  # iterations done before; number of this one
        ok = True
        real, labels = self._real_batch()
        ok &= self._d_step(step, real, labels)
        if done % cfg.r1_every == 0:  # lazy, from the first iteration on (as rosinality)
            ok &= self._r1_step(step, real)
        ok &= self._g_step(step)
        if cfg.path_weight > 0 and done % cfg.path_every == 0:
            ok &= self._path_step(step)
        self._ema_update(step)
        self.step = step
        if ok:
            self.bad_streak = 0
            if self.step % cfg.snapshot_every == 0:
                self.snapshot()
        else:
            self.bad_streak += 1
            if self.bad_streak >= GUARD_ROLLBACK_AFTER:
                self.rollback()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _real_batch(self) -> tuple[Tensor, Tensor]:
        real, labels = self.bank.sample_patches(self.cfg.batch, self.data_rng)
        real = real.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        return real, labels.to(self.device)

    def _augment(self, x: Tensor) -> Tensor:
        return diff_augment(x, self.latent_rng) if self.use_augment else x

    def _fakes(self, batch: int, paired: bool = True):
        return sample_fakes(
            self.config, batch, self.latent_rng, mixing=self.cfg.style_mixing, paired=paired
        )

    def _d_step(self, step: int, real: Tensor, labels: Tensor) -> bool:
        cfg = self.cfg
        fakes = self._fakes(cfg.batch)
        with torch.no_grad(), self._autocast():
            fake, _, _ = self._render(self.g, fakes)
        with self._autocast():  # real and fake judged in one pass (stddev groups apart)
            both = torch.cat(
                [
                    self._augment(real),
                    self._augment(fake.contiguous(memory_format=self.memory_format)),
                ]
            )
            logits, coords = self._judge(both, batches=2)
        real_logit, fake_logit = logits.chunk(2)
        real_coords, fake_coords = coords.chunk(2)
        adv = d_logistic(real_logit, fake_logit)
        coord_real = vertical_position_l1(real_coords, labels)
        coord_fake = vertical_position_l1(fake_coords, fakes.labels)
        total = adv + cfg.coord_weight * (coord_real + coord_fake)
        self._record(
            d_adv=adv,
            d_coord_real=coord_real,
            d_coord_fake=coord_fake,
            d_real_logit=real_logit.float().mean(),
            d_fake_logit=fake_logit.float().mean(),
        )
        return self._update("d", step, total, self.d, self.d_opt)

    def _r1_step(self, step: int, real: Tensor) -> bool:
        real = real.detach().requires_grad_(True)
        logit, _ = self.d(self._augment(real))  # float32: R1 needs a clean double backward
        penalty = r1_penalty(logit, real)
        self._record(r1=penalty)
        total = penalty * (self.cfg.r1_gamma / 2 * self.cfg.r1_every)
        return self._update("r1", step, total, self.d, self.d_opt, record_total=False)

    def _g_step(self, step: int) -> bool:
        cfg = self.cfg
        fakes = self._fakes(cfg.batch)
        self.d.requires_grad_(False)
        try:
            with self._autocast():
                rgb, z_s, _ = self._render(self.g, fakes)
                logit, coords = self._judge(
                    self._augment(rgb.contiguous(memory_format=self.memory_format))
                )
            adv = g_nonsaturating(logit)
            coord = vertical_position_l1(coords, fakes.labels)
            total = adv + cfg.coord_weight * coord
            self._record(g_adv=adv, g_coord=coord)
            if cfg.diversity_weight > 0:
                diversity = diversity_loss(fakes.z_l, z_s, cfg.diversity)
                total = total + cfg.diversity_weight * diversity
                self._record(g_diversity=diversity)
            return self._update("g", step, total, self.g, self.g_opt)
        finally:
            self.d.requires_grad_(True)

    def _path_step(self, step: int) -> bool:
        cfg = self.cfg
        fakes = self._fakes(max(1, cfg.batch // cfg.path_batch_shrink), paired=False)
        rgb, _, wplus = render_fakes(self.g, fakes)  # float32: double backward
        lengths = path_lengths(rgb, wplus, self.latent_rng)
        batch_mean = self.cluster.mean(lengths.detach().mean())
        mean = self.path_mean + cfg.path_decay * (batch_mean - self.path_mean)
        penalty = path_length_penalty(lengths, mean)
        self._record(path_length=lengths.detach().mean(), path_penalty=penalty)
        ok = self._update(
            "path",
            step,
            penalty * (cfg.path_weight * cfg.path_every),
            self.g,
            self.g_opt,
            record_total=False,
        )
        if ok:
            self.path_mean = mean.detach()
        self._record(path_mean=self.path_mean)
        return ok

    def _update(
        self,
        term: str,
        step: int,
        loss: Tensor,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        record_total: bool = True,
    ) -> bool:
        """Backward and optimiser step unless the loss or any gradient is not finite.

        `step` is the 1-based number of the running iteration (its metrics.jsonl step).
        """
        if self.loss_hook is not None:
            loss = self.loss_hook(step, term, loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        loss = self.cluster.average_gradients(list(module.parameters()), loss)  # all ranks' mean
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        if bool(torch.isfinite(loss.detach()) & torch.isfinite(norm)):  # the one sync per update
            optimizer.step()
            if record_total:
                self._record(**{f"{term}_total": loss, f"{term}_grad_norm": norm})
            return True
        optimizer.zero_grad(set_to_none=True)
        self._interval_skips += 1
        self._guard_event({"kind": "guard", "step": step, "term": term, "action": "skipped update"})
        return False

    @torch.no_grad()
    def _ema_update(self, steps_done: int) -> None:
        decay = self.cfg.ema_decay(steps_done)
        torch._foreach_lerp_(list(self.g_ema.parameters()), list(self.g.parameters()), 1.0 - decay)
        self._values.setdefault("ema_decay", []).append(torch.tensor(decay))

    # Guard snapshots ------------------------------------------------------------------------

    def snapshot(self) -> None:
        """Remember the current weights, optimiser states and path mean (on the CPU)."""
        self._snapshot = {
            "step": self.step,
            "models": {name: _cpu_clone(m.state_dict()) for name, m in self._modules().items()},
            "optimizers": {
                "g_optim": _cpu_clone(self.g_opt.state_dict()),
                "d_optim": _cpu_clone(self.d_opt.state_dict()),
            },
            "path_mean": self.path_mean.detach().cpu().clone(),
        }

    def rollback(self) -> None:
        assert self._snapshot is not None
        snap = self._snapshot
        for name, module in self._modules().items():
            module.load_state_dict(snap["models"][name])
        # Optimizer.load_state_dict may keep the tensors it is given: hand it copies.
        self._load_optimizers(_cpu_clone(snap["optimizers"]))
        self.path_mean = snap["path_mean"].to(self.device)
        self.bad_streak = 0
        self._interval_rollbacks += 1
        self._guard_event(
            {
                "kind": "rollback",
                "step": self.step,
                "to_step": snap["step"],
                "action": f"{GUARD_ROLLBACK_AFTER} bad iterations in a row: weights restored",
            }
        )
        log.warning(
            "NaN guard: rolled back to the state of step %d at step %d", snap["step"], self.step
        )

    def _guard_event(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        self._pending_guard.append(event)

    def drain_guard_events(self) -> list[dict[str, Any]]:
        events, self._pending_guard = self._pending_guard, []
        return events

    def _modules(self) -> dict[str, nn.Module]:
        return {"generator": self.g, "discriminator": self.d, "generator_ema": self.g_ema}

    # Logging -----------------------------------------------------------------------------

    def _record(self, **values: Tensor) -> None:
        for name, value in values.items():
            self._values.setdefault(name, []).append(value.detach().float())

    def interval_values(self) -> dict[str, Any]:
        """Means of the finite values recorded since the last call, plus guard counts."""
        out: dict[str, Any] = {}
        for name, values in self._values.items():
            stacked = torch.stack([v.to(self.device) for v in values])
            finite = stacked[torch.isfinite(stacked)]
            if finite.numel():
                out[name] = float(finite.double().mean())
        out["guard_skips"] = self._interval_skips
        out["rollbacks"] = self._interval_rollbacks
        if self._events:
            out["events"] = self._events
        self._values, self._events = {}, []
        self._interval_skips = self._interval_rollbacks = 0
        return out

    # Saving and restoring -----------------------------------------------------------------

    def state(self, elapsed: float) -> runfiles.SavedState:
        """Everything a resume needs. Under torchrun every rank must call it (it gathers
        each rank's random streams: "data"/"latent" are rank 0's, "data@r"/"latent@r" rank r's)."""
        streams = self.cluster.gather((self.data_rng.get_state(), self.latent_rng.get_state()))
        rng = {"data": streams[0][0], "latent": streams[0][1], "torch_cpu": torch.get_rng_state()}
        for r, (data, latent) in enumerate(streams[1:], start=1):
            rng[f"data@{r}"], rng[f"latent@{r}"] = data, latent
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, state in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"torch_cuda_{i}"] = state
        info = {
            "step": self.step,
            "images_seen": self.images_seen,
            "elapsed_s": elapsed,
            "path_mean": float(self.path_mean),
            "bad_streak": self.bad_streak,
            "latent_rng_device": self.device.type,
            "dataset": self.bank.name,
            "dataset_images": len(self.bank),
            "world_size": self.cluster.world_size,
        }
        return runfiles.SavedState(
            models={name: m.state_dict() for name, m in self._modules().items()},
            optimizers={"g_optim": self.g_opt.state_dict(), "d_optim": self.d_opt.state_dict()},
            rng=rng,
            info=info,
        )

    def _restore_streams(self, saved: runfiles.SavedState) -> None:
        """This rank's random streams as saved; reseeded (deterministically) where the saved
        run had fewer processes than this one, or ran its latent stream on another device."""
        rank, info = self.cluster.rank, saved.info
        suffix = f"@{rank}" if rank else ""
        seed = self.cluster.seed(self.cfg.seed) + self.step
        if f"data{suffix}" in saved.rng:
            self.data_rng.set_state(saved.rng[f"data{suffix}"])
        else:
            log.warning("rank %d has no saved data stream (the run had fewer processes)", rank)
            self.data_rng.manual_seed(seed)
        if info.get("latent_rng_device") == self.device.type and f"latent{suffix}" in saved.rng:
            self.latent_rng.set_state(saved.rng[f"latent{suffix}"])
        else:  # a CUDA stream cannot continue on the CPU (or back), nor a missing one
            log.warning(
                "rank %d resuming on %s a run saved on %s by %s processes: latent stream reseeded",
                rank,
                self.device.type,
                info.get("latent_rng_device"),
                info.get("world_size", 1),
            )
            self.latent_rng.manual_seed(seed + 1)

    def initialise_from(self, path: Path) -> None:
        """Start from a checkpoint's weights: its EMA generator becomes G and G_ema, its
        discriminator D (a fresh D if it has none). Optimisers and counters start anew.
        CheckpointError (a ValueError) if the file is unusable or of another architecture."""
        checkpoint = read_checkpoint(path, device=self.device, with_discriminator=True)
        if checkpoint.generator.config != self.config:
            raise ValueError(
                f"{path} holds a {checkpoint.generator.config.preset} model whose architecture "
                f"differs from this run's {self.config.preset} config"
            )
        weights = checkpoint.generator.state_dict()
        self.g.load_state_dict(weights)
        self.g_ema.load_state_dict(weights)
        if checkpoint.discriminator is None:
            log.warning("%s has no discriminator: D starts from random weights", path)
        else:
            self.d.load_state_dict(checkpoint.discriminator.state_dict())
        log.info("initialised from %s (%s steps)", path, checkpoint.provenance.get("steps"))

    def _load_optimizers(self, states: dict[str, dict[str, Any]]) -> None:
        load_optimizer_state(self.g_opt, states["g_optim"])
        load_optimizer_state(self.d_opt, states["d_optim"])

    def restore(self, saved: runfiles.SavedState) -> None:
        """Load a saved state; ValueError (a user error) if it does not fit the model config."""
        try:
            for name, module in self._modules().items():
                module.load_state_dict(saved.models[name])
            self._load_optimizers({k: _with_tuple_betas(v) for k, v in saved.optimizers.items()})
        except (KeyError, RuntimeError, ValueError) as exc:
            raise ValueError(
                f"the saved training state does not fit this model config ({exc})"
            ) from exc
        info = saved.info
        self.step = int(info["step"])
        self.elapsed_before = float(info.get("elapsed_s", 0.0))
        self.path_mean = torch.tensor(float(info["path_mean"]), device=self.device)
        self.bad_streak = int(info.get("bad_streak", 0))
        self._restore_streams(saved)
        torch.set_rng_state(saved.rng["torch_cpu"])
        if self.device.type == "cuda":
            states = [saved.rng[k] for k in sorted(saved.rng) if k.startswith("torch_cuda_")]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """`optimizer.load_state_dict(state)`, each state tensor laid out like its parameter.

    Optimizer.load_state_dict keeps the layout it is given, and saved moments are
    contiguous while channels_last weights are not; CUDA's fused Adam refuses tensors
    whose strides differ from their parameter's.
    """
    optimizer.load_state_dict(state)
    for param, slots in optimizer.state.items():
        for key, value in slots.items():
            if torch.is_tensor(value) and value.shape == param.shape:
                if value.stride() != param.stride():
                    slots[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _cpu_clone(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _cpu_clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cpu_clone(v) for v in value]
    return copy.deepcopy(value)


def _with_tuple_betas(state_dict: dict[str, Any]) -> dict[str, Any]:
    groups = [
        {**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in state_dict["param_groups"]
    ]
    return {"state": state_dict["state"], "param_groups": groups}


class _RunFiles:
    """Samples, checkpoints and state files of one run."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, trainer: _Trainer, bank: ImageBank) -> None:
        self.cfg, self.run_dir, self.trainer, self.bank = cfg, run_dir, trainer, bank
        model = cfg.model
        seed = cfg.seed + PREVIEW_SEED_OFFSET
        self.previews: PreviewInputs = preview_inputs(
            model, cfg.sample_count, model.full_size, seed
        )
        self.wide: PreviewInputs = preview_inputs(model, 1, 4 * model.full_size, seed + 1)

    @property
    def latest_checkpoint(self) -> Path:
        return self.run_dir / "checkpoints" / "latest.safetensors"

    def write_samples(self, step: int) -> Path:
        """A grid of fixed-seed full images above one image 4x the training size (G_ema)."""
        g = self.trainer.g_ema
        small = _to_uint8(render_previews(g, self.previews))  # [n, F, F, 3]
        wide = _to_uint8(render_previews(g, self.wide, chunk=1))[0]  # [4F, 4F, 3]
        n, f = small.shape[0], small.shape[1]
        cols = min(SAMPLE_COLUMNS, n)
        rows = math.ceil(n / cols)
        width = max(cols * f + (cols - 1) * SAMPLE_GAP, wide.shape[1])
        height = rows * (f + SAMPLE_GAP) + wide.shape[0]
        grid = np.full((height, width, 3), 32, dtype=np.uint8)
        for i in range(n):
            y, x = (i // cols) * (f + SAMPLE_GAP), (i % cols) * (f + SAMPLE_GAP)
            grid[y : y + f, x : x + f] = small[i]
        grid[rows * (f + SAMPLE_GAP) :, : wide.shape[1]] = wide
        return runfiles.save_png(self.run_dir / "samples" / f"step_{step:06d}.png", grid)

    def write_checkpoint(self, step: int, state: runfiles.SavedState) -> Path:
        """EMA generator (+ D) checkpoint, latest.safetensors, and the full state for resuming."""
        notes = f"initialised from {Path(self.cfg.init_from).name}" if self.cfg.init_from else ""
        provenance = Provenance(
            preset=self.cfg.model.preset, steps=step, dataset=self.bank.name, notes=notes
        )
        folder = self.run_dir / "checkpoints"
        path = save_checkpoint(
            folder / f"step_{step:06d}.safetensors",
            self.trainer.g_ema,
            provenance,
            discriminator=self.trainer.d,
        )
        save_checkpoint(
            self.latest_checkpoint, self.trainer.g_ema, provenance, discriminator=self.trainer.d
        )
        runfiles.write_state(self.run_dir, state)
        if self.cfg.keep_checkpoints:
            steps = sorted(folder.glob("step_*.safetensors"), key=lambda p: int(p.stem[5:]))
            old = steps[: -self.cfg.keep_checkpoints]
            for stale in old:
                stale.unlink(missing_ok=True)
        return path


def _to_uint8(images: Tensor) -> np.ndarray:
    """[n, 3, H, W] in [-1, 1] -> uint8 [n, H, W, 3]."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()
