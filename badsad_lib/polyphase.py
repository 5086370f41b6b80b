"""The networks' convolution blocks computed on 2 x 2 phase grids (space-to-depth), the same maths faster.

An image of size H x W splits into four phase images of size H/2 x W/2 (pixel (2Y + a, 2X + b) goes to
phase (a, b)). Two identities make DeepSAD's LeNet blocks cheaper in that layout:

- **conv -> BatchNorm -> LeakyReLU -> 2 x 2 max-pool** (the encoder). A k x k convolution (stride 1,
  padding k // 2) of the full image is a 3 x 3 convolution from the four input phases to the four output
  phases, with the kernel's taps regrouped (``encoder_kernel``); on one-channel images, a stride-2
  convolution with the kernel shifted by each phase (``strided_kernel``). The pool's window is then exactly the
  four output phases of one position, and since BatchNorm without affine parameters and LeakyReLU are
  increasing in each channel, max-pooling commutes with them: the pool runs on the raw convolution and
  the normalisation and activation on the pooled quarter. BatchNorm's statistics still come from every
  position and phase (``conv_norm_pool``).
- **2x nearest upsampling -> transposed convolution** (the decoder). The upsampled image repeats each
  pixel 2 x 2 times, so each output phase is a small convolution of the image before upsampling whose
  taps are sums of the kernel's (``decoder_kernel``); the four phases are interleaved back at the end.

For MNIST's small channel counts these convolutions run about twice as fast in oneDNN (fewer, wider
channels: 1.8x and 2.2x for the encoder's two, forward and backward), the decoder does a third to two
thirds of the arithmetic, and no upsampled image is ever made. Encoder blocks wider than ``NARROW``
channels keep the plain layers, which run faster there (``run`` decides). The weights and state dicts
are those of the plain layers; values agree with them up to float rounding (tests in float64). Ties in
the pool go to the first maximum in the window's row order, as ``max_pool2d``'s do. On the CPU the pooled
blocks' BatchNorm, LeakyReLU and pool run as compiled loops (``cpu_kernels``), elsewhere as PyTorch
operators. Every function takes ``groups``: G networks stacked along the channels (``stacked``), model g's
channels in block g, each block computed with its own weights and statistics.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from . import cpu_kernels
from .device import memory_format_for

aten = torch.ops.aten
# The most arithmetic a phase form may do, as a multiple of the plain convolution's (k = 5: 1.44x passes;
# k = 3: 4x for space-to-depth, 1.78x for stride 2, fails, so digits' 3 x 3 kernels keep the plain layers).
MAX_ARITHMETIC = 1.5


# ------------------------------------------------------------------ layouts
def space_to_depth(x: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """(N, G*C, H, W) -> (N, G*4*C, H/2, W/2), channels ordered (g, row phase, column phase, c)."""
    n, gc, h, w = x.shape
    c = gc // groups
    v = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2, groups, c)
    return v.permute(0, 1, 3, 5, 2, 4, 6).reshape(n, h // 2, w // 2, gc * 4).permute(0, 3, 1, 2)


def depth_to_space(z: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """The inverse of ``space_to_depth``: (N, G*4*C, h, w) -> (N, G*C, 2h, 2w)."""
    n, g4c, h, w = z.shape
    c = g4c // (4 * groups)
    v = z.permute(0, 2, 3, 1).reshape(n, h, w, groups, 2, 2, c)
    return v.permute(0, 1, 4, 2, 5, 3, 6).reshape(n, 2 * h, 2 * w, groups * c).permute(0, 3, 1, 2)


# ------------------------------------------------------------------ kernels
# Each phase form of a k x k kernel is a linear map of its k * k taps: one matrix product with a 0/1 (or,
# for the decoder's summed taps, small-count) matrix, the Kronecker square of a per-axis tap matrix, cached
# per device and dtype. Per axis, rows are (output phase a, [input phase r,] offset) and columns the taps.
@lru_cache(maxsize=None)
def _encoder_taps(k: int, p: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, int, int] | None:
    """(k*k, (2*2*K)^2) map for the space-to-depth form: per axis, tap d goes to (output phase a, input phase r,
    offset q) with d = 2 q + r - a + p; its padding and K. None where that padding would be uneven or the form
    would do more than ``MAX_ARITHMETIC`` times the plain convolution's arithmetic."""
    entries = [(a, (a + d - p) % 2, (a + d - p) // 2, d) for a in (0, 1) for d in range(k)]
    low, high = min(e[2] for e in entries), max(e[2] for e in entries)
    if low != -high or 4 * (high - low + 1) ** 2 > MAX_ARITHMETIC * k * k:
        return None
    taps = torch.zeros(2, 2, high - low + 1, k)
    for a, r, q, d in entries:
        taps[a, r, q - low, d] = 1.0
    return _square(taps.reshape(-1, k), device, dtype), -low, high - low + 1


@lru_cache(maxsize=None)
def _strided_taps(k: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(k*k, (2*(k+1))^2) map for the stride-2 form: per axis, tap d goes to (output phase a, position a + d)."""
    taps = torch.zeros(2, k + 1, k)
    for a in (0, 1):
        for d in range(k):
            taps[a, a + d, d] = 1.0
    return _square(taps.reshape(-1, k), device, dtype)


@lru_cache(maxsize=None)
def _decoder_taps(k: int, p: int, size_in: int, device: torch.device,
                  dtype: torch.dtype) -> tuple[torch.Tensor, int, int] | None:
    """(k*k, (2*K)^2) map for a transposed convolution (padding p) of a 2x upsampled image: per axis, tap d of
    the equivalent convolution (the kernel flipped, padding k - 1 - p) summed into (output phase a, offset o)
    of the image before upsampling; its padding and K. None where that padding would be uneven or the output
    has an odd size."""
    p = k - 1 - p
    out = 2 * size_in + 2 * p - k + 1
    if out <= 0 or out % 2:
        return None
    entries = [(a, (a + d - p) // 2, d) for a in (0, 1) for d in range(k)]
    low, high = min(e[1] for e in entries), max(e[1] for e in entries)
    size, pad = high - low + 1, -low
    if pad < 0 or size_in + 2 * pad - size + 1 != out // 2:
        return None
    taps = torch.zeros(2, size, k)
    for a, o, d in entries:
        taps[a, o - low, k - 1 - d] += 1.0  # k - 1 - d: the transposed kernel's own tap (flipped)
    return _square(taps.reshape(-1, k), device, dtype), pad, size


def _square(taps: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The map of k x k kernels through the per-axis tap matrix ``taps`` (R, k) on both axes: (k*k, R*R), on
    ``device`` in ``dtype``, made once (no copy to the device in a step loop) and never an inference tensor, even
    when first asked for under ``torch.inference_mode`` (autograd could not use it)."""
    with torch.inference_mode(False):
        return torch.kron(taps, taps).T.contiguous().to(device=device, dtype=dtype, copy=True)


def _mapped(weight: torch.Tensor, taps: torch.Tensor, groups: int, split, order) -> torch.Tensor:
    """``weight`` (G*A, B, k, k) through ``taps``, viewed as (G, A, B, *split) and permuted by ``order`` into
    (G, a, b, out-channel, ..., y, x) order: the kernel (G*4*Co, Ci', K, K), in the device's memory format."""
    ga, b, k, _ = weight.shape
    m = (weight.reshape(ga * b, k * k) @ taps).reshape(groups, ga // groups, b, *split).permute(*order)
    size, inputs = m.shape[-1], math.prod(m.shape[4:-2])
    return m.reshape(-1, inputs, size, size).contiguous(memory_format=_format_of(weight))


def encoder_kernel(weight: torch.Tensor, padding: int, groups: int = 1):
    """The space-to-depth form of a Conv2d weight (G*Co, Ci, k, k) with ``padding``: ((G*4*Co, 4*Ci, K, K),
    padding) for ``space_to_depth`` inputs and phase-ordered outputs; None if the geometry does not allow it."""
    k = weight.shape[-1]
    found = _encoder_taps(k, padding, weight.device, weight.dtype)
    if found is None:
        return None
    taps, pad, size = found
    # (G, Co, Ci, a, r, q, b, s, u) -> (G, a, b, Co, r, s, Ci, q, u)
    return _mapped(weight, taps, groups, (2, 2, size, 2, 2, size), (0, 3, 6, 1, 4, 7, 2, 5, 8)), pad


def strided_kernel(weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """The stride-2 form of a Conv2d weight (G*Co, Ci, k, k) with padding k // 2: (G*4*Co, Ci, k+1, k+1), output
    phase (a, b) being the kernel shifted by (a, b), so that ``conv2d(x, ., stride=2, padding=k // 2)`` gives
    the four output phases of the plain convolution, phase-ordered, from x as it is."""
    k = weight.shape[-1]
    # (G, Co, Ci, a, i, b, j) -> (G, a, b, Co, Ci, i, j)
    return _mapped(weight, _strided_taps(k, weight.device, weight.dtype), groups, (2, k + 1, 2, k + 1),
                   (0, 3, 5, 1, 2, 4, 6))


def decoder_kernel(weight: torch.Tensor, padding: int, size_in: int, groups: int = 1):
    """The phase form of a stride-1 ConvTranspose2d weight (G*Ci, Co, k, k) with ``padding``, applied after 2x
    nearest upsampling of a ``size_in``-pixel image: ((G*4*Co, Ci, K, K), padding) for the image before
    upsampling, outputs phase-ordered; None if the geometry does not allow it."""
    k = weight.shape[-1]
    found = _decoder_taps(k, padding, size_in, weight.device, weight.dtype)
    if found is None:
        return None
    taps, pad, size = found
    # (G, Ci, Co, a, o, b, u) -> (G, a, b, Co, Ci, o, u)
    return _mapped(weight, taps, groups, (2, size, 2, size), (0, 3, 5, 2, 1, 4, 6)), pad


def _phase_bias(bias: torch.Tensor | None, groups: int) -> torch.Tensor | None:
    return None if bias is None else bias.reshape(groups, 1, -1).expand(groups, 4, -1).reshape(-1)


# ------------------------------------------------------------------ BatchNorm + LeakyReLU + pool on phases
# Phase-ordered conv outputs z (N, G*4*C, h, w), channels-last, are rows (M = N*h*w, G*4*C) in memory, and
# each row's (g) block is a 2 x 2 x C image: the 2 x 2 window of one pooled pixel. So the pool is max_pool2d
# on M*G images of 2 x 2 pixels (first maximum in row order on ties, as on the full image), and every
# per-channel vector is laid over whole rows (G*4*C wide) or tiled rows of the pooled quarter, the shapes
# PyTorch's CPU kernels run fastest.
def _windows(rows: torch.Tensor, groups: int) -> torch.Tensor:
    """Rows (M, G*4*C) as M*G channels-last images (M*G, C, 2, 2) (a view)."""
    m, width = rows.shape
    c = width // (4 * groups)
    return rows.reshape(m * groups, 2, 2, c).permute(0, 3, 1, 2)


def _over_phases(v: torch.Tensor) -> torch.Tensor:
    """A per-channel vector (G, C) repeated over the four phases: (G*4*C,), the order of a row."""
    return v.unsqueeze(1).expand(v.shape[0], 4, v.shape[1]).reshape(-1)  # (repeat is slower: a composite op)


def _per_channel(rows: torch.Tensor, groups: int) -> torch.Tensor:
    """Sums of rows (M, G*4*C) over positions and phases: (G, C)."""
    return rows.sum(0).view(groups, 4, -1).sum(1)


def _window_max(rows: torch.Tensor, groups: int) -> torch.Tensor:
    """The max over each row's 2 x 2 windows, values only: (M, G*C) (five times faster than max_pool2d here)."""
    m, width = rows.shape
    halves = rows.view(m * groups, 2, width // (2 * groups))  # (row phase, (column phase, channel))
    cols = torch.maximum(halves[:, 0], halves[:, 1]).view(m * groups, 2, -1)
    return torch.maximum(cols[:, 0], cols[:, 1]).view(m, -1)


def _affine(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """x (M, F) * scale (F,) + shift (F,), computed on rows of at least 128 values (``cpu_kernels.row_tiles``)."""
    m, f = x.shape
    t = cpu_kernels.row_tiles(m, f)
    return torch.addcmul(shift.expand(t, f).reshape(-1), x.reshape(m // t, t * f),
                         scale.expand(t, f).reshape(-1)).reshape(m, f)


class _NormActPool(torch.autograd.Function):
    """Training mode on rows (M, G*4*C) of phase-ordered conv outputs: leaky_relu of BatchNorm (batch
    statistics over the M positions and 4 phases) of the max over phases -> (M, G*C); the backward of those
    layers written out, its batch means taken on the pooled quarter (the gradient is zero elsewhere)."""

    @staticmethod
    def forward(ctx, rows, groups: int, eps: float, slope: float):
        ctx.groups, ctx.slope, ctx.compiled = groups, slope, cpu_kernels.usable(rows)
        if ctx.compiled:  # the same maths as compiled loops (cpu_kernels)
            out, mean, var, (idx, xhat, ctx.stats) = cpu_kernels.forward(rows, groups, eps, slope)
            ctx.save_for_backward(rows, idx, xhat)
            ctx.mark_non_differentiable(mean, var)
            return out, mean, var
        m, count = rows.shape[0], float(rows.shape[0] * 4)
        mean = _per_channel(rows, groups).div_(count)
        var = _per_channel((rows - _over_phases(mean)).square_(), groups).div_(count)
        rstd = var.add(eps).rsqrt_()
        pooled, idx = aten.max_pool2d_with_indices(_windows(rows, groups), [2, 2], [2, 2])
        xhat = _affine(pooled.view(m, -1), rstd.view(-1), mean.mul(rstd).neg_().view(-1))
        ctx.save_for_backward(rows, idx, xhat, mean, rstd)
        ctx.mark_non_differentiable(mean, var)
        return F.leaky_relu(xhat, slope), mean, var

    @staticmethod
    def backward(ctx, grad, _mean, _var):
        if ctx.compiled:
            return cpu_kernels.backward(grad, *ctx.saved_tensors, ctx.stats, ctx.groups, ctx.slope), None, None, None
        rows, idx, xhat, mean, rstd = ctx.saved_tensors
        m, groups = rows.shape[0], ctx.groups
        count = float(m * 4)
        g = aten.leaky_relu_backward(grad.reshape(xhat.shape), xhat, ctx.slope, False)
        # dz = rstd * (G - mean(G) - xhat * mean(G * xhat)), G zero off the pooled maxima (where xhat is known)
        a = g.sum(0).reshape(mean.shape) / count
        b = (g * xhat).sum(0).reshape(mean.shape) / count
        beta = -rstd * rstd * b
        alpha = -rstd * a - beta * mean
        dz = torch.addcmul(_over_phases(alpha), rows, _over_phases(beta))
        shape = (m, groups, 1, mean.shape[1])  # the pooled maxima: phase idx (0-3) of each (position, channel)
        dz.view(m, groups, 4, -1).scatter_add_(2, idx.view(shape), (g * rstd.reshape(-1)).view(shape))
        return dz, None, None, None


def norm_act_pool(z: torch.Tensor, norm: nn.modules.batchnorm._BatchNorm, slope: float,
                  groups: int = 1) -> torch.Tensor:
    """leaky_relu(norm(.)) then 2 x 2 max-pool of the image whose phases z (N, G*4*C, h, w) holds (phase-
    ordered, as ``space_to_depth`` orders them): (N, G*C, h, w). ``norm`` (G*C channels, no affine) acts as
    it would in its current mode, its running statistics updated as its own forward updates them."""
    n, width, h, w = z.shape
    rows = z.permute(0, 2, 3, 1).reshape(n * h * w, width)
    c = width // (4 * groups)
    if norm.training or norm.running_mean is None:
        out, mean, var = _NormActPool.apply(rows, groups, norm.eps, slope)
        if norm.training and norm.track_running_stats:
            with torch.no_grad():
                norm.num_batches_tracked.add_(1)
                f = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
                count = rows.shape[0] * 4
                norm.running_mean.mul_(1 - f).add_(mean.reshape(-1), alpha=f)
                norm.running_var.mul_(1 - f).add_(var.reshape(-1) * (count / max(count - 1, 1)), alpha=f)
    else:
        if torch.is_grad_enabled() and rows.requires_grad:
            pooled = F.max_pool2d(_windows(rows, groups), 2, 2).reshape(rows.shape[0], groups * c)
        else:  # nothing to route a gradient to: the values alone
            pooled = _window_max(rows, groups)
        rstd = (norm.running_var + norm.eps).rsqrt()
        out = F.leaky_relu(_affine(pooled, rstd, -norm.running_mean * rstd), slope)
    return out.reshape(n, h, w, groups * c).permute(0, 3, 1, 2)


# ------------------------------------------------------------------ the blocks
def conv_norm_pool(x: torch.Tensor, weight: torch.Tensor, padding: int, norm, slope: float,
                   groups: int = 1) -> torch.Tensor | None:
    """max_pool2d(leaky_relu(norm(conv2d(x, weight, padding=padding, groups=groups))), 2, 2) for x
    (N, G*Ci, H, W) with H, W even: (N, G*Co, H/2, W/2); None where the geometry does not allow it."""
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        return None
    fmt, k = _format_of(x), weight.shape[-1]
    if weight.shape[1] == 1 and k % 2 and padding == k // 2 and (k + 1) ** 2 <= MAX_ARITHMETIC * k * k:
        # one input channel (the images): the stride-2 form reads x as it is, and runs faster in oneDNN than
        # the phase form (whose input must be rearranged first); wider inputs: the phase form, whose backward
        # runs about twice as fast as the stride-2 form's there
        z = F.conv2d(x, strided_kernel(weight, groups), stride=2, padding=padding, groups=groups)
    else:
        found = encoder_kernel(weight, padding, groups)
        if found is None:
            return None
        kernel, pad = found
        z = F.conv2d(space_to_depth(x, groups).contiguous(memory_format=fmt), kernel, padding=pad, groups=groups)
    return norm_act_pool(z, norm, slope, groups)


def upsampled_conv_transpose(u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
                             groups: int = 1) -> torch.Tensor | None:
    """conv_transpose2d(2x nearest upsampling of u, weight, bias, padding=padding, groups=groups) for u
    (N, G*Ci, h, w): (N, G*Co, H', W'); None where the geometry does not allow it."""
    if u.shape[-1] != u.shape[-2]:
        return None
    found = decoder_kernel(weight, padding, u.shape[-1], groups)
    if found is None:
        return None
    kernel, pad = found
    z = F.conv2d(u, kernel, _phase_bias(bias, groups), padding=pad, groups=groups)
    return depth_to_space(z, groups).contiguous(memory_format=_format_of(u))


def _format_of(x: torch.Tensor) -> torch.memory_format:
    """The memory format the networks use on x's device (``device.memory_format_for``)."""
    return memory_format_for(x.device)


# ------------------------------------------------------------------ running a network's layers
# The widest encoder block computed on phases. PyTorch's channels-last kernels vectorise over channels, so a
# plain block of 16 or more channels already runs well, and there the phase form's 1.44x arithmetic loses
# (one MNIST-batch training step, measured: Fashion-MNIST's 16/32-channel encoder 0.82x, CIFAR-10's 0.64x;
# MNIST's 8/4-channel one 1.4x faster). The decoder's phase form does less arithmetic and wins at every width.
NARROW = 8


def _conv_spec(layer: nn.Module):
    """(weight, bias, padding, groups, transposed) of a stride-1, square, zero-padded convolution layer
    (nn.Conv2d / nn.ConvTranspose2d, or a stacked one that describes itself with ``phase_spec()``); else None."""
    if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
        transposed = isinstance(layer, nn.ConvTranspose2d)
        plain = (layer.groups == 1 and tuple(layer.stride) == (1, 1) and tuple(layer.dilation) == (1, 1)
                 and layer.padding_mode == "zeros" and isinstance(layer.padding, tuple)
                 and layer.padding[0] == layer.padding[1] and layer.kernel_size[0] == layer.kernel_size[1]
                 and (not transposed or tuple(layer.output_padding) == (0, 0)))
        return (layer.weight, layer.bias, layer.padding[0], 1, transposed) if plain else None
    spec = getattr(layer, "phase_spec", None)
    return spec() if spec is not None else None


def _norm_of(layer: nn.Module):
    """The BatchNorm2d without affine parameters that ``layer`` is (or wraps, stacked); else None."""
    norm = layer if isinstance(layer, nn.BatchNorm2d) else getattr(layer, "norm", None)
    return norm if isinstance(norm, nn.BatchNorm2d) and not norm.affine else None


def _hooked(layers) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
               for m in layers)


def _pooled_block(layers, i, x):
    """Layers i .. i+3 as conv -> BatchNorm -> LeakyReLU -> 2 x 2 max-pool on phases, or None."""
    if i + 4 > len(layers):
        return None
    conv, norm, act, pool = layers[i:i + 4]
    spec, bn = _conv_spec(conv), _norm_of(norm)
    if (spec is None or spec[1] is not None or spec[4] or bn is None or not isinstance(act, nn.LeakyReLU)
            or act.negative_slope < 0 or not isinstance(pool, nn.MaxPool2d) or _hooked(layers[i:i + 4])):
        return None
    if spec[0].shape[0] // spec[3] > NARROW:
        return None
    if not (pool.kernel_size in (2, (2, 2)) and pool.stride in (2, (2, 2)) and pool.padding in (0, (0, 0))
            and pool.dilation in (1, (1, 1)) and not pool.ceil_mode and not pool.return_indices):
        return None
    return conv_norm_pool(x, spec[0], spec[2], bn, act.negative_slope, spec[3])


def _upsampled_block(layers, i, x):
    """Layers i, i+1 as 2x nearest upsampling -> transposed convolution on phases, or None."""
    if i + 2 > len(layers):
        return None
    up, conv = layers[i:i + 2]
    spec = _conv_spec(conv)
    if (not isinstance(up, nn.Upsample) or up.mode != "nearest" or up.size is not None
            or up.scale_factor not in (2, 2.0, (2, 2), (2.0, 2.0)) or spec is None or not spec[4]
            or _hooked(layers[i:i + 2])):
        return None
    return upsampled_conv_transpose(x, spec[0], spec[1], spec[2], spec[3])


def run(layers, x: torch.Tensor) -> torch.Tensor:
    """x through ``layers`` (a network's leaf layers, in order), the blocks this module knows computed on
    phases and every other layer called as it is (its hooks run). A block with a hook on one of its layers,
    an affine BatchNorm or another geometry runs layer by layer."""
    i = 0
    while i < len(layers):
        for block, width in ((_pooled_block, 4), (_upsampled_block, 2)):
            out = block(layers, i, x) if x.ndim == 4 else None
            if out is not None:
                x, i = out, i + width
                break
        else:
            x, i = layers[i](x), i + 1
    return x
