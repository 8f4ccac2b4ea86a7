"""Device choice and inference precision (`auto` = CUDA, then MPS, then CPU), and readying
a GPU while a model loads (`warming_up`).

`resolve_devices` turns a device list (`cuda:0,cuda:1`, `all`, `cpu,cpu`) into the devices
of a multi-device render (engine.tile_workers): one worker per entry.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """A torch.device for `name`; ValueError with a clear message if it is unusable here."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("CUDA was requested but no CUDA GPU is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{name} does not exist: {torch.cuda.device_count()} CUDA devices")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("MPS was requested but is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device type {device.type!r}")
    return device


MAX_DEVICES = 64  # a list longer than this is a typo, not a machine


def resolve_devices(
    spec: str | torch.device | list[str | torch.device] | tuple = "auto",
) -> list[torch.device]:
    """The torch.devices of a device list, one render worker each, in the given order.

    `spec`: a comma-separated string or a sequence of names. `all` means every CUDA GPU
    (cuda:0, cuda:1, ...), or the one device `auto` picks where there is none; any other
    entry is resolved by `resolve_device`. An entry may repeat (`cpu,cpu`: two CPU workers).
    ValueError with a clear message for an empty list or an unusable entry.
    """
    if isinstance(spec, torch.device):
        return [spec]
    names = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else list(spec)
    if not names or any(isinstance(n, str) and not n for n in names):
        raise ValueError(f"empty entry in the device list {spec!r} (e.g. cuda:0,cuda:1 or all)")
    if names == ["all"]:
        if torch.cuda.is_available():
            return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        return [resolve_device("auto")]
    if "all" in names:
        raise ValueError("'all' cannot be combined with other devices")
    if len(names) > MAX_DEVICES:
        raise ValueError(f"{len(names)} devices listed; at most {MAX_DEVICES}")
    devices = [resolve_device(n) for n in names]
    return [
        torch.device("cuda", torch.cuda.current_device())
        if d.type == "cuda" and d.index is None
        else d
        for d in devices
    ]


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A CPU tensor's copy on `device`, queued without waiting for the device: on CUDA
    through pinned memory. (A copy from pageable memory makes torch wait until the GPU has
    finished all its queued work, so the next tile's inputs could not be prepared while the
    last tile renders.)"""
    device = torch.device(device)
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


@contextlib.contextmanager
def warming_up(device: torch.device) -> Iterator[None]:
    """Within: the caller builds or reads a model for `device` while, on CUDA, a thread
    readies the GPU for the first render: the CUDA context, and the cuDNN and cuBLAS
    libraries with their kernels for the layer kinds a render runs, in the render precision
    (`fast_dtype`; kernels of a precision the render does not use would only hold memory).
    Otherwise the first view pays for them: on an H200 the first 1920 x 1080 `paper` view
    of a process took 0.57-0.62 s without this and 0.35-0.39 s with it (with float32
    readied too), after loads of 0.6-0.7 s either way; a gigapixel export's peak memory
    moved by less than 10 MiB with it, in two comparisons. The thread is joined on leaving;
    its failure is only logged (the render meets the problem again and reports it)."""
    thread = None
    if device.type == "cuda":
        thread = threading.Thread(target=_warm_up, args=(device,), name="gpu-warm-up")
        thread.start()
    try:
        yield
    finally:
        if thread is not None:
            thread.join()


def _warm_up(device: torch.device) -> None:
    try:
        with torch.cuda.device(device), torch.no_grad():
            # [1, 8, 16, 16] in the render precision: a styled conv, an upsampling conv, bias
            # and noise as a GEMM
            dtype = fast_dtype(device)
            x = torch.ones(1, 8, 16, 16, device=device, dtype=dtype)
            x = x.contiguous(memory_format=torch.channels_last)
            w = torch.ones(8, 8, 3, 3, device=device, dtype=dtype)
            F.conv2d(x, w, padding=1)
            F.conv_transpose2d(x, w, stride=2)
            rows = x.permute(0, 2, 3, 1).reshape(-1, 8)
            torch.addmm(rows, rows, w[:, :, 0, 0])
        torch.cuda.synchronize(device)
    except Exception:  # a warm-up must never stop the load it hides behind
        log.warning("warming up %s failed", device, exc_info=True)


def fast_dtype(device: torch.device) -> torch.dtype:
    """The reduced precision that pays on `device` (float32 where none does)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and _cpu_has_bf16():
        return torch.bfloat16
    return torch.float32


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def device_label(device: torch.device) -> str:
    """Human-readable device name for status bars and benchmark output."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
