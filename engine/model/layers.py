"""Building blocks of the InfinityGAN generator and discriminator, in plain PyTorch.

Descends from StyleGAN2 (Karras et al. 2020) as re-implemented by the InfinityGAN
authors; every layer here is padding-free unless it says otherwise, and no custom
CUDA op is needed: the fused bias + leaky ReLU and the blurs are ordinary ops.

Legend: B batch, C channels, H/W pixels, D style size, K styles blended per pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.model.kernel_choice import compiling, folds_blur, gpu_inference, inference

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def bias_lrelu(x: Tensor, bias: Tensor) -> Tensor:
    """leaky_relu(x + bias, 0.2) * sqrt(2): StyleGAN2's "fused" activation; bias per channel."""
    return F.leaky_relu(x + bias.view(1, -1, 1, 1).to(x.dtype), LRELU_SLOPE) * LRELU_GAIN


def pixel_norm(x: Tensor) -> Tensor:
    """Normalise each vector along dim 1 to unit root-mean-square."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


def binomial_kernel(taps: list[int], gain: float = 1.0) -> Tensor:
    """Separable 2-D kernel outer(taps, taps), normalised to sum `gain`."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[:, None] * k[None, :]
    return k * (gain / k.sum())


def depthwise(x: Tensor, kernel: Tensor, *, padding: int = 0, bias: Tensor | None = None) -> Tensor:
    """Same 2-D kernel on every channel (a symmetric kernel, so no flip is needed)."""
    c = x.shape[1]
    weight = kernel.to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    return F.conv2d(x, weight, bias, padding=padding, groups=c)


class Blur(nn.Module):
    """Separable binomial blur outer(taps, taps) with total `gain`, valid after zero `padding`.

    Same numbers two ways: a depthwise convolution on the CPU, shifted adds on a GPU
    (engine.model.kernel_choice: cuDNN's depthwise kernels are slow to train through and
    compile at run time for inference; eager inference on a GPU folds the generator's blurs
    into its upsampling weights instead).
    """

    def __init__(self, taps: list[int], *, gain: float = 1.0, padding: int = 0) -> None:
        super().__init__()
        t = torch.tensor(taps, dtype=torch.float64)
        t = t / t.sum() * math.sqrt(gain)
        self.taps = [float(v) for v in t]
        self.padding = padding
        self.register_buffer("kernel", (t[:, None] * t[None, :]).float(), persistent=False)

    def forward(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        # [B, C, H, W] -> [B, C, H + 2p - k + 1, W + 2p - k + 1]
        if x.device.type != "cuda":
            return depthwise(x, self.kernel, padding=self.padding, bias=bias)
        p = self.padding
        if p:
            x = F.pad(x, (p, p, p, p))
        out = _shifted_sum(_shifted_sum(x, self.taps, dim=2), self.taps, dim=3)
        return out if bias is None else out + bias.view(1, -1, 1, 1).to(out.dtype)


def _shifted_sum(x: Tensor, taps: list[float], dim: int) -> Tensor:
    """sum_i taps[i] * x shifted by i along `dim` (a valid 1-D correlation)."""
    n = x.shape[dim] - len(taps) + 1
    out = x.narrow(dim, 0, n) * taps[0]
    for i, tap in enumerate(taps[1:], start=1):
        out = out.add(x.narrow(dim, i, n), alpha=tap)
    return out


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate (weights stored unscaled, scaled at run time)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activate: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: Tensor) -> Tensor:  # [..., in] -> [..., out]
        bias = self.bias * self.lr_mul
        if self.activate:
            out = F.linear(x, self.weight * self.scale)
            return F.leaky_relu(out + bias, LRELU_SLOPE) * LRELU_GAIN
        return F.linear(x, self.weight * self.scale, bias)


class EqualConv2d(nn.Module):
    """Convolution with equalised learning rate; bias is optional (activations carry their own)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        *,
        stride: int = 1,
        padding: int = 0,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1 / math.sqrt(in_ch * kernel * kernel)
        self.stride = stride
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(
            x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding
        )


@dataclass(frozen=True, eq=False)
class SpatialStyle:
    """K styles blended per pixel: style(x) = sum_k weights[:, k](x) * styles[k].

    `weights_in` holds the blend at the conv's input pixels, `weights_out` at its output
    pixels (the same positions for a 1 x 1 conv); both are >= 0 and sum to 1 over K at
    every pixel. Modulation is affine in the style, so blending styles equals blending
    the modulations s_k they produce (spatial style fusion, INFINITYGAN.md section 7).
    """

    styles: Tensor  # [K, D]
    weights_in: Tensor  # [B, K, H, W]
    weights_out: Tensor  # [B, K, H', W']


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated (and optionally demodulated) convolution, padding-free.

    `upsample=True` is the padding-free upsampling conv of InfinityGAN: a stride-2
    transposed conv (H -> 2H + 1), one border pixel dropped on each side (-> 2H - 1),
    then a valid 3x3 binomial blur with gain 4 (-> 2H - 3). Otherwise a valid conv
    (H -> H - k + 1).

    The style is applied in one of two mathematically equal ways:
    - one style for the whole batch ([1, D]) that needs no gradient: the weights are
      modulated once and a plain batched conv runs (the fast path for a world with one
      style);
    - one style per sample ([B, D]): the input activations are scaled and the output
      demodulated per sample, around one shared-weight conv (no grouped conv, so
      training batches stay fast and bf16-friendly);
    - a blend of styles per pixel (`SpatialStyle`): the same, with the scale s(x) a
      per-pixel mix of K modulations and the demodulation evaluated at each output pixel
      from the blend there (exact, unlike the official code's resized input-side map).

    `input_gain` multiplies the input (folded into the weights, after demodulation): it
    carries the sqrt(2) of the previous layer's activation when that layer leaves it out.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        style_dim: int,
        *,
        demodulate: bool = True,
        upsample: bool = False,
        input_gain: float = 1.0,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1 / math.sqrt(in_ch * kernel * kernel)
        self.demodulate = demodulate
        self.upsample = upsample
        self.input_gain = input_gain
        if upsample:
            self.blur = Blur([1, 2, 1], gain=4.0)
            spread = blur_spread(self.blur.kernel, kernel)  # [k*k, (k+2)^2]
            self.register_buffer("blur_spread", spread, persistent=False)

    def forward(
        self, x: Tensor, style: Tensor | SpatialStyle, bias: Tensor | None = None
    ) -> Tensor:
        # x [B, Cin, H, W], style [1 or B, D] or SpatialStyle, bias [Cout] -> [B, Cout, H', W']
        if isinstance(style, SpatialStyle):
            return self._forward_spatial(x, style, bias)
        s = self.modulation(style)  # [b, Cin]
        weight = self.weight * self.scale  # [Cout, Cin, k, k]
        # A style being optimised (inversion) takes the activation path even when shared:
        # its gradient then needs no weight gradient of the conv, which costs 4x more.
        if s.shape[0] == 1 and not s.requires_grad:
            weight = weight * s.view(1, -1, 1, 1)
            if self.demodulate:
                weight = weight * torch.rsqrt(weight.pow(2).sum([1, 2, 3], keepdim=True) + 1e-8)
            return self._conv(x, weight * self.input_gain, bias)
        out = self._conv(x * s.view(*s.shape, 1, 1).to(x.dtype), weight * self.input_gain, None)
        if self.demodulate:
            # sum_{i,k} (W_oik s_i)^2 = (s^2) @ (sum_k W_oik^2)^T
            demod = torch.rsqrt(s.pow(2) @ weight.pow(2).sum([2, 3]).t() + 1e-8)  # [B, Cout]
            out = out * demod.view(*demod.shape, 1, 1).to(out.dtype)
        return out if bias is None else out + bias.view(1, -1, 1, 1).to(out.dtype)

    def _forward_spatial(self, x: Tensor, style: SpatialStyle, bias: Tensor | None) -> Tensor:
        """The per-pixel path, paid for only where the blend differs from one style.

        With r the style that covers most input pixels alone, s(x) = s_r + delta(x) where
        delta is zero outside a box, and the conv is linear, so

            conv(x * s(x), W) = conv(x, W s_r) + conv(x * delta, W)   (second term: box only)

        and the output is demodulated by d_r (folded into the weights) times d(x) / d_r
        (applied only where the output blend differs from style r). Far from where styles
        meet, the work is the one-style path's.
        """
        # x [B, Cin, H, W], style.weights_in [B, K, H, W], weights_out [B, K, H', W']
        s = self.modulation(style.styles).float()  # [K, Cin]
        weight = (self.weight * self.scale).float()  # [Cout, Cin, k, k]
        w_in, w_out = style.weights_in.float(), style.weights_out.float()
        ref = int((w_in == 1.0).sum(dim=(0, 2, 3)).argmax())
        box = _box_where_not(w_in[:, ref], halo=weight.shape[-1] - 1)
        if box is not None and (box[1] - box[0]) * (box[3] - box[2]) > w_in[0, 0].numel() / 2:
            # Styles meet over most of the input: one conv of the scaled input is cheaper.
            return self._forward_blended_everywhere(x, s, weight, style, bias)
        modulated = weight * s[ref].view(1, -1, 1, 1)
        d_ref = torch.ones(weight.shape[0], device=weight.device)  # [Cout]
        if self.demodulate:
            d_ref = torch.rsqrt(modulated.pow(2).sum([1, 2, 3]) + 1e-8)
        out = self._conv(x, modulated * d_ref.view(-1, 1, 1, 1) * self.input_gain, bias)
        with torch.autocast(x.device.type, enabled=False):
            if box is not None:
                y0, y1, x0, x1 = box
                delta = mix(w_in[:, :, y0:y1, x0:x1], s - s[ref])  # [B, Cin, h, w]
                part = x[:, :, y0:y1, x0:x1]
                scaled = (part * delta.to(x.dtype)).contiguous(memory_format=torch.channels_last)
                corr = self._conv(scaled, weight * self.input_gain, None)  # (the fast conv path)
                oy, ox = (2 * y0, 2 * x0) if self.upsample else (y0, x0)
                h, w = corr.shape[-2:]
                out[:, :, oy : oy + h, ox : ox + w] += corr * d_ref.view(1, -1, 1, 1).to(corr.dtype)
            box = _box_where_not(w_out[:, ref], halo=0) if self.demodulate else None
            if box is not None:
                y0, y1, x0, x1 = box
                ratio = self._spatial_demodulation(s, weight, w_out[:, :, y0:y1, x0:x1])
                ratio = (ratio / d_ref.view(1, -1, 1, 1)).to(out.dtype)  # [B, Cout, h, w]
                region = out[:, :, y0:y1, x0:x1]
                if bias is None:
                    region *= ratio
                else:  # the bias comes after the demodulation
                    b = bias.view(1, -1, 1, 1).to(out.dtype)
                    region.sub_(b).mul_(ratio).add_(b)
        return out

    def _forward_blended_everywhere(
        self, x: Tensor, s: Tensor, weight: Tensor, style: SpatialStyle, bias: Tensor | None
    ) -> Tensor:
        """conv(x * s(x), W) demodulated at every output pixel, with no box."""
        with torch.autocast(x.device.type, enabled=False):
            s_in = mix(style.weights_in.float(), s)  # [B, Cin, H, W]
        scaled = (x * s_in.to(x.dtype)).contiguous(memory_format=torch.channels_last)
        out = self._conv(scaled, weight * self.input_gain, None)
        if self.demodulate:
            with torch.autocast(x.device.type, enabled=False):
                demod = self._spatial_demodulation(s, weight, style.weights_out.float())
            out = out * demod.to(out.dtype)  # [B, Cout, H', W']
        return out if bias is None else out + bias.view(1, -1, 1, 1).to(out.dtype)

    @staticmethod
    def _spatial_demodulation(s: Tensor, weight: Tensor, m: Tensor) -> Tensor:
        """rsqrt(sum_i (sum_k m_k s_ki)^2 sum_taps W_oi^2) at every pixel of the blend
        m [B, K, H, W]: [B, Cout, H, W].

        Expanded as the quadratic form sum_{k,l} m_k m_l Q_okl with Q_okl = sum_i s_ki s_li
        sum_taps W_oi^2, so the per-pixel work is K^2 per output channel, not Cin.
        """
        k = s.shape[0]
        w2 = weight.pow(2).sum([2, 3])  # [Cout, Cin]
        q = (s[:, None, :] * s[None, :, :]).reshape(k * k, -1) @ w2.t()  # [K*K, Cout]
        pairs = (m[:, :, None] * m[:, None]).flatten(1, 2)  # [B, K*K, H, W]
        return torch.rsqrt(mix(pairs, q) + 1e-8)

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        bias = None if bias is None else bias.to(x.dtype)
        if self.upsample and folds_blur(x):
            blurred = blurred_upsampling_weight(weight.transpose(0, 1), self.blur_spread)
            # [B, Cin, H, W] -> [B, Cout, 2H-3, 2W-3], as the two steps below
            return F.conv_transpose2d(x, blurred.to(x.dtype), bias, stride=2, padding=3)
        weight = weight.to(x.dtype)
        if not self.upsample:
            if x.device.type == "cuda" and x.shape[1] % 8:
                x, weight = _pad_channels(x, weight)
            if _gemm_pays(x, weight):
                return conv_as_gemm(x, weight, bias)
            return F.conv2d(x, weight, bias)
        out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2, padding=1)  # 2H - 1
        return self.blur(out, bias)  # [B, Cout, 2H-3, 2W-3]


def blur_spread(blur: Tensor, k: int) -> Tensor:
    """The linear map from a k x k filter to that filter convolved in full with the
    symmetric `blur` [b, b]: [k*k, n*n] with n = k + b - 1, so that
    blurred = filter.reshape(-1, k*k) @ spread. (A matrix product needs no cuDNN set-up.)"""
    b = blur.shape[-1]
    basis = torch.eye(k * k, dtype=torch.float64).view(k * k, 1, k, k)
    full = F.conv2d(basis, blur.detach().cpu().double()[None, None], padding=b - 1)
    return full.reshape(k * k, -1).float()


def blurred_upsampling_weight(weight: Tensor, spread: Tensor) -> Tensor:
    """The weight of one stride-2 transposed convolution (padding 3) that equals a stride-2
    transposed convolution by `weight` (padding 1) followed by a valid, symmetric 3 x 3
    blur whose `blur_spread` is `spread`: weight [Cin, Cout, 3, 3] -> float32
    [Cin, Cout, 5, 5] (computed in float32 whatever the autocast).

    Both are linear and act on the upsampled grid, so they compose. An H200 ran the blur of
    a 2048 x 1280 `paper` view window as shifted adds in 24 ms and the 3 x 3 transposed
    convolutions in 6 ms; cuDNN's depthwise blur takes 9 ms, after a set-up of 0.25 s per
    layer and window shape. The 5 x 5 convolution needs no such set-up."""
    cin, cout, k, _ = weight.shape
    n = math.isqrt(spread.shape[1])
    with torch.autocast(weight.device.type, enabled=False):
        blurred = weight.to(torch.float32).reshape(cin * cout, k * k) @ spread
    return blurred.view(cin, cout, n, n)


def _pad_channels(x: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """x [B, Cin, H, W] and weight [Cout, Cin, k, k] with zero input channels up to a
    multiple of 8 (the same convolution): cuDNN has no tensor-core kernel for other counts,
    such as G_S's C + 3 inputs, which ran at half the speed on an H200."""
    pad = -x.shape[1] % 8
    x = torch.cat([x, x.new_zeros(x.shape[0], pad, *x.shape[2:])], dim=1)
    weight = torch.cat([weight, weight.new_zeros(weight.shape[0], pad, *weight.shape[2:])], dim=1)
    return x.contiguous(memory_format=torch.channels_last), weight


# Largest im2col matrix `conv_as_gemm` builds (elements): 512 MB in bf16.
GEMM_MAX_ELEMENTS = 1 << 28


def _gemm_pays(x: Tensor, weight: Tensor) -> bool:
    """Whether a valid conv should run as `conv_as_gemm`: G_S's 7 x 7 convs (the paper's
    feature unfolding) on a GPU, for inference. For some lattice sizes cuDNN's heuristics
    pick a kernel without tensor cores for them: 1.8 ms per call for a 2048 x 512 `paper`
    window on an H200, 12% of the window's GPU time for 1% of its FLOPs, where the GEMM
    takes a fraction of that. Training keeps cuDNN (im2col would hold the unfolded batch
    for the backward pass)."""
    k = weight.shape[-1]
    if k < 5 or not gpu_inference(x):
        return False
    b, c, h, w = x.shape
    return b * c * k * k * (h - k + 1) * (w - k + 1) <= GEMM_MAX_ELEMENTS


def conv_as_gemm(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """F.conv2d(x, weight, bias) (valid, stride 1) as im2col and one matrix product:
    x [B, C, H, W], weight [O, C, k, k] -> [B, O, H - k + 1, W - k + 1], channels_last."""
    o, c, kh, kw = weight.shape
    patches = x.permute(0, 2, 3, 1).unfold(1, kh, 1).unfold(2, kw, 1)  # [B, H', W', C, kh, kw]
    b, h, w = patches.shape[:3]
    cols = patches.reshape(b * h * w, c * kh * kw)  # [B*H'*W', C*kh*kw], in weight's order
    out = F.linear(cols, weight.reshape(o, -1), bias)  # [B*H'*W', O]
    return out.view(b, h, w, o).permute(0, 3, 1, 2)


class StyledConv(nn.Module):
    """Modulated conv, then bias and per-pixel noise, then leaky ReLU (StyleGAN2 order).

    The activation's sqrt(2) gain is applied only if `output_gain` is True; otherwise the
    next layer must carry it (its `input_gain`), which saves a pass over the tensor.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        style_dim: int,
        *,
        upsample: bool = False,
        noise: bool = True,
        input_gain: float = 1.0,
        output_gain: bool = True,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_ch, out_ch, kernel, style_dim, upsample=upsample, input_gain=input_gain
        )
        self.noise_strength = nn.Parameter(torch.zeros(1)) if noise else None
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.output_gain = output_gain

    def forward(
        self, x: Tensor, style: Tensor | SpatialStyle, noise: Tensor | None = None
    ) -> Tensor:
        # x [B, Cin, H, W], noise [B, 1, H', W'] or None (no noise) -> [B, Cout, H', W']
        if self.noise_strength is None:
            noise = None
        one_pass = _one_pass_pays(x)
        out = self.conv(x, style, None if one_pass else self.bias)
        if noise is not None and noise.shape[-2:] != out.shape[-2:]:
            raise ValueError(f"noise {tuple(noise.shape)} does not match {tuple(out.shape)}")
        if one_pass:
            out = add_bias_and_noise(out, self.bias, noise, self.noise_strength)
        elif noise is not None:
            out = out + noise.to(out.dtype) * self.noise_strength.to(out.dtype)
        out = F.leaky_relu(out, LRELU_SLOPE, inplace=not torch.is_grad_enabled())
        return out * LRELU_GAIN if self.output_gain else out


def _one_pass_pays(x: Tensor) -> bool:
    """Whether a styled conv adds its bias and noise with `add_bias_and_noise`: in eager
    inference. (Compiled code fuses the adds with the activation itself.)"""
    return inference(x) and not compiling()


def add_bias_and_noise(
    out: Tensor, bias: Tensor, noise: Tensor | None, strength: Tensor | None
) -> Tensor:
    """out + bias per channel + strength * noise per pixel, in one pass over `out`, in place
    where out is channels_last: a rank-2 update of out seen as a [B*H*W, C] matrix.

    On a GPU the two broadcasting adds ran at about a third of the memory bandwidth: 1.3-1.5
    ms each for a 2055 x 519 x 512 bf16 activation on an H200, and the 20 of an eager `paper`
    window took 28% of its GPU time. cuBLAS's update reads and writes `out` once, in fp32
    with one rounding: 2048 x 512 windows went from 35.5 to 42.0-42.4 MP/s, as close to an
    fp32 render as before. On a 2-core CPU with AMX the noise add of a 32 x 519 x 1575
    activation, into a new tensor, took 29 ms in bf16 and 41 ms in fp32, the update 1.5-3.3
    ms and 8-11 ms: `lite`'s 1536 x 512 windows went from 3.6 to 4.0-4.1 MP/s in bf16 and
    from 2.1-2.4 to 2.4-2.6 MP/s in fp32. out [B, C, H, W], bias [C], noise [B, 1, H, W] or
    None, strength [1]."""
    b, c, h, w = out.shape
    out = out.contiguous(memory_format=torch.channels_last)
    rows = out.permute(0, 2, 3, 1).view(b * h * w, c)  # [B*H*W, C], a view of out
    ones = out.new_ones(b * h * w, 1)
    if noise is None:
        left, right = ones, bias.to(out.dtype).view(1, c)  # [B*H*W, 1], [1, C]
    else:
        left = torch.cat([noise.reshape(b * h * w, 1).to(out.dtype), ones], dim=1)  # [BHW, 2]
        right = torch.stack([strength.to(out.dtype).expand(c), bias.to(out.dtype)])  # [2, C]
    return rows.addmm_(left, right).view(b, h, w, c).permute(0, 3, 1, 2)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (no demodulation) plus the upsampled previous RGB.

    The skip is upsampled by a stride-2 transposed conv with the binomial [1, 2, 1] kernel
    (gain 4, i.e. linear interpolation), trimmed by one pixel per side, then centre-cropped
    to this layer's size (S -> 2S - 1 -> 2S - 5); for inference on a GPU, by interpolation
    (`upsample_skip`, see engine.model.kernel_choice).
    """

    def __init__(self, in_ch: int, style_dim: int, *, input_gain: float = 1.0) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False, input_gain=input_gain)
        self.bias = nn.Parameter(torch.zeros(3))
        self.register_buffer("upsample_kernel", binomial_kernel([1, 2, 1], 4.0), persistent=False)

    def forward(self, x: Tensor, style: Tensor | SpatialStyle, skip: Tensor | None) -> Tensor:
        # x [B, Cin, H, W], skip [B, 3, S, S] with 2S - 5 = H -> [B, 3, H, W]
        rgb = self.conv(x, style, self.bias)
        if skip is None:
            return rgb
        if gpu_inference(skip):
            up = upsample_skip(skip)
        else:
            kernel = self.upsample_kernel.to(skip.dtype)[None, None].expand(3, 1, 3, 3)
            up = F.conv_transpose2d(skip, kernel, stride=2, padding=3, groups=3)  # 2S - 5
        return rgb + up.to(rgb.dtype)


def upsample_skip(skip: Tensor) -> Tensor:
    """ToRGB's skip upsampling (a stride-2 transposed conv with the binomial [1, 2, 1] gain-4
    kernel, padding 3) as linear interpolation onto 2S - 1 pixels, trimmed by 2 per side: the
    same numbers with no cuDNN set-up. [B, 3, S, S'] -> [B, 3, 2S - 5, 2S' - 5]."""
    h, w = skip.shape[-2:]
    full = F.interpolate(skip, (2 * h - 1, 2 * w - 1), mode="bilinear", align_corners=True)
    return full[..., 2:-2, 2:-2]


def mix(weights: Tensor, vectors: Tensor) -> Tensor:
    """sum_k weights[:, k] * vectors[k] per pixel: weights [B, K, H, W], vectors [K, C] ->
    [B, C, H, W]. K small: one fused multiply-add per style runs two to three times faster
    on the CPU than the equivalent einsum or 1 x 1 convolution."""
    vectors = vectors.to(weights.dtype)
    out = weights[:, 0:1] * vectors[0].view(1, -1, 1, 1)
    for k in range(1, vectors.shape[0]):
        out.addcmul_(weights[:, k : k + 1], vectors[k].view(1, -1, 1, 1))
    return out


def _box_where_not(weight: Tensor, *, halo: int) -> tuple[int, int, int, int] | None:
    """Rows [y0, y1) and columns [x0, x1) of the smallest box holding every pixel where
    `weight` [B, H, W] is not exactly 1, grown by `halo` (clipped); None when there is none."""
    rows = (weight != 1.0).any(dim=2).any(dim=0)  # [H]
    if not bool(rows.any()):
        return None
    cols = (weight != 1.0).any(dim=1).any(dim=0)  # [W]
    ys, xs = rows.nonzero()[:, 0], cols.nonzero()[:, 0]
    h, w = weight.shape[-2:]
    y0, y1 = max(0, int(ys[0]) - halo), min(h, int(ys[-1]) + 1 + halo)
    x0, x1 = max(0, int(xs[0]) - halo), min(w, int(xs[-1]) + 1 + halo)
    return y0, y1, x0, x1


def center_crop(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Crop the last two dims of `x` symmetrically to `size` (the difference must be even)."""
    dh, dw = x.shape[-2] - size[0], x.shape[-1] - size[1]
    if dh < 0 or dw < 0 or dh % 2 or dw % 2:
        raise ValueError(f"cannot centre-crop {tuple(x.shape[-2:])} to {tuple(size)}")
    return x[..., dh // 2 : dh // 2 + size[0], dw // 2 : dw // 2 + size[1]]
