"""K networks of one architecture as one: every layer of the K copies merged into one layer whose
kernels run all K at once (grouped convolutions, batched matrix products, BatchNorm over K x the
channels), so a GPU trains K models in the kernels of one.

Layouts: images go in as (K, B, C, H, W), model k's batch in row k; inside, 4-d activations are
(B, K * C, H, W) with model k's channels in block k, and 2-d ones (K, B, F). Every layer acts on each
model's block alone, with that model's weights and BatchNorm statistics, so the maths is that of K
separate networks. The layers run as a network's own do (``polyphase.run``: its conv blocks on phase
grids, with K groups). With K = 1 each stacked layer makes the very call the original layer makes (the
same operator, arguments and memory format), so a stack of one gives the original network's numbers
bit for bit; with K > 1 the same sums are split differently, so numbers agree up to float rounding.

``stack_networks(nets)`` builds the stacked network (its parameters are copies of the K networks'
weights) and ``unstack_into(stacked, nets)`` writes the trained weights and statistics back.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .networks import in_memory_format, memory_format_for
from .polyphase import run

_ELEMENTWISE = (nn.LeakyReLU, nn.MaxPool2d, nn.Upsample, nn.Sigmoid)


class _Conv(nn.Module):
    """K Conv2d (or ConvTranspose2d) layers as one grouped convolution on (B, K * C, H, W)."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        first = layers[0]
        self.transposed = isinstance(first, nn.ConvTranspose2d)
        self.k, self.padding, self.stride = len(layers), first.padding, first.stride
        self.weight = nn.Parameter(torch.cat([m.weight.detach() for m in layers]))
        self.bias = None if first.bias is None else nn.Parameter(torch.cat([m.bias.detach() for m in layers]))

    def forward(self, x):
        conv = F.conv_transpose2d if self.transposed else F.conv2d
        return conv(x, self.weight, self.bias, self.stride, self.padding, groups=self.k)

    def phase_spec(self):
        """What ``polyphase`` needs to run this layer's blocks on phases: (weight, bias, padding, groups, transposed)."""
        if tuple(self.stride) != (1, 1) or self.padding[0] != self.padding[1]:
            return None
        return self.weight, self.bias, self.padding[0], self.k, self.transposed

    def split(self):
        chunk = len(self.weight) // self.k
        return [{"weight": self.weight[i * chunk:(i + 1) * chunk],
                 **({} if self.bias is None else {"bias": self.bias[self.bias.numel() // self.k * i:
                                                                   self.bias.numel() // self.k * (i + 1)]})}
                for i in range(self.k)]


class _Linear(nn.Module):
    """K Linear layers on (K, B, F): one batched matrix product (K = 1: F.linear itself)."""

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.k = len(layers)
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in layers]))  # (K, out, in)
        self.bias = None if layers[0].bias is None else nn.Parameter(torch.stack([m.bias.detach() for m in layers]))

    def forward(self, x):
        if self.k == 1:
            return F.linear(x[0], self.weight[0], None if self.bias is None else self.bias[0]).unsqueeze(0)
        out = torch.bmm(x, self.weight.transpose(1, 2))
        return out if self.bias is None else out + self.bias.unsqueeze(1)

    def split(self):
        return [{"weight": self.weight[i], **({} if self.bias is None else {"bias": self.bias[i]})}
                for i in range(self.k)]


class _BatchNorm(nn.Module):
    """K BatchNorm layers as one over K x the channels; 2-d inputs (K, B, F) go through (B, K * F)."""

    def __init__(self, layers: list[nn.modules.batchnorm._BatchNorm]):
        super().__init__()
        first = layers[0]
        self.k = len(layers)
        self.norm = type(first)(first.num_features * self.k, eps=first.eps, momentum=first.momentum,
                                affine=first.affine)
        with torch.no_grad():
            for name in ("running_mean", "running_var"):
                getattr(self.norm, name).copy_(torch.cat([getattr(m, name) for m in layers]))
            self.norm.num_batches_tracked.copy_(first.num_batches_tracked)
            if first.affine:
                self.norm.weight.copy_(torch.cat([m.weight for m in layers]))
                self.norm.bias.copy_(torch.cat([m.bias for m in layers]))

    def forward(self, x):
        if x.ndim == 4:
            return self.norm(x)
        k, b, f = x.shape
        return self.norm(x.transpose(0, 1).reshape(b, k * f)).reshape(b, k, f).transpose(0, 1)

    def split(self):
        names = ["running_mean", "running_var"] + (["weight", "bias"] if self.norm.affine else [])
        size = self.norm.num_features // self.k
        return [{**{n: getattr(self.norm, n)[i * size:(i + 1) * size] for n in names},
                 "num_batches_tracked": self.norm.num_batches_tracked} for i in range(self.k)]


class _Flatten(nn.Module):
    """(B, K * C, H, W) -> (K, B, C * H * W), each model's features in the order nn.Flatten gives."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x):
        b = x.shape[0]
        return x.reshape(b, self.k, -1).transpose(0, 1)


class _Unflatten(nn.Module):
    """(K, B, C * h * w) -> (B, K * C, h, w), as nn.Unflatten(1, (C, h, w)) does for each model."""

    def __init__(self, layer: nn.Unflatten, k: int):
        super().__init__()
        self.k, self.shape = k, tuple(layer.unflattened_size)

    def forward(self, x):
        c, h, w = self.shape
        return x.transpose(0, 1).reshape(x.shape[1], self.k * c, h, w)


def _layers(net: nn.Module) -> list[nn.Module]:
    """The leaf layers of a DeepSAD network (an encoder, or an Autoencoder: encoder then decoder), in order."""
    if isinstance(net, nn.Sequential):
        return list(net)
    return list(net.encoder) + list(net.decoder)


class StackedNetwork(nn.Module):
    """K networks of one architecture (encoders or autoencoders) as one module.

    ``forward(x)``: x (K, B, C, H, W), model k's batch in row k -> (K, B, rep_dim) codes, or
    (K, B, C, H, W) reconstructions for autoencoders. ``device``: where its inputs go, in the memory
    format that device's networks use (``networks.in_memory_format``).
    """

    def __init__(self, nets: list[nn.Module], device):
        super().__init__()
        if not nets:
            raise ValueError("a stack needs at least one network")
        layers = [_layers(n) for n in nets]
        columns = list(zip(*layers))
        self.k, self.device = len(nets), torch.device(device)
        if len({len(ls) for ls in layers}) != 1 or any(
                len({(type(m), tuple(p.shape for p in m.parameters())) for m in col}) != 1 for col in columns):
            raise ValueError("the networks of a stack must have one architecture (same layers and weight shapes)")
        self.layers = nn.ModuleList(self._stacked(col) for col in columns)

    def _stacked(self, col):
        first = col[0]
        if isinstance(first, (nn.Conv2d, nn.ConvTranspose2d)):
            return _Conv(list(col))
        if isinstance(first, nn.Linear):
            return _Linear(list(col))
        if isinstance(first, nn.modules.batchnorm._BatchNorm):
            return _BatchNorm(list(col))
        if isinstance(first, nn.Flatten):
            return _Flatten(self.k)
        if isinstance(first, nn.Unflatten):
            return _Unflatten(first, self.k)
        if isinstance(first, _ELEMENTWISE):
            return first
        raise ValueError(f"a stacked network cannot hold a {type(first).__name__} layer")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, b, c, h, w = x.shape
        if k != self.k:
            raise ValueError(f"a stack of {self.k} networks takes (K={self.k}, B, C, H, W) images, got {tuple(x.shape)}")
        out = run(list(self.layers), in_memory_format(x.transpose(0, 1).reshape(b, k * c, h, w), self.device))
        if out.ndim == 4:  # reconstructions (B, K * C, H, W) -> (K, B, C, H, W)
            return out.reshape(b, k, c, out.shape[2], out.shape[3]).transpose(0, 1)
        return out


def stack_networks(nets: list[nn.Module], device) -> StackedNetwork:
    """One module holding copies of the K networks' weights and BatchNorm statistics (see the module doc), on
    ``device`` in the memory format its networks use there (``networks.memory_format_for``)."""
    return StackedNetwork(list(nets), device).to(device=device, memory_format=memory_format_for(device))


@torch.no_grad()
def unstack_into(stacked: StackedNetwork, nets: list[nn.Module]) -> None:
    """Copy the stack's weights and BatchNorm statistics back into its K networks (in place)."""
    for layer, col in zip(stacked.layers, zip(*[_layers(n) for n in nets])):
        if not hasattr(layer, "split"):
            continue
        for part, module in zip(layer.split(), col):
            state = module.state_dict()
            for name, value in part.items():
                state[name].copy_(value.reshape(state[name].shape))


def fit_stacked(models: list, Xs: list, ys: list | None = None, *, X_vals: list | None = None,
                objectives: list | None = None) -> list:
    """Fit K unfitted DeepSAD (or DeepSVDD) models at once: what ``model.fit(X, y, X_val=..., objective=...)``
    does for each, with both phases' forward and backward passes stacked (``StackedNetwork``).

    The models must share dataset, settings, ``bias`` and device, and train on as many images each
    (``len(X)`` after a DeepSVDD drops labeled ones). Each keeps its own streams: its seed draws its
    weights and batch order, and its objective (``attack.BadSADObjective``, or None for DeepSAD's loss)
    draws its own views, so model k starts, batches and sees views as its own ``fit`` would. K = 1
    reproduces ``fit`` bit for bit; with K > 1 the kernels sum in another order, so the models agree with
    their single fits up to float rounding (and what that rounding does to training). Returns the models,
    fitted, each with ``stack_`` = K and ``fit_seconds_`` = the stack's time / K.
    """
    import time

    from .deepsad import deepsad_loss, train_epochs
    from .networks import Autoencoder, build_encoder, initialise, place

    models = list(models)
    k = len(models)
    if k == 0:
        raise ValueError("fit_stacked needs at least one model")
    ys = [None] * k if ys is None else list(ys)
    X_vals = [None] * k if X_vals is None else list(X_vals)
    objectives = [None] * k if objectives is None else list(objectives)
    if not len(Xs) == len(ys) == len(X_vals) == len(objectives) == k:
        raise ValueError(f"fit_stacked got {k} models but {len(Xs)} training sets, {len(ys)} target vectors, "
                         f"{len(X_vals)} validation sets and {len(objectives)} objectives: one of each per model")
    first = models[0]
    for m in models[1:]:
        if (m.dataset, m.settings, m.bias, m.device) != (first.dataset, first.settings, first.bias, first.device):
            raise ValueError("the models of a stack must share dataset, settings, bias and device; found "
                             f"{m.dataset}/{m.settings.name}/bias={m.bias}/{m.device} beside "
                             f"{first.dataset}/{first.settings.name}/bias={first.bias}/{first.device}")
    for o in objectives:
        if o is not None and not getattr(o, "stackable", False):
            raise ValueError(f"objective {o!r} cannot be stacked: it must split into images(x) and "
                             f"loss(z, c, x, y, idx) (a BadSADObjective without a hand-written combine)")
    start = time.perf_counter()
    data = [m._fit_inputs(X, y, Xv) for m, X, y, Xv in zip(models, Xs, ys, X_vals)]
    sizes = sorted({len(X) for X, _, _ in data})
    if len(sizes) != 1:
        raise ValueError(f"the models of a stack must train on as many images each; found sizes "
                         f"{', '.join(map(str, sizes))}")
    n, s, device = sizes[0], first.settings, first.device
    streams = [m._generators() for m in models]
    for m, (init, _) in zip(models, streams):
        m.net_ = place(initialise(build_encoder(m.dataset, m.bias), init), device)
        m.ae_history_ = []
    gens = [gen for _, gen in streams]
    if s.ae_epochs > 0:
        aes = [place(initialise(Autoencoder(m.dataset, m.bias), init), device) for m, (init, _) in zip(models, streams)]
        stack = stack_networks(aes, device)

        def reconstruction(idxs):
            xb = [X[i] for (X, _, _), i in zip(data, idxs)]
            out = stack(torch.stack(xb))
            return torch.stack([((out[j] - xb[j]) ** 2).mean() for j in range(k)])
        histories = train_epochs(stack, device, n, s.batch_size, s.ae_epochs, s.ae_lr, s.ae_weight_decay,
                                 s.ae_milestones, f"autoencoder x{k}", gens, reconstruction, first.progress)
        unstack_into(stack, aes)
        for m, ae, history in zip(models, aes, histories):
            m.ae_history_ = history
            m.net_.load_state_dict(ae.encoder.state_dict())
    for m, (X, _, _) in zip(models, data):
        m._set_center(X)
    stack = stack_networks([m.net_ for m in models], device)

    def deepsad(idxs):
        xb = [X[i] for (X, _, _), i in zip(data, idxs)]
        z = stack(torch.stack([x if o is None else o.images(x) for x, o in zip(xb, objectives)]))
        return torch.stack([
            deepsad_loss(((z[j] - m.c_) ** 2).sum(dim=1), y[i], s.eta) if o is None else o.loss(z[j], m.c_, x, y[i], i)
            for j, (m, (_, y, _), x, i, o) in enumerate(zip(models, data, xb, idxs, objectives))])
    histories = train_epochs(stack, device, n, s.batch_size, s.epochs, s.lr, s.weight_decay, s.milestones,
                             f"DeepSAD x{k}", gens, deepsad, first.progress)
    unstack_into(stack, [m.net_ for m in models])
    seconds = (time.perf_counter() - start) / k
    for m, (X, y, X_val), history in zip(models, data, histories):
        m.net_.eval()
        m.history_ = history
        m.set_threshold(X_val if X_val is not None else X[y >= 0])
        m.fit_seconds_, m.stack_ = seconds, k
    return models
