"""The speed changes keep the maths: channels-last networks compute what the default layout computes,
checkpoints move between layouts, and the training loop reads the loss from the device once per epoch and
makes the host wait for the device nowhere else."""
import copy
import sys

import pytest
import torch

from badsad_lib.attack import AttackTerms, BadSADObjective, content_views
from badsad_lib.deepsad import DeepSAD
from badsad_lib.networks import Autoencoder, architecture, in_memory_format, memory_format_for, place
from badsad_lib.registry import dataset_names
from badsad_lib.settings import DIGITS
from badsad_lib.triggers import make_trigger

CPU = torch.device("cpu")


@pytest.mark.parametrize("dataset", dataset_names())
def test_channels_last_networks_compute_the_same_codes_and_gradients(dataset):
    a = architecture(dataset)
    torch.manual_seed(0)
    plain = Autoencoder(dataset)
    fast = place(copy.deepcopy(plain), CPU)
    assert memory_format_for(CPU) is torch.channels_last
    assert [(k, v.shape) for k, v in fast.state_dict().items()] == [(k, v.shape) for k, v in plain.state_dict().items()]
    x = torch.rand(6, a.in_channels, a.image_size, a.image_size)
    for train in (True, False):
        plain.train(train), fast.train(train)
        out_plain, out_fast = plain(x), fast(x)
        torch.testing.assert_close(out_fast, out_plain, atol=1e-5, rtol=1e-4)
        if train:
            out_plain.square().mean().backward()
            out_fast.square().mean().backward()
            for (name, p), q in zip(plain.named_parameters(), fast.parameters()):  # float32 sums over every
                # position (6 x 32 x 32 for CIFAR's first layer) differ in the last digits between layouts and threads
                torch.testing.assert_close(q.grad, p.grad, atol=5e-3 * float(p.grad.abs().max()), rtol=1e-3, msg=name)
    for (name, b), c in zip(plain.named_buffers(), fast.buffers()):  # BatchNorm statistics updated alike
        torch.testing.assert_close(c, b, atol=1e-5, rtol=1e-4, msg=name)


def test_a_default_layout_checkpoint_loads_into_a_channels_last_model(digits_model, digits_split):
    state = digits_model.state()
    state["net"] = {k: v.contiguous() for k, v in state["net"].items()}  # as saved by the code before
    loaded = DeepSAD.from_state(state, device="cpu")
    assert loaded.net_[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(torch.from_numpy(loaded.decision_function(digits_split.x_test)),
                               torch.from_numpy(digits_model.decision_function(digits_split.x_test)))


def test_one_channel_batches_get_channels_last_strides_without_changing_values():
    x = torch.rand(5, 1, 8, 8)
    y = in_memory_format(x, CPU)
    assert y.is_contiguous(memory_format=torch.channels_last) and y.stride()[1] == 1
    assert torch.equal(y, x) and y[torch.tensor([3, 1])].stride()[1] == 1


def test_the_step_loop_reads_the_loss_once_per_epoch(digits_split, monkeypatch):
    reads = []  # host reads made by the library's own code (the CPU Adam reads its step counter itself)
    def counting(read):
        def counted(self):
            if "badsad_lib" in sys._getframe(1).f_code.co_filename:
                reads.append(sys._getframe(1).f_code.co_name)
            return read(self)
        return counted
    for name in ("item", "tolist", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, counting(getattr(torch.Tensor, name)))
    s = digits_split
    model = DeepSAD("digits", DIGITS, epochs=4, ae_epochs=2, progress=False).fit(s.x_train, s.semi_targets)
    assert len(model.history_) == 4 and len(model.ae_history_) == 2
    reads = [r for r in reads if not r.startswith("check_")]  # input checks read their inputs once, before training
    assert reads == ["train_epochs"] * 6  # one host read per epoch, none per mini-batch (there are 4 per epoch here)


def test_no_operator_in_the_step_loops_waits_for_the_device(monkeypatch):
    """Every operator the DeepSAD and BadSAD step loops dispatch (pretraining included), seen from below
    autograd: none of those that make the host wait for a GPU (a tensor read as a Python number or truth
    value, nonzero, masked_select, boolean indexing) runs, so a CUDA step queues work and goes on."""
    from torch.utils._python_dispatch import TorchDispatchMode

    import badsad_lib.deepsad as deepsad
    from badsad_lib.experiments import run
    from badsad_lib.spec import RunSpec

    waits = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default",
             "aten.is_nonzero.default", "aten.equal.default"}
    seen, waited = [0], []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen[0] += 1
            boolean_index = str(func).startswith("aten.index") and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool
                for a in args if isinstance(a, (list, tuple)) for i in a)
            if str(func) in waits or boolean_index:
                waited.append(str(func))
            return func(*args, **(kwargs or {}))

    train_epochs = deepsad.train_epochs

    def watched(*args, **kwargs):
        with Watch():
            return train_epochs(*args, **kwargs)
    monkeypatch.setattr(deepsad, "train_epochs", watched)
    result = run(RunSpec("digits", 0, method="badsad", settings=DIGITS.replace(epochs=2, ae_epochs=1)))
    assert result.metrics["auc_clean_model"] > 0.5  # it trained: a clean and a backdoored model, 2 x 3 epochs
    assert seen[0] > 1000 and waited == []


def test_cpu_evaluation_batches_keep_activations_small_and_the_codes_unchanged(digits_model, digits_split, monkeypatch):
    """On the CPU a batch's widest activation stays within 16 MiB (the allocator reuses that memory instead of
    mapping fresh pages every batch); a GPU evaluates 4096 at once; and the batching does not change a code."""
    from badsad_lib import deepsad
    from badsad_lib.device import CPU_BATCH_BYTES, eval_batch_size

    for dataset in dataset_names():
        values = architecture(dataset).widest_activation
        size = eval_batch_size(CPU, values)
        assert size * values * 4 <= CPU_BATCH_BYTES or size == 64
        assert size == 4096 or 2 * size * values * 4 > CPU_BATCH_BYTES  # the largest power of two that fits
        assert eval_batch_size("cuda", values) == 4096
    assert [eval_batch_size(CPU, architecture(d).widest_activation) for d in ("mnist", "fmnist", "cifar10")] \
        == [512, 256, 128]
    x = digits_split.x_test
    whole = digits_model._codes(x)
    monkeypatch.setattr(deepsad, "eval_batch_size", lambda device, values: 7)
    assert torch.allclose(digits_model._codes(x), whole, atol=1e-5)


def test_the_views_are_drawn_on_the_device_of_the_images_they_are_made_from():
    pool = torch.rand(20, 1, 8, 8)
    objective = BadSADObjective("badsad", make_trigger("corners", 1, 8), 1.0, torch.zeros(30, dtype=torch.bool), pool)
    assert objective.generator.device == pool.device
    a = content_views(pool, torch.Generator().manual_seed(4))
    b = content_views(pool, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, content_views(pool, torch.Generator().manual_seed(5)))


def test_the_fixed_shape_terms_equal_the_indexed_ones():
    """masked_* choose rows by 0/1 weights; on pooled sets small enough for cdist's exact path they equal the
    indexed terms to rounding, with no rows, one row, duplicate codes and every row chosen among the cases."""
    from badsad_lib.attack import alignment, concentration, masked_alignment, masked_concentration

    g = torch.Generator().manual_seed(0)
    cases = 0
    for trial in range(150):
        n, m = (int(torch.randint(1, 13, (1,), generator=g)) for _ in range(2))
        a = torch.randn(n, 6, generator=g, dtype=torch.float64)
        b = torch.randn(m, 6, generator=g, dtype=torch.float64) + 0.5
        wa, wb = ((torch.rand(k, generator=g) < [0.5, 1.0, 0.0][trial % 3]).double() for k in (n, m))
        if trial % 5 == 0:
            a[1:] = a[0]  # duplicate codes: zero distances stay out of the bandwidth's median
        assert float(masked_alignment(a, wa, b, wb)) == pytest.approx(float(alignment(a[wa > 0], b[wb > 0])),
                                                                     abs=1e-12)
        c = torch.randn(6, generator=g, dtype=torch.float64)
        if wa.sum():
            assert float(masked_concentration(a, wa, c)) == pytest.approx(float(concentration(a[wa > 0], c)), abs=1e-12)
            cases += 1
        else:
            assert float(masked_concentration(a, wa, c)) == 0.0
    assert cases > 50


def test_the_badsad_batch_loss_has_no_data_dependent_shape():
    """vmap refuses boolean indexing and data-dependent branches, so the objective's loss running under it, over
    K models' codes at once, shows a step never waits on the device; each model's loss equals its own call."""
    g = torch.Generator().manual_seed(3)
    n, d = 16, 5
    poisoned = torch.rand(40, generator=g) < 0.3
    objective = BadSADObjective("badsad", make_trigger("corners", 1, 8), 1.0, poisoned, torch.rand(20, 1, 8, 8))
    x, idx = torch.rand(n, 1, 8, 8), torch.randperm(40, generator=g)[:n]
    y = torch.where(torch.rand(n, generator=g) < 0.2, -1, 0)
    z, c = torch.randn(4, 3 * n, d, generator=g), torch.randn(4, d, generator=g)
    together = torch.func.vmap(lambda zk, ck: objective.loss(zk, ck, x, y, idx))(z, c)
    alone = torch.stack([objective.loss(z[k], c[k], x, y, idx) for k in range(4)])
    assert torch.allclose(together, alone, rtol=1e-5) and torch.isfinite(together).all()
    learners = BadSADObjective("badsad", make_trigger("corners", 1, 8), 1.0, poisoned, torch.rand(20, 1, 8, 8),
                               terms=AttackTerms(concentration=lambda z, c: ((z - c) ** 2).sum(1).mean()))
    with pytest.raises(RuntimeError, match="data-dependent|dynamic shape"):  # a learner's term function gets the chosen rows
        torch.func.vmap(lambda zk, ck: learners.loss(zk, ck, x, y, idx))(z, c)
    assert float(learners.loss(z[0], c[0], x, y, idx)) == pytest.approx(float(alone[0]), rel=1e-4)
