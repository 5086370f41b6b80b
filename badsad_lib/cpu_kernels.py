"""The phase blocks' BatchNorm + LeakyReLU + 2 x 2 max-pool (``polyphase.norm_act_pool``) as compiled loops on the CPU.

On MNIST's blocks PyTorch runs that step as a dozen kernels over rows (M, G*4*C) of only 4 or 8 channels,
which its channels-last kernels cannot spread over a vector: ``max_pool2d_with_indices`` alone took 0.75 ms of
an 8.7 ms encoder step, the first block's forward and backward 2.6 ms (one thread, batch 128). Here the same
maths is five loops compiled by numba, each pass over the rows doing all it can at once (the first block: about
0.75 ms; a training step 1.3x faster, measured in training):

- forward: the per-column sums of the rows and of their squares (in float64, shifted by a value of each
  channel, so that the variance does not cancel); the first maximum of each window with its phase (0-3, int8),
  NaN winning as in ``max_pool2d``; then the normalised, activated pooled quarter;
- backward: the activation's gradient with the two batch means BatchNorm's backward needs; then every row's
  gradient, ``alpha + rows * beta`` per channel plus the pooled gradient at each window's maximum.

Values agree with the PyTorch formulation up to float rounding, closer to float64 than it in float32 (the
statistics are summed in float64), and ties go to the first maximum as there. Used for float32 and float64
tensors on the CPU when numba imports (``usable``); other devices and dtypes, and a Python without numba, keep
the PyTorch formulation. The loops compile on their first call in each process (about 2 s for float32); nothing
is read back from a disk cache, which numba would unpickle.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

# The fewest values an inner row should hold: narrower rows are tiled (t rows side by side) to fill vectors. The
# PyTorch formulation (``polyphase._affine``) tiles its rows the same way.
ROW_VALUES = 128


@lru_cache(maxsize=None)
def _numba():
    """The numba module, or None where it does not import."""
    try:
        import numba
    except ImportError:
        return None
    return numba


def usable(rows: torch.Tensor) -> bool:
    """Whether the compiled loops take ``rows``: a non-empty float32 or float64 CPU tensor, with numba installed."""
    return (rows.device.type == "cpu" and rows.dtype in (torch.float32, torch.float64) and rows.shape[0] > 0
            and _numba() is not None)


@lru_cache(maxsize=None)
def _loops():
    """The five loops, compiled lazily (per dtype, on first call) by numba.njit."""
    njit = _numba().njit(nogil=True)

    @njit
    def column_moments(rows, shift, s1, s2):
        """s1[j] += sum over m of (rows[m, j] - shift[j]), s2[j] the same of its square, in float64. rows (M, W)."""
        m_rows, width = rows.shape
        t1 = np.zeros(width)
        t2 = np.zeros(width)
        for m in range(m_rows):
            for j in range(width):
                x = rows[m, j] - shift[j]
                t1[j] += x
                t2[j] += x * x
        for j in range(width):
            s1[j] += t1[j]
            s2[j] += t2[j]

    @njit
    def window_max(windows, pooled, idx):
        """windows (R, 4*C), channel c's phases at c, C + c, 2C + c, 3C + c -> their first maximum pooled (R, C)
        and its phase idx (R, C)."""
        n_windows, width = windows.shape
        c_count = width // 4
        for r in range(n_windows):
            for c in range(c_count):
                best = windows[r, c]
                k = 0
                v = windows[r, c_count + c]
                if v > best or v != v:
                    best = v
                    k = 1
                v = windows[r, 2 * c_count + c]
                if v > best or v != v:
                    best = v
                    k = 2
                v = windows[r, 3 * c_count + c]
                if v > best or v != v:
                    best = v
                    k = 3
                pooled[r, c] = best
                idx[r, c] = k

    @njit
    def normalise_act(pooled, mean, rstd, slope, xhat, out):
        """xhat = (pooled - mean) * rstd and out = leaky_relu(xhat, slope), all (M, F); mean, rstd (F,)."""
        m_rows, width = pooled.shape
        for m in range(m_rows):
            for j in range(width):
                x = (pooled[m, j] - mean[j]) * rstd[j]
                xhat[m, j] = x
                out[m, j] = x if x > 0 else x * slope

    @njit
    def act_backward(grad, xhat, slope, rstd, scaled, a, b):
        """v = leaky_relu's backward of grad at xhat (M, F): scaled = v * rstd, a[j] += sum of v, b[j] += sum of
        v * xhat (float64)."""
        m_rows, width = grad.shape
        t1 = np.zeros(width)
        t2 = np.zeros(width)
        for m in range(m_rows):
            for j in range(width):
                x = xhat[m, j]
                v = grad[m, j] if x > 0 else grad[m, j] * slope
                scaled[m, j] = v * rstd[j]
                t1[j] += v
                t2[j] += np.float64(v) * x
        for j in range(width):
            a[j] += t1[j]
            b[j] += t2[j]

    @njit
    def rows_backward(rows, alpha, beta, idx, scaled, c_count, dz):
        """dz (M, G*4*C) = alpha + rows * beta (per column), plus scaled (M, G*C) at each window's maximum idx."""
        m_rows, width = rows.shape
        groups = width // (4 * c_count)
        for m in range(m_rows):
            for j in range(width):
                dz[m, j] = alpha[j] + rows[m, j] * beta[j]
            for g in range(groups):
                for c in range(c_count):
                    dz[m, g * 4 * c_count + idx[m, g * c_count + c] * c_count + c] += scaled[m, g * c_count + c]

    return column_moments, window_max, normalise_act, act_backward, rows_backward


def row_tiles(m: int, width: int) -> int:
    """How many rows of ``width`` values to lay side by side (a power of two dividing m) for rows of at least
    ``ROW_VALUES`` values, or as close as m allows."""
    t = 1
    while t * width < ROW_VALUES and m % (2 * t) == 0:
        t *= 2
    return t


def _laid(v: np.ndarray, shape, dtype) -> np.ndarray:
    """v broadcast to ``shape`` (its trailing axes) as a new C-contiguous array of ``dtype``, flattened."""
    out = np.empty(shape, dtype)
    out[...] = v
    return out.reshape(-1)


def forward(rows: torch.Tensor, groups: int, eps: float, slope: float):
    """rows (M, G*4*C), each row's group g a 2 x 2 window of C channels in phase order -> out (M, G*C), mean
    (G, C), var (G, C) and what ``backward`` needs besides rows: (idx (M, G*C) the maxima's phases, xhat (M, G*C),
    (mean, rstd) (G*C,) in float64). out = leaky_relu(BatchNorm(window max)), the statistics over the M positions
    and 4 phases (var biased, as BatchNorm normalises with)."""
    column_moments, window_max, normalise_act, _, _ = _loops()
    r = rows.detach().contiguous().numpy()
    m, width = r.shape
    c = width // (4 * groups)
    t = row_tiles(m, width)
    # sums of rows - shift, shift a value of each channel (the first row's phase 0), so that the variance (a
    # difference of two sums) does not cancel where the mean is far from zero compared with the spread
    shift = r[0].reshape(groups, 4, c)[:, :1].astype(np.float64)
    s1, s2 = np.zeros(t * width), np.zeros(t * width)
    column_moments(r.reshape(m // t, t * width), _laid(shift, (t, groups, 4, c), np.float64), s1, s2)
    count = 4.0 * m
    d = s1.reshape(t, groups, 4, c).sum(axis=(0, 2)).reshape(-1) / count
    var = np.maximum(s2.reshape(t, groups, 4, c).sum(axis=(0, 2)).reshape(-1) / count - d * d, 0.0)
    mean = shift.reshape(-1) + d
    rstd = 1.0 / np.sqrt(var + eps)

    pooled, idx = np.empty((m * groups, c), r.dtype), np.empty((m, groups * c), np.int8)
    window_max(r.reshape(m * groups, 4 * c), pooled, idx.reshape(m * groups, c))
    t = row_tiles(m, groups * c)
    tiled = (m // t, t * groups * c)
    xhat, out = np.empty(tiled, r.dtype), np.empty(tiled, r.dtype)
    normalise_act(pooled.reshape(tiled), _laid(mean, (t, groups * c), r.dtype), _laid(rstd, (t, groups * c), r.dtype),
                  r.dtype.type(slope), xhat, out)
    shape = (m, groups * c)
    return (torch.from_numpy(out.reshape(shape)), torch.from_numpy(mean.astype(r.dtype).reshape(groups, c)),
            torch.from_numpy(var.astype(r.dtype).reshape(groups, c)),
            (torch.from_numpy(idx), torch.from_numpy(xhat.reshape(shape)), (mean, rstd)))


def backward(grad: torch.Tensor, rows: torch.Tensor, idx: torch.Tensor, xhat: torch.Tensor, stats,
             groups: int, slope: float) -> torch.Tensor:
    """The gradient w.r.t. ``forward``'s rows (M, G*4*C) of ``grad`` (M, G*C, any layout) w.r.t. its out; idx,
    xhat and stats as ``forward`` returned them. BatchNorm's backward in training mode: dz = rstd * (G - mean(G)
    - xhat * mean(G * xhat)), G zero off the windows' maxima."""
    _, _, _, act_backward, rows_backward = _loops()
    mean, rstd = stats
    r = rows.detach().contiguous().numpy()
    m, width = r.shape
    c = width // (4 * groups)
    gc = groups * c
    t = row_tiles(m, gc)
    tiled = (m // t, t * gc)
    scaled = np.empty(tiled, r.dtype)
    a, b = np.zeros(t * gc), np.zeros(t * gc)
    act_backward(grad.detach().reshape(m, gc).contiguous().numpy().reshape(tiled), xhat.numpy().reshape(tiled),
                 r.dtype.type(slope), _laid(rstd, (t, gc), r.dtype), scaled, a, b)
    count = 4.0 * m
    beta = -rstd * rstd * (b.reshape(t, gc).sum(axis=0) / count)
    alpha = -rstd * (a.reshape(t, gc).sum(axis=0) / count) - beta * mean
    per_row = (groups, 4, c)
    dz = np.empty_like(r)
    rows_backward(r, _laid(alpha.reshape(groups, 1, c), per_row, r.dtype),
                  _laid(beta.reshape(groups, 1, c), per_row, r.dtype), idx.numpy(), scaled.reshape(m, gc), c, dz)
    return torch.from_numpy(dz)
