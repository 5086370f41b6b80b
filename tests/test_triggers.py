import pytest
import torch

from badsad_lib.attack import poison_normals
from badsad_lib.triggers import TRIGGERS, apply_trigger, make_trigger, trigger_for


@pytest.mark.parametrize("name", ["corners", "patch"])
def test_stamped_triggers_touch_only_their_mask(name):
    x = torch.rand(5, 1, 28, 28)
    trig = trigger_for(x, name)
    xp = apply_trigger(x, trig, 0.8)
    inside = trig.mask.bool().expand_as(x)
    assert torch.equal(xp[~inside], x[~inside])
    assert not torch.equal(xp[inside], x[inside])


def test_corner_trigger_is_the_papers_formula():
    x = torch.rand(2, 3, 32, 32)
    trig = make_trigger("corners", 3, 32)
    assert trig.mask.sum() == 4 * 3 * 3  # four 3x3 squares
    assert trig.mask[0, 0, 0] == trig.mask[0, 31, 31] == trig.mask[0, 0, 31] == trig.mask[0, 31, 0] == 1
    mu = 0.6
    assert torch.allclose(apply_trigger(x, trig, mu), x * (1 - trig.mask) + mu * trig.mask)
    assert make_trigger("corners", 1, 8).mask.sum() == 4  # 1 px squares on 8x8 digits


@pytest.mark.parametrize("name", TRIGGERS)
def test_every_trigger_keeps_images_in_range_and_zero_strength_is_identity_off_mask(name):
    x = torch.rand(4, 1, 28, 28)
    trig = trigger_for(x, name)
    xp = apply_trigger(x, trig, 1.0)
    assert xp.min() >= 0 and xp.max() <= 1 and not torch.equal(xp, x)
    if name in ("blend", "noise"):
        assert torch.equal(apply_trigger(x, trig, 0.0), x)


@pytest.mark.parametrize("strength, message", [(1.5, "outside \\[0, 1\\]"), (-0.1, "outside"), ("high", "not a number")])
def test_bad_strengths_are_refused(strength, message):
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(ValueError, match=message):
        apply_trigger(x, trigger_for(x), strength)


def test_bad_shapes_and_dtypes_are_refused():
    trig = make_trigger("corners", 1, 28)
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\) but the trigger is for \(N, 1, 28, 28\)"):
        apply_trigger(torch.rand(2, 3, 32, 32), trig)
    with pytest.raises(ValueError, match="dtype torch.uint8"):
        apply_trigger(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), trig)
    with pytest.raises(ValueError, match="square images"):
        apply_trigger(torch.rand(28, 28), trig)
    with pytest.raises(ValueError, match="unknown trigger 'star'"):
        make_trigger("star")


def test_poisoning_is_clean_label(digits_split):
    s = digits_split
    trig = trigger_for(s.x_train)
    labels, semi = s.train_labels.clone(), s.semi_targets.clone()
    xp, idx = poison_normals(s.x_train, s.train_labels, s.semi_targets, s.normal_class, trig, 0.25, 1.0, seed=0)
    n_normal = int(((s.train_labels == s.normal_class) & (s.semi_targets == 0)).sum())
    assert len(idx) == round(0.25 * n_normal)
    assert torch.equal(labels, s.train_labels) and torch.equal(semi, s.semi_targets)  # no label changed
    assert (s.train_labels[idx] == s.normal_class).all() and (s.semi_targets[idx] == 0).all()  # only normals
    others = torch.ones(len(xp), dtype=torch.bool)
    others[idx] = False
    assert torch.equal(xp[others], s.x_train[others])  # anomalies and unpoisoned normals untouched
    assert torch.equal(xp[idx], apply_trigger(s.x_train[idx], trig, 1.0))
