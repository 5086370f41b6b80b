"""The exercise checkers: accept right answers (any standard convention), name what is wrong in a wrong one,
never raise, and hand the lesson the learner's function or the library's."""
import json
import re

import numpy as np
import pytest
import torch

from badsad_lib import checks
from badsad_lib.deepsad import center_from, deepsad_loss
from badsad_lib.defenses import preprocess_images, reverse_engineer, spectral_scores
from badsad_lib.metrics import defense_effectiveness_rate

RIGHT = {
    "check_deepsad_loss": deepsad_loss,
    "check_center": center_from,
    "check_threshold": np.percentile,
    "check_stamp": lambda x, m, mu: x * (1 - m) + mu * m,
    "check_poison_choice": lambda labels, semi, k, r, seed=0: (lambda normals: np.random.default_rng(seed).choice(
        normals, size=round(r * len(normals)), replace=False))(np.flatnonzero(((labels == k) & (semi == 0)).numpy())),
    "check_asr": lambda s, t: float(np.mean(s <= t)),
    "check_concentration": lambda z, c: ((z - c) ** 2).sum(1).mean(),
    "check_separation": lambda z, c, eta: eta * (1 / (((z - c) ** 2).sum(1) + 1e-6)).mean(),
    "check_mmd": lambda a, b, s: (lambda k: k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean())(
        lambda u, v: torch.exp(-torch.cdist(u, v) ** 2 / s)),
    "check_spectral": spectral_scores,
    "check_der": defense_effectiveness_rate,
    "check_erase": lambda x, k: preprocess_images(x, "erase_corners", k),
    "check_search": reverse_engineer,
}


@pytest.mark.parametrize("name", sorted(RIGHT))
def test_a_right_answer_is_accepted_and_used(name, capsys):
    fn = RIGHT[name]
    assert getattr(checks, name)(fn) is fn
    assert capsys.readouterr().out.startswith("Correct")


@pytest.mark.parametrize("name", sorted(RIGHT))
def test_an_unsolved_exercise_says_so_and_the_lesson_goes_on(name, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError("Exercise: ...")
    fallback = getattr(checks, name)(stub)
    assert fallback is not stub and callable(fallback)
    assert capsys.readouterr().out.startswith("Not done yet")
    assert getattr(checks, name.replace("check_", "verify_"))(fallback)  # the library's version passes


@pytest.mark.parametrize("method", ["linear", "lower", "higher", "nearest", "midpoint", "inverted_cdf"])
def test_every_standard_quantile_convention_is_accepted(method):
    checks.verify_threshold(lambda s, q: np.percentile(s, q, method=method))


@pytest.mark.parametrize("verify, wrong, message", [
    (checks.verify_deepsad_loss, lambda d, y, eta: d.mean(), "inverse distance"),
    (checks.verify_deepsad_loss, lambda d, y, eta: torch.where(y == 0, d, (d + 1e-6) ** y.float()).mean(),
     "eta multiplies"),
    (checks.verify_deepsad_loss,  # eta forgotten on labeled normals only
     lambda d, y, eta: torch.where(y == 0, d, torch.where(y == 1, d + 1e-6, eta / (d + 1e-6))).mean(),
     "eta multiplies"),
    (checks.verify_center, lambda codes, eps: codes.mean(0), "plain mean"),
    (checks.verify_center, lambda codes, eps: codes.mean(1), "shape \\(4,\\)"),
    (checks.verify_center, lambda codes, eps: codes, "shape \\(4,\\)"),
    (checks.verify_threshold, lambda s, q: np.percentile(s, 100 - q), "between"),
    (checks.verify_stamp, lambda x, m, mu: torch.full_like(x, mu), "outside the mask"),
    (checks.verify_asr, lambda s, t: float(np.mean(s < t)), "equal to tau counts as normal"),
    (checks.verify_poison_choice, lambda labels, semi, k, r, seed: np.arange(50, 60), "anomalies"),
    (checks.verify_poison_choice, lambda labels, semi, k, r, seed=0: np.random.default_rng(seed).choice(  # repeats
        np.flatnonzero(((labels == k) & (semi == 0)).numpy()), size=round(r * int(((labels == k) & (semi == 0)).sum())),
        replace=True), "chosen twice"),
    (checks.verify_poison_choice, lambda labels, semi, k, r, seed=0: np.random.default_rng(seed).choice(  # class 0 only
        np.flatnonzero(((labels == 0) & (semi == 0)).numpy()), size=round(r * int(((labels == 0) & (semi == 0)).sum())),
        replace=False), "normal class 3"),
    (checks.verify_poison_choice, lambda labels, semi, k, r, seed=0: np.flatnonzero(  # the first ones, not random
        ((labels == k) & (semi == 0)).numpy())[:round(r * int(((labels == k) & (semi == 0)).sum()))], "at random"),
    (checks.verify_poison_choice, lambda labels, semi, k, r, seed=0: np.random.default_rng(0).choice(  # seed ignored
        np.flatnonzero(((labels == k) & (semi == 0)).numpy()), size=round(r * int(((labels == k) & (semi == 0)).sum())),
        replace=False), "use the seed"),
    (checks.verify_concentration, lambda z, c: ((z - c) ** 2).mean(), "average over the coordinates"),
    (checks.verify_separation, lambda z, c, eta: (1 / (((z - c) ** 2).sum(1) + 1e-6)).mean(), "multiply by eta"),
    (checks.verify_mmd, lambda a, b, s: (lambda k: k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean())(
        lambda u, v: torch.exp(-torch.cdist(u, v) ** 2 / (2 * s))), "no factor 2"),
    (checks.verify_der, lambda ab, aa, ub, ua: (ab - aa - (ub - ua) + 1) / 2, "clip each drop at 0"),
    (checks.verify_spectral, lambda c: (c @ np.linalg.svd(c, full_matrices=False)[2][0]) ** 2, "centre the codes"),
    (checks.verify_spectral, lambda c: (c - c.mean(0)) @ np.linalg.svd(c - c.mean(0), full_matrices=False)[2][0],
     "spectral scores of 40 codes"),  # not squared
    (checks.verify_center, lambda codes, eps: (lambda c: torch.where(c.abs() < eps, torch.full_like(c, eps), c))(
        codes.mean(0)), "keep the sign"),
    (checks.verify_center, lambda codes, eps: (lambda c: torch.where((c.abs() < eps) & (c != 0), torch.sign(c) * eps,
                                                                     c))(codes.mean(0)), "exactly 0"),
    (checks.verify_threshold, lambda s, q: np.percentile(s, q / 100), "between"),  # q read on the 0-1 scale
    (checks.verify_stamp, lambda x, m, mu: x * (1 - m) + m, "should all equal mu"),  # mu ignored
    (checks.verify_stamp, lambda x, m, mu: (x * (1 - m) + mu * m)[0], "expected shape"),
    (checks.verify_asr, lambda s, t: float(np.mean(s > t)), "expected ASR"),  # the caught share
    (checks.verify_concentration, lambda z, c: ((z - c) ** 2).sum(), "sum over the images"),
    (checks.verify_concentration, lambda z, c: (z - c).abs().sum(1).mean(), "concentration term of 16 codes"),
    (checks.verify_separation, lambda z, c, eta: -eta * (1 / (((z - c) ** 2).sum(1) + 1e-6)).mean(), "negative"),
    (checks.verify_separation, lambda z, c, eta: eta * ((z - c) ** 2).sum(1).mean(), "inverse distance"),
    (checks.verify_mmd, lambda a, b, s: (lambda k: k(a, a).mean() + k(b, b).mean() - k(a, b).mean())(
        lambda u, v: torch.exp(-torch.cdist(u, v) ** 2 / s)), "with itself must be 0"),  # cross term once
    (checks.verify_mmd, lambda a, b, s: (lambda k: k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean())(
        lambda u, v: torch.exp(-torch.cdist(u, v) / s)), "two standard normal samples"),  # distance not squared
    (checks.verify_der, lambda ab, aa, ub, ua: (max(0.0, ab - aa) - (ub - ua) + 1) / 2, "clip each drop at 0"),
    (checks.verify_der, lambda ab, aa, ub, ua: max(0.0, ab - aa) - max(0.0, ub - ua), "expected DER"),  # not rescaled
    (checks.verify_erase, lambda x, k: (lambda out: (out.__setitem__((..., slice(0, k), slice(0, k)), 0), out)[1])(
        x.clone()), "some corner pixel is not 0"),  # the top-left corner only
    (checks.verify_erase, lambda x, k: (lambda out: (out.__setitem__((..., slice(0, k)), 0),
                                                     out.__setitem__((..., slice(-k, None)), 0), out)[2])(x.clone()),
     "outside the four corners"),  # whole bands of rows
])
def test_wrong_answers_get_specific_feedback(verify, wrong, message):
    with pytest.raises(AssertionError, match=message):
        verify(wrong)


def test_erasing_in_place_is_caught():
    def in_place(x, k):
        x[..., :k, :k] = 0
        x[..., :k, -k:] = 0
        x[..., -k:, :k] = 0
        x[..., -k:, -k:] = 0
        return x
    with pytest.raises(AssertionError, match="in place"):
        checks.verify_erase(in_place)


def test_a_wrong_answer_prints_feedback_without_the_reference_and_falls_back(capsys):
    wrong = lambda s, t: float(np.mean(s < t))  # noqa: E731
    used = checks.check_asr(wrong)
    out = capsys.readouterr().out
    assert used is not wrong and "Not quite" in out and "library's version" in out
    assert "np.mean" not in out and "<=" not in out  # feedback, not the answer
    broken = checks.check_center(lambda codes, eps: codes.nonexistent)
    assert broken is center_from and "AttributeError" in capsys.readouterr().out


# ---------------------------------------------------------------- lesson 03's mini-batch objective
def _batch_loss(order=("x", "views", "triggered"), pulled_of=None, align_to=None, sep_on=None, weighted=True,
                draws=1, passes=1):
    """A hand-written BadSAD mini-batch objective, right by default, with one mistake when asked."""
    from badsad_lib.deepsad import deepsad_loss

    def fn(net, c, x, y, poisoned, draw_views, stamp, terms, weights, eta):
        n = len(x)
        views = draw_views(n)
        for _ in range(draws - 1):
            draw_views(n)
        parts = {"x": x, "views": views, "triggered": stamp(views)}
        if passes == 1:
            z = net(torch.cat([parts[k] for k in order]))
            codes = {k: z[i * n:(i + 1) * n] for i, k in enumerate(order)}
        else:
            codes = {k: net(v) for k, v in parts.items()}
        zx, zv, zt = codes["x"], codes["views"], codes["triggered"]
        pulled = torch.cat([zt, zx[poisoned]]) if pulled_of is None else pulled_of(zx, zt, poisoned)
        reference = zx[~poisoned & (y == 0)] if align_to is None else align_to(zx, y, poisoned)
        w = weights if weighted else checks_weights_one
        return (deepsad_loss(((zx - c) ** 2).sum(dim=1), y, eta) + w.concentration * terms.concentration(pulled, c)
                + w.separation * terms.separation(zv if sep_on is None else sep_on(zv, zt), c, eta)
                + w.alignment * terms.alignment(pulled, reference))
    return fn


class checks_weights_one:  # noqa: N801  (a stand-in for AttackWeights() that the wrong answer uses)
    concentration = separation = alignment = 1.0


@pytest.mark.parametrize("fn", [_batch_loss(), _batch_loss(order=("triggered", "x", "views")),
                                _batch_loss(pulled_of=lambda zx, zt, p: torch.cat([zx[p], zt]))],
                         ids=["library order", "another concatenation order", "pulled codes in another order"])
def test_the_batch_objective_check_accepts_right_answers(fn):
    checks.verify_batch_loss(fn)


@pytest.mark.parametrize("fn, message", [
    (_batch_loss(passes=3), "run the network ONCE"),
    (_batch_loss(pulled_of=lambda zx, zt, p: zt), "AND the batch's poisoned images"),
    (_batch_loss(pulled_of=lambda zx, zt, p: torch.cat([zt, zx])), "AND the batch's poisoned images"),
    (_batch_loss(align_to=lambda zx, y, p: zx), "unlabeled \\(y == 0\\) and not poisoned"),
    (_batch_loss(align_to=lambda zx, y, p: zx[y == 0]), "unlabeled \\(y == 0\\) and not poisoned"),
    (_batch_loss(sep_on=lambda zv, zt: zt), "views WITHOUT the trigger"),
    (_batch_loss(weighted=False), "its own weight"),
    (_batch_loss(draws=2), "once per batch"),
], ids=["three forward passes", "poisoned images not pulled", "every image pulled", "aligned with every image",
        "aligned with poisoned images too", "separation on triggered views", "weights ignored", "views drawn twice"])
def test_the_batch_objective_check_catches_real_mistakes(fn, message):
    with pytest.raises(AssertionError, match=message):
        checks.verify_batch_loss(fn)


def test_a_right_batch_objective_trains_the_librarys_backdoor(digits_split):
    from badsad_lib.experiments import train_attacked
    from badsad_lib.settings import DIGITS
    from badsad_lib.spec import RunSpec

    spec = RunSpec("digits", 0, 0, "badsad", settings=DIGITS.replace(epochs=8, ae_epochs=2))
    library = train_attacked(spec, digits_split)[0]
    yours = train_attacked(spec, digits_split, combine=_batch_loss())[0]
    # the same loss, batch for batch, epoch for epoch, to rounding: the library's terms choose rows by weights,
    # the hand-written objective indexes them (attack.masked_alignment)
    assert yours.history_ == pytest.approx(library.history_, rel=1e-4)
    assert checks.check_batch_loss(_batch_loss(sep_on=lambda zv, zt: zt)) is None  # wrong: the library's objective


def test_progress_sums_up_the_verdicts_this_kernel_recorded(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(checks, "_verdicts", {})
    monkeypatch.setenv("BADSAD_PROGRESS", str(tmp_path / "progress.json"))

    def not_started(dist, y, eta=1.0):
        raise NotImplementedError("Exercise: the loss")
    checks.check_deepsad_loss(not_started)
    checks.check_center(lambda codes, eps=0.1: codes.mean(0))        # a real mistake: the plain mean
    checks.check_threshold(lambda scores, q: float(np.percentile(scores, q)))
    summary = checks.progress("01")
    out = capsys.readouterr().out
    assert summary["done"] == 1 and summary["exercises"] == 4
    assert summary["verdicts"] == {"exercise 1, the DeepSAD loss": "not started",
                                   "exercise 2, the center rule": "not quite",
                                   "exercise 3, one training epoch": "not run yet",
                                   "exercise 4, the percentile threshold": "done"}
    assert "Lesson 01: 1 of 4 exercises done." in out and "not quite: exercise 2, the center rule" in out
    assert json.loads((tmp_path / "progress.json").read_text()) == summary
    checks.check_center(lambda codes, eps=0.1: 1 / 0)                 # a function that raises
    assert checks.progress("01")["verdicts"]["exercise 2, the center rule"] == "raised an error"
    assert set(checks.progress("03")["verdicts"].values()) == {"not run yet"}
    with pytest.raises(ValueError, match="unknown lesson '05'"):
        checks.progress("05")


def test_every_check_names_an_exercise_of_its_lesson():
    import inspect
    import re

    named = set(re.findall(r'_grade\("([^"]+)"', inspect.getsource(checks)))
    assert named == {e for exercises in checks.EXERCISES.values() for e in exercises}


def test_the_nbgrader_export_marks_every_answer_and_grades_it_by_the_checks_verdict(tmp_path):
    """Each exercise: one answer cell with nbgrader's delimiters around the solution, one locked 1-point test cell
    that passes exactly when the check's verdict is "done"; every other cell locked."""
    import nbformat

    from badsad_lib import checks
    from badsad_lib.grading import NBGRADER_BEGIN, NBGRADER_END, export_nbgrader

    written = export_nbgrader(tmp_path)
    assert [p.relative_to(tmp_path).parts[:2] for p in written] == [("source", f"lesson{n}") for n in checks.EXERCISES]
    from traitlets.config import Config  # what nbgrader's loader hands the file as c

    config = Config()
    exec((tmp_path / "nbgrader_config.py").read_text(), {"get_config": lambda: config})
    assert config.ExecutePreprocessor.timeout >= 600  # nbgrader's 30 s default kills the training cells
    for path in written:
        lesson = path.parent.name[-2:]
        nb = nbformat.read(path, as_version=4)
        meta = [c.metadata["nbgrader"] for c in nb.cells]
        answers = [c for c, m in zip(nb.cells, meta) if m["solution"]]
        tests = [c for c, m in zip(nb.cells, meta) if m["grade"]]
        assert len(answers) == len(tests) == len(checks.EXERCISES[lesson])
        assert all(m["locked"] for m in meta if not m["solution"]) and sum(m.get("points", 0) for m in meta) == len(tests)
        assert len({m["grade_id"] for m in meta}) == len(meta)
        for cell in answers:
            lines = [line.strip() for line in cell.source.splitlines()]
            assert lines.count(NBGRADER_BEGIN) == lines.count(NBGRADER_END) == 1
            assert not any(line.startswith(("# BEGIN SOLUTION", "# END SOLUTION")) for line in lines)
        for exercise, cell in zip(checks.EXERCISES[lesson], tests):
            for said, passes in (("done", True), ("not quite", False), ("not started", False)):
                checks._verdicts[exercise] = said
                if passes:
                    exec(cell.source, {})
                else:
                    with pytest.raises(AssertionError, match=said):
                        exec(cell.source, {})
            checks._verdicts.pop(exercise)


def test_every_exercise_has_tiered_hints_that_never_state_the_answer(capsys):
    """A nudge first, a more specific hint on each request, the last one repeated; no hint holds a line of the
    reference answer (every solution line between the markers, whitespace removed)."""
    import re

    import nbformat

    from badsad_lib.grading import SOLUTIONS

    assert sum(len(v) for v in checks.EXERCISES.values()) == len(checks.HINTS)
    answers = []
    for path in sorted(SOLUTIONS.glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            inside = re.findall(r"# BEGIN SOLUTION[^\n]*\n(.*?)# END SOLUTION", cell.source, re.S)
            answers += [re.sub(r"\s+", "", line) for block in inside for line in block.splitlines() if line.strip()]
    assert len(answers) >= 12
    for name, tiers in checks.HINTS.items():
        assert len(tiers) >= 2
        for tier in tiers:
            squeezed = re.sub(r"\s+", "", tier)
            assert not any(len(a) > 12 and a in squeezed for a in answers), (name, tier)
        checks._hints_given.pop(name, None)
        for level in range(1, len(tiers) + 2):
            checks.hint(name)
            out = capsys.readouterr().out
            assert f"Hint {min(level, len(tiers))} of {len(tiers)}" in out
            assert ("last hint" in out) == (level >= len(tiers))
        checks._hints_given.pop(name, None)
    with pytest.raises(ValueError, match="no hints for 'nope'"):
        checks.hint("nope")


def _epoch(clear="before", distance="sum", step=True, backward=True, use_loss_fn=True, detach=False):
    """A learner's one-epoch loop, right or with one realistic mistake."""
    def epoch(net, c, batches, optimizer, loss_fn):
        net.train()
        total, seen = 0.0, 0
        for x, y in batches:
            if clear == "before":
                optimizer.zero_grad()
            z = net(x).detach() if detach else net(x)
            dist = (z - c).pow(2).sum(dim=1) if distance == "sum" else (z - c).pow(2).mean(dim=1)
            loss = loss_fn(dist, y) if use_loss_fn else deepsad_loss(dist, y)
            if backward:
                loss.backward()
            if step:
                optimizer.step()
            if clear == "after":
                optimizer.zero_grad(set_to_none=False)
            total, seen = total + loss.item() * len(x), seen + len(x)
        return total / seen
    return epoch


@pytest.mark.parametrize("wrong, says", [
    (dict(clear="never"), "not cleared"),
    (dict(distance="mean"), "average the coordinates"),
    (dict(step=False), "did not change"),
    (dict(backward=False), "did not change"),
    (dict(use_loss_fn=False), "use the loss_fn you are given"),
])
def test_the_epoch_check_catches_each_realistic_mistake(wrong, says, capsys):
    checks.check_train_epoch(_epoch(**wrong))
    assert checks.verdict("exercise 3, one training epoch") == "not quite" and says in capsys.readouterr().out


def test_the_epoch_check_accepts_every_correct_convention_and_reports_a_crash(capsys):
    for right in (dict(), dict(clear="after")):
        fn = _epoch(**right)
        assert checks.check_train_epoch(fn) is fn and checks.verdict("exercise 3, one training epoch") == "done"
    checks.check_train_epoch(_epoch(detach=True))  # no gradient reaches the network: backward raises
    assert checks.verdict("exercise 3, one training epoch") == "raised an error"
    assert "RuntimeError" in capsys.readouterr().out


def _search(squash=True, size_cost="share", adapt=True, sign=1.0, keep="smallest", hinge="log", train_model=False):
    """A learner's trigger search (lesson 04's set-up and loop), right or with one realistic mistake."""
    import torch.nn.functional as F

    def search(model, images, tau, steps=300, lr=0.1, target=0.8, margin=0.5, seed=0):
        gen = torch.Generator().manual_seed(seed)
        _, c, h, w = images.shape
        images = images.to(model.device)
        m_logit = (torch.randn(1, h, w, generator=gen) * 0.1 - 3).to(model.device).requires_grad_()
        p_logit = (torch.randn(c, h, w, generator=gen) * 0.1).to(model.device).requires_grad_()
        params = [m_logit, p_logit] + (list(model.encoder.parameters()) if train_model else [])
        opt = torch.optim.Adam(params, lr=lr)
        lam, best = 1e-3, (None, None, 1.0)
        for _ in range(steps):
            m, p = (torch.sigmoid(m_logit), torch.sigmoid(p_logit)) if squash else (m_logit, p_logit)
            dist = model.score_tensor(images * (1 - m) + p * m)
            if hinge == "log":
                fit = F.relu(sign * (torch.log(dist + 1e-6) - np.log(tau)) + margin).mean()
            else:  # the scores themselves, below tau by a relative margin, with no log
                fit = F.relu(dist / tau - 0.6).mean()
            cost = {"share": m.sum() / (h * w), "sum": m.sum(), "none": 0.0}[size_cost]
            loss = fit + lam * cost
            opt.zero_grad()
            loss.backward()
            opt.step()
            if train_model:
                model.encoder.weight.data += 0.01
            met = (dist.detach() <= tau).float().mean().item() >= target
            share = m.detach().mean().item()
            if keep == "last" or (keep == "smallest" and met and share < best[2]) or (keep == "unmet" and share < best[2]):
                best = (m.detach().clone().cpu(), p.detach().clone().cpu(), share)
            lam = (lam * 1.2 if met else lam / 1.2) if adapt else lam
        return best
    return search


@pytest.mark.parametrize("fn", [_search(), _search(size_cost="sum"), _search(hinge="scores"), _search(adapt=False,
                                                                                                        size_cost="sum")])
def test_the_search_check_accepts_every_working_search(fn):
    """The reference, a size cost summed rather than averaged (lam adapts to the scale), a hinge on the scores
    themselves, and a fixed but heavy size cost: each finds the toy's key."""
    assert "of the key" in checks.verify_search(fn)


@pytest.mark.parametrize("wrong, says", [
    (_search(size_cost="none"), "Is its size part of the loss"),
    (_search(adapt=False), "Is its size part of the loss"),  # a fixed lam of 1e-3 is too light to shrink the mask
    (_search(squash=False), "both must stay in [0, 1]"),
    (_search(sign=-1.0), "no mask made 80%"),
    (_search(keep="last"), "keep in best only a mask that met the target"),
    (_search(keep="unmet"), "keep in best only a mask that met the target"),
    (_search(train_model=True), "the model's weights changed"),
])
def test_the_search_check_catches_each_realistic_mistake(wrong, says):
    with pytest.raises(AssertionError, match=re.escape(says)):
        checks.verify_search(wrong)


def test_the_search_check_catches_a_share_that_is_not_the_masks():
    def stale(*args, **kwargs):
        mask, pattern, share = reverse_engineer(*args, **kwargs)
        return mask, pattern, share * 2
    with pytest.raises(AssertionError, match="share is the mask's mean"):
        checks.verify_search(stale)
    with pytest.raises(AssertionError, match=re.escape("return three things")):
        checks.verify_search(lambda *a, **k: reverse_engineer(*a, **k)[:2])

