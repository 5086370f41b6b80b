"""K models trained at once (badsad_lib.stacked): a stack of one is the single fit bit for bit, a larger stack
trains models equivalent to their single fits, and a grid with --stack gives the cells and tables it gives without."""
import csv
import json

import pytest
import torch
from torch import nn

from badsad_lib.deepsad import DeepSAD, DeepSVDD
from badsad_lib.errors import CheckpointError
from badsad_lib.experiments import attack_training_set, make_detector, run, split_of, train_stacked
from badsad_lib.grid import make_specs, models_to_stack, run_grid
from badsad_lib.networks import Autoencoder, build_encoder, initialise
from badsad_lib.settings import DIGITS
from badsad_lib.spec import RunSpec
from badsad_lib.stacked import fit_stacked, stack_networks, unstack_into

SHORT = DIGITS.replace(epochs=40, ae_epochs=8, milestones=(30,), name="digits-short")


def _weights(model: DeepSAD) -> dict:
    return {k: v.clone() for k, v in model.net_.state_dict().items()}


def _same(a: DeepSAD, b: DeepSAD) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa) and torch.equal(a.c_, b.c_) \
        and a.history_ == b.history_ and a.ae_history_ == b.ae_history_ and a.threshold_ == b.threshold_


def test_a_stack_of_one_is_the_single_deepsad_fit_bit_for_bit(digits_split):
    s = digits_split
    single = DeepSAD("digits", SHORT, seed=3, progress=False).fit(s.x_train, s.semi_targets, X_val=s.x_val)
    [stacked] = fit_stacked([DeepSAD("digits", SHORT, seed=3, progress=False)], [s.x_train], [s.semi_targets],
                            X_vals=[s.x_val])
    assert _same(single, stacked) and stacked.stack_ == 1
    assert len(stacked.history_) == SHORT.epochs and stacked.history_[-1] < stacked.history_[0]


def test_a_stack_of_one_is_the_single_badsad_fit_bit_for_bit():
    spec = RunSpec("digits", 4, seed=1, method="badsad", settings=SHORT)
    split = split_of(spec)
    x, semi, objective, _, _ = attack_training_set(spec, split)
    single = make_detector(spec).fit(x, semi, X_val=split.x_val, objective=objective)
    x, semi, objective, _, _ = attack_training_set(spec, split)  # a fresh objective: its views' generator restarts
    [stacked] = fit_stacked([make_detector(spec)], [x], [semi], X_vals=[split.x_val], objectives=[objective])
    assert _same(single, stacked)


def test_a_stack_of_three_attacks_trains_what_three_single_fits_train():
    """Paired by seed: the stacked models' clean AUC and ASR@95 equal their single fits' within rounding's effect
    on training (here at most .02 AUC and .1 ASR), far inside the seed-to-seed spread of the single fits."""
    specs = [RunSpec("digits", 3, seed, method="badsad", settings=SHORT) for seed in range(3)]
    singles = [run(spec).cell for spec in specs]
    stacked = [run(spec, backdoored_model=m).cell for spec, m in zip(specs, train_stacked(specs))]
    for one, many in zip(singles, stacked):
        assert many.trainer == "stacked" and many.stack == 3 and one.trainer == "single" and one.stack == 1
        assert abs(one.auc_backdoored - many.auc_backdoored) < 0.02
        assert abs(one.asr["95"] - many.asr["95"]) < 0.1
        assert many.asr["95"] > 0.4 and many.asr["95"] > 3 * many.clean_model["asr"]["95"]  # a backdoor, each


def test_stacked_networks_hold_each_models_weights_and_give_each_models_outputs():
    nets = [initialise(Autoencoder("digits"), torch.Generator().manual_seed(k)).eval() for k in range(3)]
    stack = stack_networks(nets, "cpu").eval()
    x = torch.rand(3, 5, 1, 8, 8)
    with torch.no_grad():
        out = stack(x)
        for k, net in enumerate(nets):
            torch.testing.assert_close(out[k], net(x[k]), rtol=1e-5, atol=1e-6)
        for p in stack.parameters():
            p.add_(0.01)
    unstack_into(stack, nets)
    fresh = initialise(Autoencoder("digits"), torch.Generator().manual_seed(1))
    changed = [not torch.equal(a, b) for a, b in zip(nets[1].state_dict().values(), fresh.state_dict().values())
               if a.is_floating_point() and a.ndim > 1]
    assert changed and all(changed)


def test_a_stack_refuses_models_it_cannot_train_together(digits_split):
    s = digits_split
    with pytest.raises(ValueError, match="share dataset, settings"):
        fit_stacked([DeepSAD("digits", SHORT), DeepSAD("digits", SHORT, epochs=5)], [s.x_train] * 2)
    with pytest.raises(ValueError, match="as many images each; found sizes"):
        fit_stacked([DeepSAD("digits", SHORT), DeepSAD("digits", SHORT)], [s.x_train, s.x_train[:-3]])
    with pytest.raises(ValueError, match="2 models but 1 training sets"):
        fit_stacked([DeepSAD("digits", SHORT), DeepSAD("digits", SHORT)], [s.x_train])
    with pytest.raises(ValueError, match="one architecture"):
        stack_networks([build_encoder("digits"), build_encoder("mnist")], "cpu")
    with pytest.raises(ValueError, match="cannot hold a Dropout"):
        stack_networks([nn.Sequential(nn.Dropout())], "cpu")
    spec = RunSpec("digits", 0, method="badsad", settings=SHORT)
    split = split_of(spec)
    x, semi, _, trigger, poisoned = attack_training_set(spec, split)
    handwritten = attack_training_set(spec, split, combine=lambda *a: None)[2]
    with pytest.raises(ValueError, match="cannot be stacked"):
        fit_stacked([make_detector(spec)], [x], [semi], objectives=[handwritten])


def test_deepsvdd_stacks_on_its_unlabeled_images(digits_split):
    s = digits_split
    models = fit_stacked([DeepSVDD("digits", SHORT, seed=k, epochs=3, ae_epochs=1) for k in range(2)],
                         [s.x_train] * 2, [s.semi_targets] * 2)
    assert all(m.stack_ == 2 and len(m.history_) == 3 for m in models)
    assert not torch.equal(models[0].c_, models[1].c_)  # own seeds, own weights


def test_a_checkpoint_keeps_its_stack_and_refuses_a_wrong_one(digits_split, tmp_path):
    s = digits_split
    models = fit_stacked([DeepSAD("digits", SHORT, seed=k, epochs=2, ae_epochs=0) for k in range(2)],
                         [s.x_train] * 2, [s.semi_targets] * 2, X_vals=[s.x_val] * 2)
    models[0].save(tmp_path / "m.pt")
    assert DeepSAD.load(tmp_path / "m.pt").stack_ == 2
    state = models[0].state()
    for bad in (0, "2", True):
        with pytest.raises(CheckpointError, match="'stack'"):
            DeepSAD.from_state({**state, "stack": bad})
    del state["stack"]
    assert DeepSAD.from_state(state).stack_ == 1  # from before stacking: trained alone


def test_a_grid_with_stack_gives_the_cells_and_tables_of_a_grid_without(tmp_path):
    specs = make_specs(["digits"], [2], [0, 1], ["naive", "badsad"], settings=SHORT.replace(epochs=20))
    stacks = models_to_stack(specs, tmp_path / "stacked", 4)
    assert sorted(len(s) for s in stacks) == [2, 2, 2]  # clean, naive and badsad models: one stack each
    stacked = run_grid(specs, tmp_path / "stacked", progress=False, stack=4)
    alone = run_grid(specs, tmp_path / "alone", progress=False, stack=1)
    assert [r["key"] for r in stacked] == [r["key"] for r in alone] == [s.key for s in specs]
    assert {(r["trainer"], r["stack"], r["clean_model"]["stack"]) for r in stacked} == {("stacked", 2, 2)}
    assert {(r["trainer"], r["stack"]) for r in alone} == {("single", 1)}
    for a, b in zip(stacked, alone):
        assert abs(a["auc_backdoored"] - b["auc_backdoored"]) < 0.03 and abs(a["asr"]["95"] - b["asr"]["95"]) < 0.15
    with open(tmp_path / "stacked" / "results.csv") as f, open(tmp_path / "alone" / "results.csv") as g:
        assert csv.DictReader(f).fieldnames == csv.DictReader(g).fieldnames
    assert models_to_stack(specs, tmp_path / "stacked", 4) == []  # every model kept: a rerun trains nothing
    cell = json.loads(next((tmp_path / "stacked" / "cells").glob("*.json")).read_text())
    assert cell["trainer"] == "stacked"
    with pytest.raises(ValueError, match="stack must be a whole number"):
        run_grid(specs, tmp_path / "bad", progress=False, stack=0)
