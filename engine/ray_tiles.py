"""Exports beyond one machine: the export's tile jobs as tasks on a Ray cluster.

    renderer = RayTiles(world, address="auto")   # or "ray://head:10001", or None: local Ray
    run_export(world, job, renderer=renderer)     # this machine writes the file
    renderer.close()

Needs the optional `distributed` extra (`pip install "infinity-canvas[distributed]"`).

What a task gets: everything a tile is a function of (DESIGN.md §2), as data: the model
(its config and float32 weights as safetensors bytes, `engine.checkpoint.generator_bytes`,
put in the object store once), the seed, the base style, the precision, the edit log as
JSON (`Edit.to_json`, rebuilt with `engine.edits.edit_from_json`, so every edit kind
travels the same way; put once per export), the tile rectangle and the lod. A task renders
on the GPU Ray gave it (CUDA_VISIBLE_DEVICES), or on the CPU where it has none, and returns
the tile as uint8 [h, w, 3]. Each Ray worker process keeps the last models and edit logs
it decoded (keyed by digests), so a model is loaded once per worker, not once per tile.

Order and memory: at most `in_flight` tasks are submitted beyond the oldest tile not yet
handed back (default: two per GPU of the cluster, or per CPU without GPUs); tiles are
taken in the writer's order, so the writer's memory stays constant whatever the export's
size, and the cluster's object store holds at most `in_flight` tiles of it. Stopping
cancels the tasks still queued.

Identity: a tile rendered on a node equals the one this machine would render on a device
of the same kind and precision; mixing kinds (a CPU writer's sidecar, GPU nodes) can move
values by float rounding, as any change of device does. torch's CPU kernels also round by
thread count, so CPU tasks run with this process's number of torch threads unless
`torch_threads` says otherwise.

Cluster set-up: every node needs Infinity Canvas (the same version) and torch installed,
e.g. the same environment image; the machine that writes connects with `address`. A local
instance started here (address None) runs its workers with this process's copy of the
engine on their path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.checkpoint import generator_bytes, generator_from_bytes
from engine.device import resolve_device
from engine.edits import Edit, edit_from_json
from engine.export_formats import ExportError
from engine.styles import Style
from engine.tile_workers import render_tile
from engine.tiles import Rect
from engine.world import World

log = logging.getLogger(__name__)

__all__ = ["RayTiles", "ray_available"]

RAY_MISSING = (
    'rendering on a Ray cluster needs Ray: pip install "infinity-canvas[distributed]" '
    "(on this machine and on every node)"
)
WORKER_CACHE = 2  # models (and edit logs) a Ray worker process keeps decoded


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ExportError(RAY_MISSING) from None
    return ray


class RayTiles:
    """Renders tile jobs as Ray tasks (see the module docstring).

    `address`: the cluster to connect to ("auto", "ray://host:10001", "host:6379"); None
    starts a local Ray instance (or uses the one this process already started, e.g. with
    `ray.init(num_cpus=2)`). `precision`: fp32, bf16 or fp16 on the nodes; None: the
    world's precision. `gpus_per_task`: None: 1 when the cluster has GPUs, else 0 (then
    each task takes `cpus_per_task` CPUs). `torch_threads`: torch threads of a task on a
    CPU node (default: this process's, so tiles equal this machine's renders). `in_flight`:
    tasks beyond the oldest tile not yet handed back. ExportError when Ray is not
    installed or the cluster unreachable.
    """

    def __init__(
        self,
        world: World,
        *,
        address: str | None = None,
        precision: str | None = None,
        gpus_per_task: float | None = None,
        cpus_per_task: float = 1,
        torch_threads: int | None = None,
        in_flight: int | None = None,
    ) -> None:
        ray = _ray()
        self._started = False
        if not ray.is_initialized():
            try:
                if address is None:
                    root = str(Path(__file__).resolve().parents[1])  # this copy of `engine`
                    ray.init(runtime_env={"env_vars": {"PYTHONPATH": root}})
                else:
                    ray.init(address=address)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ExportError(f"cannot reach the Ray cluster at {address}: {exc}") from exc
            self._started = True
        resources = ray.cluster_resources()
        gpus = resources.get("GPU", 0)
        if gpus_per_task is None:
            gpus_per_task = 1 if gpus else 0
        slots = gpus / gpus_per_task if gpus_per_task else resources.get("CPU", 1) / cpus_per_task
        self.in_flight = in_flight or max(2, int(2 * slots))
        self._task = ray.remote(_render_task).options(
            num_gpus=gpus_per_task, num_cpus=0 if gpus_per_task else cpus_per_task
        )
        model = generator_bytes(world.generator)
        self._model_key = hashlib.sha256(model).hexdigest()
        self._model = ray.put(model)
        self._job = _WorldJob(
            self._model_key,
            world.seed,
            world.base_style,
            precision or world.precision,
            torch_threads or torch.get_num_threads(),
        )
        self._label = (
            f"Ray cluster ({int(gpus)} GPUs)" if gpus_per_task else f"Ray cluster ({slots:g} CPUs)"
        )
        self._closed = False

    @property
    def label(self) -> str:
        return self._label

    def render_in_order(
        self,
        rects: Sequence[Rect],
        lod: int,
        edits: tuple[Edit, ...],
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[np.ndarray]:
        ray = _ray()
        text = json.dumps([e.to_json() for e in edits])  # every edit kind, the same way
        edits_key = hashlib.sha256(text.encode()).hexdigest()
        edits_ref = ray.put(text)
        pending: deque = deque()
        rects = list(rects)
        submitted = 0
        try:
            for _ in range(len(rects)):
                while submitted < len(rects) and len(pending) < self.in_flight:
                    rect = rects[submitted].as_tuple()
                    pending.append(
                        self._task.remote(
                            self._job, [self._model], edits_key, [edits_ref], rect, lod
                        )
                    )
                    submitted += 1
                head = pending[0]
                while not ray.wait([head], timeout=0.1)[0]:
                    if should_stop():
                        return
                pending.popleft()
                yield ray.get(head)  # uint8 [h, w, 3]
        finally:
            for ref in pending:
                ray.cancel(ref)

    def close(self) -> None:
        """Shut down the Ray instance this renderer started (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            _ray().shutdown()


# On the nodes ---------------------------------------------------------------------------

_cache_lock = threading.Lock()
_worlds: OrderedDict[tuple, World] = OrderedDict()
_edit_logs: OrderedDict[str, tuple[Edit, ...]] = OrderedDict()


@dataclass(frozen=True)
class _WorldJob:
    """What a task needs to know of the world besides the model's bytes and the edits."""

    model_key: str  # sha256 of the model bytes
    seed: int
    style: Style  # the base style
    precision: str
    torch_threads: int  # on CPU nodes


def _render_task(
    job: _WorldJob,
    model: list,
    edits_key: str,
    edits_json: list,
    rect: tuple[int, int, int, int],
    lod: int,
) -> np.ndarray:
    """A Ray task: one render tile, uint8 [h, w, 3], from the job's data. `model` and
    `edits_json` hold one object reference each (a list, so that Ray does not fetch them
    for every task): fetched only when this worker has not decoded them yet."""
    import ray

    device = resolve_device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and torch.get_num_threads() != job.torch_threads:
        torch.set_num_threads(job.torch_threads)
    with _cache_lock:
        key = (job.model_key, job.seed, job.style, job.precision, str(device))
        world = _worlds.get(key)
        if world is None:
            generator = generator_from_bytes(ray.get(model[0]), device=device)
            world = World(generator, job.seed, precision=job.precision)
            if job.style != world.base_style:
                world = world.restyled(job.style)
            _remember(_worlds, key, world)
        edits = _edit_logs.get(edits_key)
        if edits is None:
            edits = tuple(edit_from_json(raw) for raw in json.loads(ray.get(edits_json[0])))
            _remember(_edit_logs, edits_key, edits)
    return render_tile(world, Rect(*rect), lod, edits)


def _remember(cache: OrderedDict, key: Any, value: Any) -> None:
    cache[key] = value
    while len(cache) > WORKER_CACHE:
        cache.popitem(last=False)
