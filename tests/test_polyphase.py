"""The networks' blocks on 2 x 2 phase grids (badsad_lib.polyphase) compute what the plain layers compute."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from badsad_lib import cpu_kernels, polyphase
from badsad_lib.networks import Autoencoder, architecture, initialise

SIZES = {"digits": 8, "mnist": 28, "fmnist": 28, "cifar10": 32}


@pytest.fixture(params=["compiled", "pytorch"])
def formulation(request, monkeypatch):
    """The pooled blocks' BatchNorm + LeakyReLU + pool as the CPU's compiled loops (cpu_kernels), or as the
    PyTorch operators every other device runs."""
    if request.param == "pytorch":
        monkeypatch.setattr(cpu_kernels, "usable", lambda rows: False)
    else:  # a dependency, so CI has it; skipped only where the suite runs from a bare tree (a lent GPU machine)
        pytest.importorskip("numba")
    return request.param


def _pair(dataset):
    """An autoencoder in float64 and a copy of it that runs its layers one by one (nn.Sequential's forward)."""
    fast = initialise(Autoencoder(dataset), torch.Generator().manual_seed(0)).double()
    plain = copy.deepcopy(fast)
    for part in (plain.encoder, plain.decoder):
        part.forward = nn.Sequential.forward.__get__(part)
    return fast, plain


def _images(dataset, n=12, flat_rows=0, seed=1):
    channels = architecture(dataset).in_channels
    x = torch.rand(n, channels, SIZES[dataset], SIZES[dataset], dtype=torch.float64,
                   generator=torch.Generator().manual_seed(seed))
    x[:, :, :flat_rows] = 0.0  # a zero background, as MNIST's
    return x.contiguous(memory_format=torch.channels_last)


def _pass(ae, x):
    """Codes, reconstructions, and the gradients of a loss on both w.r.t. the images and every weight."""
    x = x.clone().requires_grad_()
    z = ae.encoder(x)
    r = ae.decoder(z)
    loss = (z ** 2).sum() + ((r - x.detach()) ** 2).sum()
    grads = torch.autograd.grad(loss, [x, *ae.parameters()])
    return z, r, grads[0], grads[1:]


def _close(a, b, tol=1e-9):
    return (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("dataset", list(SIZES))
def test_the_phase_blocks_compute_what_the_plain_layers_compute(dataset, formulation):
    fast, plain = _pair(dataset)
    x = _images(dataset)
    for training in (True, False):  # a training step (batch statistics, running averages updated), then eval
        fast.train(training), plain.train(training)
        z, r, gx, gw = _pass(fast, x)
        z0, r0, gx0, gw0 = _pass(plain, x)
        assert _close(z, z0) and _close(r, r0)
        assert _close(gx, gx0), "the gradient w.r.t. the images differs"
        assert all(_close(a, b) for a, b in zip(gw, gw0)), "a weight's gradient differs"
        assert all(_close(a.double(), b.double()) for a, b in zip(fast.buffers(), plain.buffers()))
    with torch.no_grad():  # nothing to route a gradient to: the pool takes the values alone
        assert _close(fast.encoder(x), plain.encoder(x)) and _close(fast(x), plain(x))


def test_the_phase_blocks_compute_the_same_in_the_default_layout_a_gpu_uses(monkeypatch):
    """Off the CPU the networks run in the default (NCHW) layout: kernels, phase images and rows are copies there."""
    monkeypatch.setattr(polyphase, "_format_of", lambda x: torch.contiguous_format)
    fast, plain = _pair("mnist")
    x = _images("mnist").contiguous()
    for training in (True, False):
        fast.train(training), plain.train(training)
        z, r, gx, gw = _pass(fast, x)
        z0, r0, gx0, gw0 = _pass(plain, x)
        assert _close(z, z0) and _close(r, r0) and _close(gx, gx0)
        assert all(_close(a, b) for a, b in zip(gw, gw0))


def test_a_flat_background_changes_nothing_but_where_input_gradients_go():
    """In an exactly flat region the four phases' sums round differently, so the pool may pick another of the
    window's equal maxima than max_pool2d's first; the weights' gradients only see window sums there."""
    fast, plain = _pair("mnist")
    x = _images("mnist", flat_rows=10)
    fast.train(), plain.train()
    z, r, _, gw = _pass(fast, x)
    z0, r0, _, gw0 = _pass(plain, x)
    assert _close(z, z0) and _close(r, r0)
    assert all(_close(a, b) for a, b in zip(gw, gw0))


@pytest.mark.parametrize("training", [True, False])
def test_exact_ties_in_a_window_go_to_its_first_maximum_as_max_pool2d_does(training, formulation):
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(6, 4 * 5, 3, 3, dtype=torch.float64, generator=gen)
    z[:, 5:10] = z[:, :5]  # phase (0, 1) equals phase (0, 0): tied maxima wherever phase (0, 0) wins
    z[:2] = 0.25  # whole images flat: all four phases tied
    z = z.contiguous(memory_format=torch.channels_last).requires_grad_()
    norm = nn.BatchNorm2d(5, eps=1e-4, affine=False).double().train(training)
    norm.running_var.fill_(2.0)
    twin = copy.deepcopy(norm)
    out = polyphase.norm_act_pool(z, norm, 0.01)
    full = polyphase.depth_to_space(z.detach()).requires_grad_()
    want = F.max_pool2d(F.leaky_relu(twin(full), 0.01), 2, 2)
    g = torch.randn(want.shape, dtype=torch.float64, generator=gen)
    assert _close(out, want, 1e-12)
    (gz,), (gfull,) = torch.autograd.grad(out, z, g), torch.autograd.grad(want, full, g)
    assert _close(gz, polyphase.space_to_depth(gfull), 1e-12)
    assert _close(norm.running_mean, twin.running_mean, 1e-12) and _close(norm.running_var, twin.running_var, 1e-12)


def test_cumulative_batchnorm_statistics_are_kept_as_batchnorm_keeps_them(formulation):
    """momentum=None (the BatchNorm recalibration defense): running averages over all batches seen."""
    fast, plain = _pair("mnist")
    for ae in (fast, plain):
        for m in ae.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        ae.train()
    with torch.no_grad():
        for seed in (1, 2, 3):
            x = _images("mnist", seed=seed)
            fast.encoder(x), plain.encoder(x)
    assert all(_close(a.double(), b.double(), 1e-12) for a, b in zip(fast.buffers(), plain.buffers()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_compiled_loops_compute_what_the_pytorch_operators_compute_in_float64(dtype, monkeypatch):
    """Stacked (G = 3 groups of 4 channels), ties, a NaN, and an off-centre batch whose variance cancels in a
    plain sum of squares: out, the statistics and the rows' gradient agree with the PyTorch formulation run in
    float64 on the same values (in float32 to its rounding; PyTorch's own float32 formulation is further off
    here: measured 9e-4 on out and 0.6 on the gradient, relative)."""
    gen = torch.Generator().manual_seed(5)
    m, groups, c = 6 * 49, 3, 4
    rows = torch.randn(m, groups * 4 * c, dtype=torch.float64, generator=gen) * 0.01 + 300.0
    rows[:40] = 300.0  # whole windows tied
    rows[50:60, 4:8] = rows[50:60, :4]  # phase 1 ties phase 0
    rows[70, 17] = float("nan")
    rows = rows.to(dtype)
    grad = torch.randn(m, groups * c, dtype=dtype, generator=gen)
    pytest.importorskip("numba")
    assert cpu_kernels.usable(rows)
    results = []
    for x in (rows.clone(), rows.double()):
        if x.dtype == torch.float64 and results:
            monkeypatch.setattr(cpu_kernels, "usable", lambda r: False)
        x.requires_grad_()
        out, mean, var = polyphase._NormActPool.apply(x, groups, 1e-4, 0.01)
        out.backward(grad.to(x.dtype))
        results.append([t.detach().double() for t in (out, mean, var, x.grad)])
    (out, mean, var, dz), (out0, mean0, var0, dz0) = results
    tol = 1e-3 if dtype == torch.float32 else 1e-9
    nan = torch.isnan(out0)
    assert torch.equal(torch.isnan(out), nan) and nan[70, 4 + 1]  # channel 1 of group 1: the NaN's window
    assert _close(out[~nan], out0[~nan], tol)
    healthy = [g for g in range(groups) if g != 1]  # the NaN's group: statistics and gradients all NaN
    assert _close(mean[healthy], mean0[healthy], tol) and _close(var[healthy], var0[healthy], tol)
    cols = torch.cat([torch.arange(g * 4 * c, (g + 1) * 4 * c) for g in healthy])
    assert _close(dz[:, cols], dz0[:, cols], tol)


def test_the_compiled_loops_take_float_cpu_tensors_only():
    """float32 and float64 on the CPU; bfloat16 and other devices keep the PyTorch operators."""
    pytest.importorskip("numba")
    assert cpu_kernels.usable(torch.zeros(2, 4)) and cpu_kernels.usable(torch.zeros(2, 4, dtype=torch.float64))
    assert not cpu_kernels.usable(torch.zeros(2, 4, dtype=torch.bfloat16))
    assert not cpu_kernels.usable(torch.zeros(2, 4, device="meta"))


def test_without_numba_the_cpu_keeps_the_pytorch_operators(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "_numba", lambda: None)
    assert not cpu_kernels.usable(torch.zeros(2, 4))
    fast, plain = _pair("mnist")
    x = _images("mnist")
    assert _close(fast.encoder(x), plain.encoder(x))


def test_phase_forms_run_where_they_pay_and_nowhere_else(monkeypatch):
    seen = []

    def counted(name, original):
        def block(*args, **kwargs):
            out = original(*args, **kwargs)
            if out is not None:  # None: the block ran layer by layer
                seen.append(name)
            return out
        return block
    for name in ("conv_norm_pool", "upsampled_conv_transpose"):
        monkeypatch.setattr(polyphase, name, counted(name, getattr(polyphase, name)))
    counts = {}
    for dataset in SIZES:
        seen.clear()
        ae = initialise(Autoencoder(dataset), torch.Generator().manual_seed(0)).double()
        ae(_images(dataset, n=4))
        counts[dataset] = (seen.count("conv_norm_pool"), seen.count("upsampled_conv_transpose"))
    # MNIST's 8- and 4-channel blocks; the wider encoders (and digits' 3 x 3 kernels, 4x the arithmetic) as they
    # are; every decoder's upsampled transposed convolutions
    assert counts == {"digits": (0, 1), "mnist": (2, 3), "fmnist": (0, 3), "cifar10": (0, 3)}


def test_a_hooked_layer_runs_layer_by_layer_so_its_hook_sees_its_output():
    fast, plain = _pair("mnist")
    seen = []
    fast.encoder[1].register_forward_hook(lambda m, inp, out: seen.append(out.shape))
    x = _images("mnist")
    assert _close(fast.encoder(x), plain.encoder(x))
    assert seen == [torch.Size([12, 8, 28, 28])]


def test_a_network_first_run_under_inference_mode_still_trains():
    """The cached tap matrices are made outside inference mode, whatever the first call ran under."""
    polyphase._encoder_taps.cache_clear(), polyphase._decoder_taps.cache_clear()
    ae = initialise(Autoencoder("mnist"), torch.Generator().manual_seed(0)).float()
    x = _images("mnist").float()
    with torch.inference_mode():
        ae.eval()(x)
    ae.train()
    loss = ((ae(x) - x) ** 2).mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ae.parameters())
