"""Import official InfinityGAN checkpoints (github hubert0527/infinityGAN, `*.pth.tar`).

An official checkpoint is a `torch.save` dict (INFINITYGAN.md section 8): `iter`,
`best_fid`, the state dicts `g`, `g_ema` and `d`, optimiser states and
`mean_path_lengths`. It stores no config. We read it with torch's restricted
(`weights_only`) unpickler, which accepts tensors, numbers, strings and containers and
refuses everything else before running it; rename the tensors to ours; infer the
`ModelConfig` from their shapes; and load strictly, so every official tensor is either
used or deliberately ignored and every one of ours is filled with the right shape.

Key map (official -> ours; G = `structure_synthesizer.implicit_model.conv_stack`,
T = `texture_synthesizer`):

    G.{i}.conv.conv.weight [1, C, C+3, k, k]     structure.blocks.{i}.conv.weight [C, C+3, k, k]
    G.{i}.conv.conv.modulation.{weight,bias}     structure.blocks.{i}.conv.modulation.*
    G.{i}.conv.activate.bias                     structure.blocks.{i}.bias
    T.mapping.{j}.{weight,bias}  (j = 1..)       mapping.layers.{j-1}.*  (index 0 is PixelNorm)
    T.convs.{i}.conv.weight [1, out, in, 3, 3]   texture.convs.{i}.conv.weight [out, in, 3, 3]
    T.convs.{i}.conv.modulation.{weight,bias}    texture.convs.{i}.conv.modulation.*
    T.convs.{i}.noise.weight                     texture.convs.{i}.noise_strength
    T.convs.{i}.activate.bias                    texture.convs.{i}.bias
    T.to_rgbs.{k}.conv.weight [1, 3, in, 1, 1]   texture.to_rgbs.{k}.conv.weight [3, in, 1, 1]
    T.to_rgbs.{k}.conv.modulation.{weight,bias}  texture.to_rgbs.{k}.conv.modulation.*
    T.to_rgbs.{k}.bias [1, 3, 1, 1]              texture.to_rgbs.{k}.bias [3]
    convs.0.0.weight, convs.0.1.bias             from_rgb.conv.weight, from_rgb.bias
    convs.{b}.conv1.0.weight, conv1.1.bias       blocks.{b-1}.conv1.conv.weight, conv1.bias
    convs.{b}.conv2.1.weight, conv2.2.bias       blocks.{b-1}.conv2.weight, bias2
    convs.{b}.skip.1.weight                      blocks.{b-1}.skip.weight
    final_conv.0.weight, final_conv.1.bias       final_conv.conv.weight, final_conv.bias
    final_linear.{0,1}.*, coord_linear.{0,1}.*   adversarial.{0,1}.*, coordinates.{0,1}.*

Ignored on purpose:
- `T.const_z.input`: the StyleGAN2 constant input; InfinityGAN feeds G_S's output instead.
- `T.noises.noise_*`: StyleGAN2's fixed-noise buffers, sized for a 4-px start; no layer of
  the padding-free synthesizer reads them (our noise is always an input).
- every `*.kernel` buffer: deterministic blur / upsampling kernels that our layers
  recompute. They are checked against the binomial kernels our layers use, and a file
  with any other kernel is refused (its images would differ).
- keys containing `tmp_var` (the official loader drops them too).
"""

from __future__ import annotations

import logging
import math
import pickle
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from engine.checkpoint import Checkpoint, CheckpointError, Provenance, save_checkpoint
from engine.model import PRESETS, Discriminator, Generator, ModelConfig
from engine.model.geometry import level_size
from engine.model.layers import binomial_kernel

log = logging.getLogger(__name__)

SOURCE = "official InfinityGAN"
GENERATORS = ("g_ema", "g")  # the moving-average generator (used for testing) and the raw one

_ZIP_MAGIC = b"PK\x03\x04"
_MAX_LISTED = 8  # problems named in one error message

# Official geometry that the tensors do not record (configs/model/InfinityGAN.yaml).
_PATCH_CELLS = 11  # ts_input_size: every released model
_FULL_CELLS = 17  # the texture input of a full training image (101 -> 197, 197 -> 389, ...)
_HORIZONTAL_OCCUPY = 0.25  # coord_hori_occupy_ratio: a training window spans 1/4 of a period
_D_CHANNEL_MULTIPLIER = 2  # channel_multiplier of the StyleGAN2 discriminator table


# Key map ----------------------------------------------------------------------------


def _squeeze_batch(t: Tensor) -> Tensor | None:
    """[1, out, in, k, k] -> [out, in, k, k] (the official weights keep a batch dim)."""
    return t[0] if t.ndim == 5 and t.shape[0] == 1 else None


def _flatten_bias(t: Tensor) -> Tensor | None:
    """[1, 3, 1, 1] -> [3]."""
    return t.flatten() if t.ndim == 4 and t.shape[0] == 1 and t.shape[2:] == (1, 1) else None


_M = TypeVar("_M", bound=nn.Module)
_Rule = tuple[re.Pattern[str], str, int, Callable[[Tensor], Tensor | None] | None]


def _rule(
    pattern: str,
    target: str,
    *,
    shift: int = 0,
    reshape: Callable[[Tensor], Tensor | None] | None = None,
) -> _Rule:
    """Official key regex -> our key template ({0}, {1} = groups; `shift` added to group 0)."""
    return re.compile(pattern), target, shift, reshape


_T = r"texture_synthesizer\."
_S = r"structure_synthesizer\.implicit_model\.conv_stack\.(\d+)\.conv\."  # -> structure.blocks.{0}
_TC = _T + r"convs\.(\d+)\."  # -> texture.convs.{0}
_TR = _T + r"to_rgbs\.(\d+)\."  # -> texture.to_rgbs.{0}
_MOD = r"modulation\.(weight|bias)"

_GENERATOR_RULES = [
    _rule(_S + r"conv\.weight", "structure.blocks.{0}.conv.weight", reshape=_squeeze_batch),
    _rule(_S + r"conv\." + _MOD, "structure.blocks.{0}.conv.modulation.{1}"),
    _rule(_S + r"activate\.bias", "structure.blocks.{0}.bias"),
    _rule(_T + r"mapping\.(\d+)\.(weight|bias)", "mapping.layers.{0}.{1}", shift=-1),
    _rule(_TC + r"conv\.weight", "texture.convs.{0}.conv.weight", reshape=_squeeze_batch),
    _rule(_TC + r"conv\." + _MOD, "texture.convs.{0}.conv.modulation.{1}"),
    _rule(_TC + r"noise\.weight", "texture.convs.{0}.noise_strength"),
    _rule(_TC + r"activate\.bias", "texture.convs.{0}.bias"),
    _rule(_TR + r"conv\.weight", "texture.to_rgbs.{0}.conv.weight", reshape=_squeeze_batch),
    _rule(_TR + r"conv\." + _MOD, "texture.to_rgbs.{0}.conv.modulation.{1}"),
    _rule(_TR + r"bias", "texture.to_rgbs.{0}.bias", reshape=_flatten_bias),
]

_DISCRIMINATOR_RULES = [
    _rule(r"convs\.0\.0\.weight", "from_rgb.conv.weight"),
    _rule(r"convs\.0\.1\.bias", "from_rgb.bias"),
    _rule(r"convs\.(\d+)\.conv1\.0\.weight", "blocks.{0}.conv1.conv.weight", shift=-1),
    _rule(r"convs\.(\d+)\.conv1\.1\.bias", "blocks.{0}.conv1.bias", shift=-1),
    _rule(r"convs\.(\d+)\.conv2\.1\.weight", "blocks.{0}.conv2.weight", shift=-1),
    _rule(r"convs\.(\d+)\.conv2\.2\.bias", "blocks.{0}.bias2", shift=-1),
    _rule(r"convs\.(\d+)\.skip\.1\.weight", "blocks.{0}.skip.weight", shift=-1),
    _rule(r"final_conv\.0\.weight", "final_conv.conv.weight"),
    _rule(r"final_conv\.1\.bias", "final_conv.bias"),
    _rule(r"final_linear\.([01])\.(weight|bias)", "adversarial.{0}.{1}"),
    _rule(r"coord_linear\.([01])\.(weight|bias)", "coordinates.{0}.{1}"),
]

# Ignored official tensors: regex -> the kernel it must equal (None: not checked).
_GENERATOR_IGNORED: list[tuple[re.Pattern[str], Tensor | None]] = [
    (re.compile(_T + r"const_z\.input"), None),
    (re.compile(_T + r"noises\.noise_\d+"), None),
    (re.compile(_TC + r"conv\.blur\.kernel"), binomial_kernel([1, 2, 1], 4.0)),
    (re.compile(_TR + r"upsample\.kernel"), binomial_kernel([1, 2, 1], 4.0)),
]
_DISCRIMINATOR_IGNORED: list[tuple[re.Pattern[str], Tensor | None]] = [
    (re.compile(r"convs\.\d+\.(conv2|skip)\.0\.kernel"), binomial_kernel([1, 3, 3, 1])),
]


# Public API -------------------------------------------------------------------------


def looks_like_official(path: str | Path) -> bool:
    """Whether `path` is a PyTorch checkpoint (`torch.save` zip or legacy pickle) by its bytes.

    Reads the magic bytes and, for zip files, the member names; never unpickles anything.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        if _looks_like_safetensors(Path(path)):  # its 8-byte header length can start with 0x80
            return False
    except OSError:
        return False
    if head == _ZIP_MAGIC:
        try:
            with zipfile.ZipFile(path) as archive:
                return any(name.endswith("data.pkl") for name in archive.namelist())
        except (zipfile.BadZipFile, OSError):
            return True  # a torch zip header on a damaged file: still worth the hint
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5  # pickle PROTO opcode


def convert_official(
    path: str | Path,
    *,
    which: str = "g_ema",
    with_discriminator: bool = True,
    config: ModelConfig | None = None,
) -> Checkpoint:
    """Read an official checkpoint and rebuild it as our generator (and discriminator).

    `which` picks the generator: `g_ema` (the one the official code tests with) or `g`.
    `config` (default: inferred from the tensor shapes) must match every tensor. A file
    without a discriminator converts with `discriminator=None`. Raises CheckpointError
    with every problem found; the result's provenance is a `Provenance` as a dict.
    """
    path = Path(path)
    if which not in GENERATORS:
        raise CheckpointError(f"generator must be one of {', '.join(GENERATORS)}, got {which!r}")
    raw = _load_restricted(path)
    g_problems: list[str] = []
    d_problems: list[str] = []
    g_state = _map_tensors(
        _state_dict(raw, which, path), _GENERATOR_RULES, _GENERATOR_IGNORED, which, g_problems
    )
    d_state = None
    if with_discriminator and "d" in raw:
        d_raw = _state_dict(raw, "d", path)
        d_state = _map_tensors(d_raw, _DISCRIMINATOR_RULES, _DISCRIMINATOR_IGNORED, "d", d_problems)
    elif with_discriminator:
        log.warning("%s holds no discriminator ('d'); converting the generator only", path.name)
    generator: Generator | None = None
    discriminator: Discriminator | None = None
    given = config is not None
    try:
        config = infer_config(g_state, d_state) if config is None else config
    except CheckpointError as exc:  # the shapes do not describe a model at all
        g_problems.append(str(exc))
    else:
        generator = _filled(Generator, config, g_state, "generator", g_problems)
        if d_state is not None:
            discriminator = _filled(Discriminator, config, d_state, "discriminator", d_problems)
    if g_problems or d_problems or generator is None or config is None:
        target = f"the given config (preset {config.preset})" if given and config else None
        raise CheckpointError(_mismatch_message(path, g_problems, d_problems, target))
    generator.eval().requires_grad_(False)
    if discriminator is not None:
        discriminator.eval()
    best_fid = _as_float(raw.get("best_fid"))
    provenance = Provenance(
        preset=config.preset,
        steps=_as_int(raw.get("iter", 0)),
        source=SOURCE,
        notes=f"generator {which} of {path.name}; best FID "
        + ("unknown" if best_fid is None else f"{best_fid:g}"),
    )
    return Checkpoint(generator, asdict(provenance), discriminator, path)


def convert_official_file(
    in_path: str | Path,
    out_path: str | Path,
    *,
    which: str = "g_ema",
    with_discriminator: bool = True,
    config: ModelConfig | None = None,
) -> Path:
    """Convert an official checkpoint and write it as our safetensors checkpoint; returns it."""
    in_path, out_path = Path(in_path), Path(out_path)
    if out_path.exists() and out_path.resolve() == in_path.resolve():
        raise CheckpointError(
            f"refusing to overwrite the official file {in_path} with its conversion"
        )
    checkpoint = convert_official(
        in_path, which=which, with_discriminator=with_discriminator, config=config
    )
    return save_checkpoint(
        out_path,
        checkpoint.generator,
        Provenance(**checkpoint.provenance),
        discriminator=checkpoint.discriminator,
    )


def infer_config(
    generator: Mapping[str, Tensor], discriminator: Mapping[str, Tensor] | None = None
) -> ModelConfig:
    """The ModelConfig whose modules have these (our-named) tensors' shapes.

    Preset `paper` when that is exactly the paper preset, else `official`. Geometry the
    tensors do not record follows the released official configs: 11-cell patches, 17-cell
    full images, the 0.3-per-cell vertical coordinate and a horizontal period of
    (patch + structure margin) / 0.25 - 1 cells (139 for the paper model). Without a
    discriminator, the official StyleGAN2 channel table for the patch size is assumed.
    """

    def shape(name: str) -> torch.Size:
        try:
            return generator[name].shape
        except KeyError:
            raise CheckpointError(f"cannot infer the model: the generator has no {name}") from None

    structure = shape("structure.blocks.0.conv.weight")  # [C, C + 3, k, k]
    local_dim, kernel = structure[0], structure[-1]
    stages = _count(generator, r"texture\.convs\.(\d+)\.conv\.weight") // 2
    blocks = _count(generator, r"structure\.blocks\.(\d+)\.conv\.weight")
    # The training coordinate grid is (patch + 2 * margin) / 0.25 columns, one duplicated.
    period = round((_PATCH_CELLS + 2 * blocks * (kernel // 2)) / _HORIZONTAL_OCCUPY) - 1
    fields: dict[str, Any] = dict(
        global_dim=shape("structure.blocks.0.conv.modulation.weight")[1],
        local_dim=local_dim,
        coord_dim=structure[1] - local_dim,
        mapping_layers=_count(generator, r"mapping\.layers\.(\d+)\.weight"),
        structure_blocks=blocks,
        structure_kernel=kernel,
        texture_channels=tuple(
            shape(f"texture.convs.{2 * s}.conv.weight")[0] for s in range(stages)
        ),
        patch_cells=_PATCH_CELLS,
        full_cells=_FULL_CELLS,
        coord_horizontal_period=float(period),
    )
    if discriminator is not None:
        n_blocks = _count(discriminator, r"blocks\.(\d+)\.conv2\.weight")
        try:
            fields["disc_channels"] = tuple(
                discriminator[name].shape[0]
                for name in ["from_rgb.conv.weight"]
                + [f"blocks.{b}.conv2.weight" for b in range(n_blocks)]
            )
            fields["disc_linear"] = discriminator["final_conv.conv.weight"].shape[0]
        except KeyError as exc:
            raise CheckpointError(f"cannot infer the discriminator: it has no {exc}") from None
    else:
        patch_size = level_size(_PATCH_CELLS, stages)
        fields["disc_channels"], fields["disc_linear"] = _official_disc_channels(patch_size)
    try:
        config = ModelConfig(preset="official", **fields)
    except ValueError as exc:
        raise CheckpointError(f"cannot infer the model: {exc}") from None
    return PRESETS["paper"] if replace(config, preset="paper") == PRESETS["paper"] else config


# Reading ----------------------------------------------------------------------------


def _load_restricted(path: Path) -> dict[str, Any]:
    """The checkpoint's top-level dict, unpickled by torch's restricted loader only."""
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    if not looks_like_official(path):
        if _looks_like_safetensors(path):
            raise CheckpointError(
                f"{path.name} is a safetensors file, not an official InfinityGAN checkpoint "
                "(*.pth.tar); an Infinity Canvas checkpoint needs no conversion"
            )
        raise CheckpointError(
            f"{path.name} is not a PyTorch checkpoint; expected an official InfinityGAN "
            "checkpoint (*.pth.tar)"
        )
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path.name} was refused: the file contains code or objects that are not plain "
            f"tensors, numbers and lists, so opening it could run code ({_loader_detail(exc)}). "
            "Nothing in it was run."
        ) from exc
    except Exception as exc:  # zip and pickle readers report damage with many exception types
        raise CheckpointError(
            f"{path.name} cannot be read; it may be truncated or damaged "
            f"({type(exc).__name__}: {_loader_detail(exc)})"
        ) from exc
    if not isinstance(raw, dict):
        raise CheckpointError(
            f"{path.name} holds a {type(raw).__name__}, not an InfinityGAN checkpoint dict"
        )
    return raw


def _loader_detail(exc: BaseException) -> str:
    """The informative line of torch's long loader message (e.g. the refused global)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line or "central directory" in line:
            return line.split(". This is an internal")[0]
    return lines[0] if lines else "no details"


def _looks_like_safetensors(path: Path) -> bool:
    """A little-endian u64 header length that fits the file, then a JSON object."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 8 + int.from_bytes(head[:8], "little") <= path.stat().st_size


def _state_dict(raw: Mapping[str, Any], key: str, path: Path) -> dict[str, Tensor]:
    """raw[key] as a state dict: `module.` prefixes stripped, `tmp_var` entries dropped."""
    if key not in raw:
        found = ", ".join(sorted(str(k) for k in raw)) or "nothing"
        others = [g for g in GENERATORS if g != key and g in raw]
        hint = f"; choose the generator {others[0]!r} instead" if others else ""
        raise CheckpointError(
            f"{path.name} has no {key!r} state dict (it holds: {found}){hint}; "
            "is it an official InfinityGAN training checkpoint?"
        )
    state = raw[key]
    if not isinstance(state, Mapping) or not state:
        kind = "an empty state dict" if isinstance(state, Mapping) else f"a {type(state).__name__}"
        raise CheckpointError(f"{path.name}: {key!r} is {kind}, not model weights")
    return {
        str(name).removeprefix("module."): value
        for name, value in state.items()
        if "tmp_var" not in str(name)
    }


# Mapping and filling ----------------------------------------------------------------


def _map_tensors(
    official: Mapping[str, Any],
    rules: list[_Rule],
    ignored: list[tuple[re.Pattern[str], Tensor | None]],
    what: str,
    problems: list[str],
) -> dict[str, Tensor]:
    """Our-named float32 tensors; every official entry not mapped or ignored is a problem."""
    ours: dict[str, Tensor] = {}
    for name, value in official.items():
        if not isinstance(value, Tensor):
            problems.append(f"{what}.{name} is a {type(value).__name__}, not a tensor")
            continue
        skip = _ignored(name, value, ignored)
        if skip:
            if skip != "ok":
                problems.append(f"{what}.{name} {skip}")
            continue
        target = _rename(name, rules)
        if target is None:
            problems.append(f"{what}.{name} is not part of the InfinityGAN architecture")
            continue
        our_name, reshape = target
        tensor = value if reshape is None else reshape(value)
        if tensor is None:
            problems.append(f"{what}.{name} has the unexpected shape {tuple(value.shape)}")
        elif not tensor.is_floating_point():
            problems.append(f"{what}.{name} holds {tensor.dtype}, not floating-point weights")
        elif not torch.isfinite(tensor).all():
            problems.append(f"{what}.{name} contains NaN or infinite values (training diverged?)")
        else:
            ours[our_name] = tensor.float()
    return ours


def _ignored(
    name: str, value: Tensor, ignored: list[tuple[re.Pattern[str], Tensor | None]]
) -> str | None:
    """None: not an ignored tensor; "ok": ignored; otherwise why it cannot be ignored."""
    for pattern, kernel in ignored:
        if pattern.fullmatch(name):
            if kernel is None or _same_kernel(value, kernel):
                return "ok"
            return f"is not the blur kernel our layers use ({kernel.tolist()})"
    return None


def _rename(
    name: str, rules: list[_Rule]
) -> tuple[str, Callable[[Tensor], Tensor | None] | None] | None:
    for pattern, target, shift, reshape in rules:
        match = pattern.fullmatch(name)
        if match:
            groups = list(match.groups())
            if groups and shift:
                groups[0] = str(int(groups[0]) + shift)
            return target.format(*groups), reshape
    return None


def _same_kernel(value: Tensor, kernel: Tensor) -> bool:
    return (
        value.shape == kernel.shape
        and value.is_floating_point()
        and torch.allclose(value.float(), kernel, rtol=0, atol=1e-6)
    )


def _filled(
    build: Callable[[ModelConfig], _M],
    config: ModelConfig,
    state: dict[str, Tensor],
    what: str,
    problems: list[str],
) -> _M | None:
    """`build(config)` loaded with `state`, or None with the mismatches added to `problems`."""
    try:
        module = build(config)
    except ValueError as exc:
        problems.append(f"the {what} cannot be built: {exc}")
        return None
    expected = module.state_dict()
    missing = [n for n in expected if n not in state]
    unexpected = [n for n in state if n not in expected]
    wrong = [
        f"{what}.{n} is {tuple(state[n].shape)}, expected {tuple(expected[n].shape)}"
        for n in expected
        if n in state and state[n].shape != expected[n].shape
    ]
    if missing:
        problems.append(f"{what} tensors missing: {', '.join(missing[:4])}" + _more(missing, 4))
    if unexpected:
        problems.append(
            f"{what} tensors with no place in the model: {', '.join(unexpected[:4])}"
            + _more(unexpected, 4)
        )
    problems.extend(wrong)
    if missing or unexpected or wrong:
        return None
    module.load_state_dict(state, strict=True)
    return module


def _mismatch_message(
    path: Path, g_problems: list[str], d_problems: list[str], target: str | None
) -> str:
    problems = g_problems + d_problems
    text = "; ".join(problems[:_MAX_LISTED]) + _more(problems, _MAX_LISTED)
    skip = d_problems and not g_problems
    hint = " (convert without the discriminator to skip it)" if skip else ""
    return f"{path.name} does not match {target or 'the InfinityGAN architecture'}{hint}: {text}"


def _more(items: list[str], shown: int) -> str:
    return f" and {len(items) - shown} more" if len(items) > shown else ""


def _count(state: Mapping[str, Tensor], pattern: str) -> int:
    """1 + the largest index matched by `pattern` (0 if none); gaps surface at load time."""
    regex = re.compile(pattern)
    indices = [int(m.group(1)) for name in state if (m := regex.fullmatch(name))]
    return max(indices, default=-1) + 1


def _official_disc_channels(patch_size: int) -> tuple[tuple[int, ...], int]:
    """The official discriminator's widths for a patch: from-RGB, then per block; linear."""

    def width(resolution: int) -> int:  # StyleGAN2's table: 512 up to 32 px, then halving
        return min(512, 16 * _D_CHANNEL_MULTIPLIER * 1024 // resolution)

    log_size = round(math.log2(patch_size))  # the official code rounds (101 -> 7)
    channels = [width(2**log_size)] + [width(2 ** (i - 1)) for i in range(log_size, 2, -1)]
    return tuple(channels), width(4)


def _as_int(value: Any) -> int:
    try:
        return int(value.item() if isinstance(value, Tensor) else value)
    except (TypeError, ValueError, RuntimeError):
        return 0


def _as_float(value: Any) -> float | None:
    try:
        result = float(value.item() if isinstance(value, Tensor) else value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return result if math.isfinite(result) else None
