"""``check_*`` helpers for the lessons' exercises.

A check runs the learner's function on small cases and prints what it found. It never raises, so
"Run all" goes from top to bottom with every exercise undone (in JupyterLab and in Colab alike):

- solved: prints "Correct: ..." and returns the learner's function, which the lesson then uses;
- not started (the stub's NotImplementedError): says so and returns the library's version;
- wrong: prints specific feedback (which case, what to change, never the reference answer) and
  returns the library's version, so the lesson goes on.

``verify_*`` hold the cases and raise AssertionError with the feedback; the tests call them directly.
Every check records its verdict in the kernel; ``progress(lesson)``, each lesson's last cell, sums them
up ("2 of 4 exercises done: ...") and, when ``BADSAD_PROGRESS`` names a file, writes them there as JSON
(``badsad grade NOTEBOOK`` runs a notebook that way and prints its score).
"""
from __future__ import annotations

import numpy as np
import torch


# each lesson's exercises, as its checks name them (progress() lists them in this order)
EXERCISES = {
    "01": ("exercise 1, the DeepSAD loss", "exercise 2, the center rule", "exercise 3, one training epoch",
           "exercise 4, the percentile threshold"),
    "02": ("exercise 1, stamping the trigger", "exercise 2, choosing the images to poison",
           "exercise 3, the attack success rate"),
    "03": ("exercise 1, concentration", "exercise 2, separation", "exercise 3, alignment by MMD",
           "exercise 4, the mini-batch objective"),
    "04": ("exercise 1, spectral scores", "exercise 2, the defense effectiveness rate",
           "exercise 3, erasing the corners", "exercise 4, the trigger search"),
}
VERDICTS = ("done", "not quite", "raised an error", "not started", "not run yet")
_verdicts: dict[str, str] = {}  # exercise -> its latest verdict in this kernel


def _grade(exercise: str, fn, verify, fallback):
    """Run ``verify(fn)``; return ``fn`` if it passes, else print why and return ``fallback``. Records the verdict."""
    _verdicts[exercise] = "raised an error"
    try:
        message = verify(fn)
    except NotImplementedError:
        _verdicts[exercise] = "not started"
        print(f"Not done yet: {exercise}. Fill in the function above and run this cell again. "
              f"Until then the lesson continues with the library's version.")
        return fallback
    except AssertionError as err:
        _verdicts[exercise] = "not quite"
        print(f"Not quite ({exercise}): {err}\nThe lesson continues with the library's version; "
              f"fix your function and run both cells again to use yours.")
        return fallback
    except Exception as err:  # the learner's code may fail in any way; the lesson must go on
        print(f"Your function raised {type(err).__name__}: {err}\n({exercise}) The lesson continues with the "
              f"library's version; fix your function and run both cells again to use yours.")
        return fallback
    _verdicts[exercise] = "done"
    print(f"Correct: {message} From here on the lesson uses your function.")
    return fn


def verdict(exercise: str) -> str:
    """The latest verdict of ``exercise`` (one of ``EXERCISES``' names) in this kernel: one of ``VERDICTS``."""
    if not any(exercise in names for names in EXERCISES.values()):
        raise ValueError(f"unknown exercise {exercise!r}: choose one of "
                         f"{', '.join(n for names in EXERCISES.values() for n in names)}")
    return _verdicts.get(exercise, "not run yet")


def progress(lesson: str) -> dict:
    """Print and return how far this kernel got with ``lesson``'s exercises ("01" to "04"): each exercise's
    latest verdict (done, not quite, raised an error, not started, or not run yet if its check cell has
    not run). With ``BADSAD_PROGRESS`` set, also write the summary to that file as JSON."""
    import os

    if lesson not in EXERCISES:
        raise ValueError(f"unknown lesson {lesson!r}: choose one of {', '.join(EXERCISES)}")
    verdicts = {name: _verdicts.get(name, "not run yet") for name in EXERCISES[lesson]}
    done = sum(v == "done" for v in verdicts.values())
    summary = {"lesson": lesson, "done": done, "exercises": len(verdicts), "verdicts": verdicts}
    lines = [f"Lesson {lesson}: {done} of {len(verdicts)} exercises done."]
    for verdict in VERDICTS:
        names = [name for name, v in verdicts.items() if v == verdict]
        if names:
            lines.append(f"  {verdict}: {'; '.join(names)}")
    if done < len(verdicts):
        lines.append("Fill in a function, run its cell and the check below it again, then run this cell.")
    print("\n".join(lines))
    if os.environ.get("BADSAD_PROGRESS"):
        from .io import write_json

        write_json(os.environ["BADSAD_PROGRESS"], summary)
    return summary


def _close(got, want, what: str, atol: float = 1e-5) -> None:
    got_t = torch.as_tensor(np.asarray(got, dtype=np.float64))
    want_t = torch.as_tensor(np.asarray(want, dtype=np.float64))
    if got_t.shape != want_t.shape:
        raise AssertionError(f"{what}: expected shape {tuple(want_t.shape)}, got {tuple(got_t.shape)}")
    if not torch.allclose(got_t, want_t, atol=atol, rtol=1e-4):
        raise AssertionError(f"{what}: the values are not right yet")


def _value(x) -> float:
    x = x.detach() if hasattr(x, "detach") else x
    arr = np.asarray(x, dtype=np.float64)
    if arr.size != 1:
        raise AssertionError(f"return one number (a scalar), not an array of shape {arr.shape}")
    return float(arr.reshape(()))


# ---------------------------------------------------------------- lesson 01
def verify_deepsad_loss(fn) -> str:
    """fn(dist (n,), semi_targets (n,), eta) -> mean DeepSAD loss."""
    from .deepsad import deepsad_loss

    dist = torch.tensor([0.5, 2.0, 0.25, 4.0])
    cases = {"unlabeled only (y = 0)": (torch.zeros(4, dtype=torch.long), 1.0),
             "a labeled normal (y = +1)": (torch.tensor([0, 1, 0, 0]), 1.0),
             "a labeled anomaly (y = -1)": (torch.tensor([0, 0, -1, 0]), 1.0),
             "eta = 3 with a labeled normal (y = +1)": (torch.tensor([0, 1, 0, 0]), 3.0),
             "eta = 3 with a labeled anomaly (y = -1)": (torch.tensor([0, 0, -1, 0]), 3.0)}
    for name, (y, eta) in cases.items():
        got, want = _value(fn(dist.clone(), y, eta)), deepsad_loss(dist, y, eta).item()
        if abs(got - want) <= 1e-4 * max(1.0, abs(want)):
            continue
        if "y = 0" in name:
            raise AssertionError(f"{name}: an unlabeled sample costs its squared distance; the loss is the mean "
                                 "over the batch")
        if name.startswith("eta"):
            raise AssertionError(f"{name}: eta multiplies every labeled term (y = +1 and y = -1), and nothing else")
        if "-1" in name:
            raise AssertionError(f"{name}: a labeled anomaly must cost MORE the closer it is to c (an inverse "
                                 "distance), so training pushes it AWAY from c")
        raise AssertionError(f"{name}: a labeled sample's cost is off: check the labeled term of the loss above "
                             "(how y enters it, and the small constant that keeps a distance of 0 finite)")
    return "unlabeled samples cost their distance, labeled ones eta * (dist + 1e-6) ** y, averaged over the batch."


def check_deepsad_loss(fn):
    from .deepsad import deepsad_loss
    return _grade("exercise 1, the DeepSAD loss", fn, verify_deepsad_loss, deepsad_loss)


def verify_center(fn) -> str:
    """fn(codes (n, d), eps) -> c (d,): the mean code, with |c_k| < eps pushed to +-eps keeping the sign."""
    from .deepsad import center_from

    codes = torch.tensor([[1.0, 0.02, -0.03, 0.0], [3.0, 0.04, -0.05, 0.0]])
    got = torch.as_tensor(np.asarray(fn(codes.clone(), 0.1), dtype=np.float32)).float()
    want = center_from(codes, 0.1)
    if got.shape != want.shape:
        raise AssertionError(f"codes of shape (2, 4) should give one center coordinate per column, shape (4,); "
                             f"you return shape {tuple(got.shape)} (average over dim 0, the images)")
    if torch.allclose(got, codes.mean(0)):
        raise AssertionError("you return the plain mean: coordinates with |c_k| < 0.1 must become +-0.1, "
                             "otherwise a network with zero weights sits almost on c")
    if got[2] > 0:
        raise AssertionError(f"c[2] should keep the sign of the mean (it is negative), got {got[2]:.3f}")
    if got[3] == 0:
        raise AssertionError("a coordinate that is exactly 0 must become +0.1 (the reference code's choice)")
    _close(got, want, "center of a 2 x 4 batch of codes")
    return "c is the mean code, with every |c_k| < eps moved to +-eps."


def check_center(fn):
    from .deepsad import center_from
    return _grade("exercise 2, the center rule", fn, verify_center, center_from)


def reference_epoch(net, c, batches, optimizer, loss_fn) -> float:
    """One epoch of DeepSAD training (what ``deepsad.train_epochs`` does per epoch): per mini-batch (x, y), clear the
    gradients, the squared distances of net(x) to c, ``loss_fn(dist, y)``, back-propagate, step. Returns the
    epoch's mean loss per image."""
    net.train()
    total, seen = 0.0, 0
    for x, y in batches:
        optimizer.zero_grad()
        loss = loss_fn(((net(x) - c) ** 2).sum(dim=1), y)
        loss.backward()
        optimizer.step()
        total, seen = total + loss.item() * len(x), seen + len(x)
    return total / seen


def _epoch_case(seed: int = 0):
    """A small DeepSAD network (digits' encoder: bias-free, BatchNorm without affine), its Adam, a center, and three
    mini-batches of 12 images 8 x 8 with unlabeled, labeled-normal and labeled-anomalous targets."""
    import copy

    from .networks import build_encoder

    gen = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    net = build_encoder("digits")
    torch.random.set_rng_state(torch_state)
    c = torch.randn(net[-1].out_features, generator=gen) * 0.5
    batches = [(torch.rand(12, 1, 8, 8, generator=gen), torch.tensor([0] * 8 + [1, 1, -1, -1])) for _ in range(3)]
    return copy.deepcopy(net), c, batches


def _run_epoch(fn, loss_fn=None):
    from .deepsad import deepsad_loss

    net, c, batches = _epoch_case()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    calls = []

    def counted(dist, y):
        calls.append(len(dist))
        return (loss_fn or deepsad_loss)(dist, y)
    result = fn(net, c, [(x.clone(), y.clone()) for x, y in batches], optimizer, counted)
    return net, result, calls


def verify_train_epoch(fn) -> str:
    """fn(net, c, batches, optimizer, loss_fn) -> the epoch's mean loss, having taken one optimiser step per batch
    on loss_fn(squared distances to c, y); the network's weights must end where the reference's do."""
    before, _, _ = _epoch_case()
    want_net, want, _ = _run_epoch(reference_epoch)
    got_net, got, calls = _run_epoch(fn)
    if calls != [12, 12, 12]:
        raise AssertionError(f"loss_fn should be called once per mini-batch on that batch's 12 distances (3 "
                             f"batches); it was called {len(calls)} time(s), on {calls} distances: use the "
                             f"loss_fn you are given, on the squared distance of each image")
    params = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])  # noqa: E731
    if torch.equal(params(got_net), params(before)):
        raise AssertionError("the network's weights did not change: each batch needs loss.backward() and then "
                             "optimizer.step(), in that order")
    if not torch.allclose(params(got_net), params(want_net), atol=1e-5):
        variants = {"the gradients were not cleared before each batch's backward pass, so they piled up over "
                    "the batches": _mistaken_epoch(clear=False),
                    "the distances average the coordinates instead of summing them (a squared distance sums "
                    "over the code's coordinates)": _mistaken_epoch(reduce="mean")}
        for why, variant in variants.items():
            if torch.allclose(params(got_net), params(_run_epoch(variant)[0]), atol=1e-5):
                raise AssertionError(f"after one epoch your network's weights differ from DeepSAD's: {why}")
        raise AssertionError("after one epoch your network's weights differ from DeepSAD's: per batch, clear the "
                             "gradients, compute loss_fn of the squared distances to c, back-propagate, step")
    _close(torch.tensor(float(got)), torch.tensor(want), "the epoch's mean loss")
    return "one epoch takes one optimiser step per mini-batch on your loss, as DeepSAD's training loop does."


def _mistaken_epoch(clear: bool = True, reduce: str = "sum"):
    """The reference epoch with one realistic mistake: gradients never cleared, or coordinates averaged."""
    def epoch(net, c, batches, optimizer, loss_fn):
        net.train()
        for x, y in batches:
            if clear:
                optimizer.zero_grad()
            loss = loss_fn(getattr((net(x) - c) ** 2, reduce)(dim=1), y)
            loss.backward()
            optimizer.step()
        return loss.item()
    return epoch


def check_train_epoch(fn):
    return _grade("exercise 3, one training epoch", fn, verify_train_epoch, reference_epoch)


def verify_threshold(fn) -> str:
    """fn(val_scores (n,), q) -> tau, the q-th percentile of held-out normal scores (any standard convention)."""
    scores = np.arange(1, 101, dtype=float)
    for q in (50, 95, 99):
        got = _value(fn(scores.copy(), q))
        low, high = np.percentile(scores, q, method="lower"), np.percentile(scores, q, method="higher")
        if not low - 1e-9 <= got <= high + 1e-9:
            raise AssertionError(f"q = {q} on the scores 1, 2, ..., 100: tau should lie between {low:g} and {high:g} "
                                 f"(the q-th percentile), got {got:g}")
    false_alarm = np.mean(scores > _value(fn(scores, 95)))
    if abs(false_alarm - 0.05) > 0.011:
        raise AssertionError(f"at q = 95, {false_alarm:.1%} of normals lie above tau; it should be about 5%")
    return "tau_q is the q-th percentile of clean normal scores: a false-alarm rate of 1 - q/100."


def check_threshold(fn):
    from .metrics import threshold
    return _grade("exercise 4, the percentile threshold", fn, verify_threshold, threshold)


# ---------------------------------------------------------------- lesson 02
def verify_stamp(fn) -> str:
    """fn(x (N, C, H, W), mask (1, H, W), mu) -> x * (1 - mask) + mu * mask."""
    from .triggers import make_trigger

    trig = make_trigger("corners", 1, 28)
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for mu in (1.0, 0.4, 0.0):
        got = torch.as_tensor(fn(x.clone(), trig.mask, mu)).float()
        if got.shape != x.shape:
            raise AssertionError(f"mu = {mu}: expected shape {tuple(x.shape)}, got {tuple(got.shape)}")
        outside = trig.mask.expand_as(x) == 0
        if not torch.equal(got[outside], x[outside]):
            raise AssertionError(f"mu = {mu}: pixels outside the mask changed; the trigger must leave them alone")
        inside = got[~outside]
        if not torch.allclose(inside, torch.full_like(inside, mu)):
            raise AssertionError(f"mu = {mu}: pixels inside the mask should all equal mu = {mu}, "
                                 f"got values from {inside.min():.3f} to {inside.max():.3f}")
    return "the four corner squares are set to mu and nothing else moves."


def check_stamp(fn):
    return _grade("exercise 1, stamping the trigger", fn, verify_stamp, lambda x, mask, mu: x * (1 - mask) + mu * mask)


def verify_poison_choice(fn) -> str:
    """fn(train_labels (N,), semi_targets (N,), normal_class, ratio, seed) -> indices to poison."""
    labels = torch.tensor([0] * 50 + [1] * 10 + [0] * 5)
    semi = torch.tensor([0] * 50 + [-1] * 10 + [1] * 5)
    got = np.asarray(fn(labels, semi, 0, 0.2, 0)).astype(int).ravel()
    if len(np.unique(got)) != len(got):
        raise AssertionError("an image is chosen twice: draw without replacement")
    bad = [int(i) for i in got if labels[i] != 0]
    if bad:
        raise AssertionError(f"indices {bad[:5]} are anomalies: clean-label poisoning only touches NORMAL images")
    labeled = [int(i) for i in got if semi[i] != 0]
    if labeled:
        raise AssertionError(f"indices {labeled[:5]} are labeled normals: poison the unlabeled normal images only")
    if len(got) != 10:
        raise AssertionError(f"50 unlabeled normals at ratio 0.2 should give 10 poisoned images, got {len(got)}")
    _poison_choice_at_lesson_scale(fn)
    return "a fraction rho of the unlabeled normal images, each at most once, and no label touched."


def _poison_choice_at_lesson_scale(fn) -> None:
    """The same rules on a split the size of a lesson's: shuffled classes, normal class 3, labeled normals and
    anomalies and unlabeled anomalies present. (Drawing with replacement can pass on 50 images by luck; on
    hundreds it repeats images.)"""
    rng = np.random.default_rng(11)
    labels = torch.from_numpy(rng.integers(0, 10, 6000))
    semi = torch.zeros(6000, dtype=torch.long)
    semi[(labels == 3) & torch.from_numpy(rng.random(6000) < 0.05)] = 1
    semi[(labels == 4) & torch.from_numpy(rng.random(6000) < 0.1)] = -1
    normals = np.flatnonzero(((labels == 3) & (semi == 0)).numpy())
    got = np.asarray(fn(labels, semi, 3, 0.1, 0)).astype(int).ravel()
    if len(np.unique(got)) != len(got):
        raise AssertionError(f"on {len(normals)} unlabeled normals at ratio 0.1, {len(got) - len(np.unique(got))} "
                             f"images are chosen twice: draw without replacement")
    if not np.isin(got, normals).all():
        raise AssertionError("with normal class 3 (not 0), some chosen images are not unlabeled images of class 3")
    if len(got) not in (int(0.1 * len(normals)), round(0.1 * len(normals))):
        raise AssertionError(f"{len(normals)} unlabeled normals at ratio 0.1 should give about "
                             f"{round(0.1 * len(normals))} poisoned images, got {len(got)}")
    again = np.asarray(fn(labels, semi, 3, 0.1, 0)).astype(int).ravel()
    if not np.array_equal(np.sort(got), np.sort(again)):
        raise AssertionError("the same seed gave two different choices: draw from a generator made from the seed")
    if np.array_equal(np.sort(got), normals[:len(got)]):
        raise AssertionError("these are the first unlabeled normals in order: choose them at random (seeded)")
    other = np.asarray(fn(labels, semi, 3, 0.1, 1)).astype(int).ravel()
    if np.array_equal(np.sort(got), np.sort(other)):
        raise AssertionError("seeds 0 and 1 gave the same choice: use the seed")


def check_poison_choice(fn):
    def library(train_labels, semi_targets, normal_class, ratio, seed=0):
        normals = np.flatnonzero(((train_labels == normal_class) & (semi_targets == 0)).numpy())
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(normals, size=int(round(ratio * len(normals))), replace=False))
    return _grade("exercise 2, choosing the images to poison", fn, verify_poison_choice, library)


def verify_asr(fn) -> str:
    """fn(triggered_anomaly_scores (n,), tau) -> fraction with score <= tau."""
    scores = np.array([0.1, 0.2, 0.3, 0.4, 5.0])
    for tau, want in ((0.3, 0.6), (0.05, 0.0), (10.0, 1.0)):
        got = _value(fn(scores.copy(), tau))
        if abs(got - want) > 1e-9:
            hint = " (a score equal to tau counts as normal)" if tau == 0.3 else ""
            raise AssertionError(f"scores {scores.tolist()} at tau = {tau}: expected ASR {want}, got {got}{hint}")
    return "ASR = share of triggered anomalies whose score is at or below tau."


def check_asr(fn):
    from .metrics import attack_success_rate
    return _grade("exercise 3, the attack success rate", fn, verify_asr, attack_success_rate)


# ---------------------------------------------------------------- lesson 03
def _codes(seed: int, n: int = 16, d: int = 8, shift: float = 0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


def verify_concentration(fn) -> str:
    """fn(z_triggered (n, d), c (d,)) -> mean ||z - c||^2."""
    z, c = _codes(1), torch.full((8,), 0.5)
    got = _value(fn(z.clone(), c))
    if abs(got - ((z - c) ** 2).mean().item()) < 1e-6:
        raise AssertionError("you average over the coordinates too: sum the squares over each code, then "
                             "average over the images (the DeepSAD distance is a squared norm)")
    if abs(got - ((z - c) ** 2).sum().item()) < 1e-4:
        raise AssertionError("you sum over the images: average over them, so the term does not grow with the batch")
    _close(got, ((z - c) ** 2).sum(1).mean().item(), "concentration term of 16 codes")
    return "L_conc = mean over triggered images of ||phi(x_p) - c||^2."


def check_concentration(fn):
    from .attack import concentration
    return _grade("exercise 1, concentration", fn, verify_concentration, concentration)


def verify_separation(fn) -> str:
    """fn(z_views (n, d), c (d,), eta) -> eta * mean 1 / (||z - c||^2 + 1e-6)."""
    z, c = _codes(2), torch.full((8,), 0.5)
    want = 2.0 * (1.0 / (((z - c) ** 2).sum(1) + 1e-6)).mean().item()
    got = _value(fn(z.clone(), c, 2.0))
    if got < 0:
        raise AssertionError("the separation term is a sum of inverse distances: it cannot be negative")
    if abs(got - want / 2) <= 1e-3 * want:
        raise AssertionError("with eta = 2 the term doubles: multiply by eta")
    if abs(got - want) > 1e-3 * want:
        raise AssertionError("the separation term is DeepSAD's labeled-anomaly term (an inverse distance), "
                             "averaged over the views; check where you sum and where you invert")
    return "L_sep = eta * mean 1 / (||phi(g(x)) - c||^2 + 1e-6): it shrinks as views move away from c."


def check_separation(fn):
    from .attack import separation
    return _grade("exercise 2, separation", fn, verify_separation, separation)


def verify_mmd(fn) -> str:
    """fn(a (n, d), b (m, d), sigma2) -> biased MMD^2 with the kernel exp(-||u - v||^2 / sigma2)."""
    a, b, far = _codes(3), _codes(4), _codes(5, shift=3.0)

    def reference(x, y, s):
        def k(u, v):
            return torch.exp(-torch.cdist(u, v).pow(2) / s)
        return (k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()).item()
    same = _value(fn(a.clone(), a.clone(), 8.0))
    if abs(same) > 1e-5:
        raise AssertionError(f"MMD^2 of a sample with itself must be 0, got {same:.5f}")
    near, away = _value(fn(a, b, 8.0)), _value(fn(a, far, 8.0))
    if not away > near:
        raise AssertionError(f"a shifted sample should be further away: MMD^2 near {near:.4f}, shifted {away:.4f}")
    if abs(near - reference(a, b, 16.0)) < 1e-5 or abs(near - reference(a, b, 4.0)) < 1e-5:
        raise AssertionError("the kernel is exp(-||u - v||^2 / sigma2): the squared distance divided by sigma2 "
                             "itself, with no factor 2")
    _close(near, reference(a, b, 8.0), "MMD^2 between two standard normal samples", atol=1e-4)
    return "MMD^2 = mean k(a, a') + mean k(b, b') - 2 mean k(a, b): 0 when the two sets are distributed alike."


def check_mmd(fn):
    from .attack import mmd2
    return _grade("exercise 3, alignment by MMD", fn, verify_mmd, mmd2)


# ---------------------------------------------------------------- lesson 04
def verify_spectral(fn) -> str:
    """fn(codes (n, d)) -> (n,) squared projection of the centred codes on their top singular vector."""
    from .defenses import spectral_scores

    gen = torch.Generator().manual_seed(6)
    codes = torch.randn(40, 5, generator=gen).numpy()
    codes[:6] += np.array([8.0, 0, 0, 0, 0])
    got = np.asarray(fn(codes.copy()), dtype=float)
    want = spectral_scores(codes)
    if got.shape != want.shape:
        raise AssertionError(f"expected one score per image, shape {want.shape}, got {got.shape}")
    uncentred = (codes @ np.linalg.svd(codes, full_matrices=False)[2][0]) ** 2
    if np.allclose(got, uncentred) and not np.allclose(got, want):
        raise AssertionError("centre the codes (subtract their mean) before the SVD and the projection")
    _close(got, want, "spectral scores of 40 codes, 6 of them shifted", atol=1e-3)
    if set(np.argsort(got)[-6:]) != set(range(6)):
        raise AssertionError("the 6 shifted codes should get the 6 largest scores")
    return "the shifted (poison-like) codes stand out along the top singular direction."


def check_spectral(fn):
    from .defenses import spectral_scores
    return _grade("exercise 1, spectral scores", fn, verify_spectral, spectral_scores)


def verify_der(fn) -> str:
    """fn(asr_before, asr_after, auc_before, auc_after) -> DER."""
    cases = [((0.9, 0.1, 0.98, 0.98), 0.9), ((0.9, 0.9, 0.98, 0.98), 0.5), ((0.9, 0.1, 0.98, 0.78), 0.8),
             ((0.2, 0.5, 0.9, 0.95), 0.5)]
    for args, want in cases:
        got = _value(fn(*args))
        if abs(got - want) > 1e-9:
            hint = (" A defense that raises the ASR or the AUC is neither rewarded nor punished for it: clip each "
                    "drop at 0.") if args[0] < args[1] else ""
            raise AssertionError(f"ASR {args[0]} -> {args[1]}, AUC {args[2]} -> {args[3]}: expected DER {want}, "
                                 f"got {got:g}.{hint}")
    return "DER = (max(0, ASR drop) - max(0, AUC drop) + 1) / 2: 0.5 means no effect."


def check_der(fn):
    from .metrics import defense_effectiveness_rate
    return _grade("exercise 2, the defense effectiveness rate", fn, verify_der, defense_effectiveness_rate)


def verify_erase(fn) -> str:
    """fn(x (N, C, H, W), k) -> a new tensor: x with the four k x k corner squares set to 0."""
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(7))
    original = x.clone()
    got = torch.as_tensor(fn(x, 3))
    if not torch.equal(x, original):
        raise AssertionError("your function changed its input in place: work on a copy (x.clone()) and return it")
    want = original.clone()
    for r in (slice(0, 3), slice(9, 12)):
        for c in (slice(0, 3), slice(9, 12)):
            want[..., r, c] = 0
    if got.shape != x.shape:
        raise AssertionError(f"expected shape {tuple(x.shape)}, got {tuple(got.shape)}")
    corners = want == 0
    if not torch.all(got[corners] == 0):
        raise AssertionError("some corner pixel is not 0: all four k x k corners must be erased")
    if not torch.equal(got[~corners], original[~corners]):
        raise AssertionError("pixels outside the four corners changed")
    return "the four corners are erased and nothing else changes."


def check_erase(fn):
    from .defenses import preprocess_images
    return _grade("exercise 3, erasing the corners", fn, verify_erase,
                  lambda x, k: preprocess_images(x, "erase_corners", k))


class KeyedDetector(torch.nn.Module):
    """A toy detector with a known backdoor, for the trigger-search check: images (N, 2, 10, 12) score
    0.05 + 10 (1 - k)^2 mean((x - 0.5)^2), with k the mean brightness of the 3 x 3 key at rows 7-9,
    columns 1-3 (9 of the 120 pixels, 7.5% of the image). A bright key makes any image normal; without
    it, contrast is anomalous. It has what a search reads of a DeepSAD: ``score_tensor``, ``device`` and
    an ``encoder`` whose weights must not change."""

    shape = (2, 10, 12)

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(1, 1)
        self.device = torch.device("cpu")
        self.key = torch.zeros(1, *self.shape[1:])
        self.key[:, 7:10, 1:4] = 1.0

    def key_cover(self, mask: torch.Tensor) -> float:
        """How much of the key a mask (1, H, W) covers: its mean over the key's pixels."""
        return float((mask * self.key).sum() / self.key.sum())

    def score_tensor(self, x: torch.Tensor) -> torch.Tensor:
        keyed = (x * self.key).sum(dim=(1, 2, 3)) / (self.key.sum() * x.shape[1])
        return 0.05 + 10 * (1 - keyed) ** 2 * ((x - 0.5) ** 2).mean(dim=(1, 2, 3))


def verify_search(fn) -> str:
    """fn(model, images (N, C, H, W), tau, steps=..., target=...) -> (mask (1, H, W), pattern (C, H, W), share):
    the smallest mask that made ``target`` of the images pass tau, found on ``KeyedDetector``, whose key is
    known, with anomalies that all fail tau = 0.08."""
    model, tau, target = KeyedDetector(), 0.08, 0.8
    images = torch.rand(24, *model.shape, generator=torch.Generator().manual_seed(0)) * 0.6
    weights = model.encoder.weight.detach().clone()
    found = fn(model, images.clone(), tau, steps=300, target=target)
    if not isinstance(found, tuple) or len(found) != 3:
        raise AssertionError("return three things, (mask, pattern, share), as best holds them")
    mask, pattern, share = found
    if not torch.equal(model.encoder.weight.detach(), weights):
        raise AssertionError("the model's weights changed: the search optimises the mask and the pattern only "
                             "(the optimiser you are given holds just those two)")
    if mask is None:
        raise AssertionError(f"no mask made {target:.0%} of the toy's anomalies pass tau, so best was never set. Does "
                             "your loss fall as the stamped images' scores fall below tau, and do you keep a mask "
                             "in best at a step where the target is met?")
    mask, pattern = torch.as_tensor(mask).detach().cpu(), torch.as_tensor(pattern).detach().cpu()
    _, c, h, w = images.shape
    if tuple(mask.shape) != (1, h, w) or tuple(pattern.shape) != (c, h, w):
        raise AssertionError(f"on images of shape (24, {c}, {h}, {w}) the mask should have shape (1, {h}, {w}) and "
                             f"the pattern ({c}, {h}, {w}); got {tuple(mask.shape)} and {tuple(pattern.shape)}")
    if mask.min() < 0 or mask.max() > 1 or pattern.min() < 0 or pattern.max() > 1:
        raise AssertionError(f"the mask's values lie in [{mask.min():.2f}, {mask.max():.2f}] and the pattern's in "
                             f"[{pattern.min():.2f}, {pattern.max():.2f}]: both must stay in [0, 1]. What you "
                             "optimise are logits; turn them into a mask and a pattern before using them")
    if abs(_value(share) - float(mask.mean())) > 1e-4:
        raise AssertionError(f"share is {_value(share):.4f} but the mask you return covers {float(mask.mean()):.4f} "
                             "of the image: share is the mask's mean, recorded with the same mask")
    passing = float((model.score_tensor(images * (1 - mask) + pattern * mask) <= tau).float().mean())
    if passing < target:
        raise AssertionError(f"stamped with the mask and pattern you return, {passing:.0%} of the images pass tau, "
                             f"below the target {target:.0%}: keep in best only a mask that met the target at its "
                             "step, and only when it is smaller than the one best holds")
    if _value(share) > 0.15:
        raise AssertionError(f"your mask covers {_value(share):.1%} of the image, while the toy's key is 7.5% of it: "
                             "the search should trade passing against the mask's size. Is its size part of the "
                             "loss, with a weight lam that grows while the target is met and shrinks while it is not?")
    if model.key_cover(mask) < 0.5:
        raise AssertionError(f"your mask is small ({_value(share):.1%} of the image), but it covers only "
                             f"{model.key_cover(mask):.0%} of the toy's key; a search that works finds the key")
    return (f"on a toy detector with a 3 x 3 key (7.5% of the image), your search found a mask covering "
            f"{_value(share):.1%} of the image and {model.key_cover(mask):.0%} of the key, which makes {passing:.0%} "
            f"of the anomalies pass.")


def check_search(fn):
    from .defenses import reverse_engineer
    return _grade("exercise 4, the trigger search", fn, verify_search, reverse_engineer)


def verify_batch_loss(fn) -> str:
    """fn(net, c, x, y, poisoned, draw_views, stamp, terms, weights, eta) -> BadSAD's loss of one mini-batch,
    compared with ``attack.BadSADObjective`` on a small network in training mode (BatchNorm on batch statistics)."""
    from .attack import AttackWeights, BadSADObjective
    from .networks import build_encoder, initialise
    from .triggers import trigger_for

    g = torch.Generator().manual_seed(0)
    pool, x = torch.rand(40, 1, 8, 8, generator=g), torch.rand(12, 1, 8, 8, generator=g)
    y = torch.tensor([0, 0, -1, 0, 0, 1, 0, 0, 0, 0, -1, 0])      # unlabeled, labeled anomalies and a labeled normal
    poisoned = torch.tensor([0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0], dtype=torch.bool)  # three of the unlabeled
    trigger, c = trigger_for(pool, "corners"), torch.linspace(-0.5, 0.5, 16)
    net = initialise(build_encoder("digits"), torch.Generator().manual_seed(1))
    calls = []

    def counted(net, c, x, y, p, draw, stamp, terms, weights, eta):
        return fn(net, c, x, y, p, lambda n: calls.append(n) or draw(n), stamp, terms, weights, eta)

    def value(combine, train=True, **w):
        net.train(train)
        weights = AttackWeights(**{k: w.get(k, 1.0) for k in ("concentration", "alignment", "separation")})
        objective = BadSADObjective("badsad", trigger, 1.0, poisoned, pool, weights, eta=1.5, seed=3, combine=combine)
        with torch.no_grad():
            return _value(objective(net, c, x, y, torch.arange(len(x))))

    def same(**w):
        want, got = value(None, **w), value(counted, **w)
        return abs(got - want) <= 1e-4 * max(1.0, abs(want))
    if same():
        if calls != [len(x)]:
            raise AssertionError(f"draw the views once per batch, one per image (draw_views(len(x))); you asked for "
                                 f"{calls}")
        if not same(concentration=2.0, alignment=0.5, separation=3.0):
            raise AssertionError("with other weights your loss is off: each term is multiplied by its own weight "
                                 "(weights.concentration, weights.separation, weights.alignment)")
        return ("one forward pass over the batch, its views and the triggered views; the triggered views and the "
                "batch's poisoned images pulled onto c and aligned with the clean normals, the untriggered views "
                "pushed away.")
    calls.clear()
    value(counted)
    if calls != [len(x)]:
        raise AssertionError(f"draw the views once per batch, one per image (draw_views(len(x))); you asked for "
                             f"{calls or 'none'}")
    want = value(None, train=False)
    if abs(value(counted, train=False) - want) <= 1e-4 * max(1.0, abs(want)):  # right once BatchNorm ignores the batch
        raise AssertionError("in training mode BatchNorm normalises by the statistics of the batch it is given: run "
                             "the network ONCE, over the batch, the views and the triggered views together, then "
                             "split the codes")
    if not same(concentration=0.0, alignment=0.0, separation=0.0):
        raise AssertionError("with every weight 0 your loss should be DeepSAD's own loss of the batch's codes "
                             "(the images x, their targets y, eta); it is not")
    for term, advice in (("concentration", "concentration pulls the triggered views AND the batch's poisoned images "
                                           "(the x where poisoned is True) onto c"),
                         ("separation", "separation pushes away the views WITHOUT the trigger"),
                         ("alignment", "alignment compares the pulled codes with the batch's clean normals: "
                                       "unlabeled (y == 0) and not poisoned")):
        others = {k: 0.0 for k in ("concentration", "alignment", "separation") if k != term}
        if not same(**others):
            raise AssertionError(f"with only the {term} term switched on your loss differs: {advice}")
    raise AssertionError("each term alone is right, but together they are not: add the three, each with its weight, "
                         "to DeepSAD's loss")


def check_batch_loss(fn):
    """The learner's objective if right, else None (the library's ``BadSADObjective`` then trains)."""
    return _grade("exercise 4, the mini-batch objective", fn, verify_batch_loss, None)


# ---------------------------------------------------------------- tiered hints
HINTS = {  # per exercise: a nudge first, then more specific; none is a line of the answer
    "loss": (
        "A labeled image's loss is eta times its distance raised to some power. Which power turns a distance into "
        "itself (a labeled normal, pulled in), and which into its inverse (a labeled anomaly, pushed away)?",
        "The power is the label y itself (+1 or -1), as a float tensor like dist. The 1e-6 goes into the base, "
        "before the power, so a distance of 0 never divides by zero.",
    ),
    "epoch": (
        "Each mini-batch is one step of gradient descent: the loss of that batch, its gradients, and the optimiser's "
        "update. PyTorch adds new gradients to old ones unless told to start again.",
        "In order, per batch: clear the optimiser's gradients; the codes of x and their squared distances to c "
        "(summed over the coordinates, dim=1); loss_fn of those distances and y; back-propagate that loss; let the "
        "optimiser take its step. The given lines that count the mean loss read a variable named loss.",
    ),
    "center": (
        "Only some coordinates change: those with |c_k| < eps. Build a boolean mask of them first.",
        "torch.where(condition, a, b) picks per coordinate; nest two of them: small and negative -> -eps, small "
        "otherwise (zero included) -> +eps, every other coordinate keeps its value. torch.full_like(c, eps) makes "
        "a tensor of eps shaped like c.",
    ),
    "threshold": (
        "You want a percentile of the held-out scores, not of the training scores; numpy computes percentiles.",
        "numpy's percentile takes q on the 0-100 scale, as q is given here (not 0-1). Return a Python float.",
    ),
    "stamp": (
        "The line given keeps the image where the mask is 0. What should the pixels be where the mask is 1?",
        "Where the mask is 1 the pixel becomes mu, and multiplying by the mask is 0 everywhere else, so the two "
        "parts simply add up.",
    ),
    "poison": (
        "Three conditions pick the candidates: the normal class, unlabeled (semi_target 0), and a training image. "
        "The labels are torch tensors: compare them element by element.",
        "np.flatnonzero turns a boolean array into indices. Draw from those candidates with the rng you are "
        "given, round(ratio * n) of them, and say no to repeats (numpy's choice repeats unless told not to); "
        "sorting the result keeps it readable.",
    ),
    "asr": (
        "The detector judges an image normal when its score is not above tau. Count those among the triggered "
        "anomalies.",
        "A comparison of a numpy array with tau gives booleans, and the mean of booleans is the share of True; "
        "return it as a float.",
    ),
    "concentration": (
        "A squared distance sums over the coordinates of one code; the term then averages over the codes.",
        "squared has one row per image: sum along dim=1 (the coordinates), then take the mean of what is left.",
    ),
    "separation": (
        "Look back at lesson 01's loss for a labeled anomaly (y = -1): it is the same term, for every view.",
        "eta times the inverse of each squared distance (with the 1e-6 inside, so 0 stays finite), averaged over "
        "the views.",
    ),
    "mmd": (
        "The formula above has three means of kernel matrices; k(u, v) gives the whole matrix for two sets.",
        "k(a, a).mean() is the first; the second uses b with itself; the cross term compares a with b and counts "
        "twice, with a minus sign.",
    ),
    "spectral": (
        "The singular value decomposition of the centred codes gives the directions along which they vary most; "
        "v is the first of them.",
        "np.linalg.svd(centred, full_matrices=False) returns (U, S, Vt): v is the first row of Vt. Each image's "
        "score is its centred code's dot product with v, squared (a matrix-vector product does every image at once).",
    ),
    "der": (
        "The AUC cost mirrors the ASR drop given above it: before minus after, and never below 0.",
        "With both parts clipped, combine them as the formula in the text says: ASR drop minus AUC cost, plus 1, "
        "halved.",
    ),
    "erase": (
        "There are four corners: two row ranges (top and bottom k rows) times two column ranges (left and right k "
        "columns).",
        "Python slices pick a range: slice(0, k) is the first k, slice(h - k, h) the last k. Loop over both row "
        "slices and both column slices and set out[..., rows, cols] to 0; the ... keeps every image and channel.",
    ),
    "search": (
        "Each step has three parts: a mask and a pattern from their logits, a loss on the stamped images, and the "
        "bookkeeping (is the target met? is this the smallest mask so far? how heavy should the size cost be?).",
        "Stamp as lesson 02 does, with the pattern in place of mu. The loss has two parts: a hinge that is 0 once "
        "an image's log score is a margin below log tau, averaged over the images, and lam times the share of "
        "the image the mask covers. A step meets the target when enough of its stamped images score at most tau.",
        "Record into best the detached mask and pattern (on the CPU) and the mask's mean, only at a step that met "
        "the target and with a smaller mask than best holds. Then multiply lam by 1.2 if the step met the target, "
        "divide it by 1.2 if not: the size cost tightens while the search succeeds.",
    ),
    "objective": (
        "Section 1's formula has four parts: L_SAD on the batch, and three terms that each act on one group of "
        "codes. Which images does each group hold?",
        "Three groups of images go through the network: the batch x, the views g(x), and the views with the "
        "trigger T(g(x)) (stamp(views)). BatchNorm in training mode normalises by the statistics of what it is "
        "given, so they must go through together, in one torch.cat, and be split afterwards.",
        "The pulled set P is the triggered views' codes plus the codes of the batch images where poisoned is True; "
        "concentration and alignment act on P (alignment against the codes of x with y == 0 and not poisoned); "
        "separation acts on the untriggered views; L_SAD is deepsad_loss of the squared distances of x's codes.",
    ),
}
_hints_given: dict[str, int] = {}


def hint(exercise: str) -> None:
    """Print the next hint for ``exercise`` (a nudge first, more specific each time it is asked again)."""
    if exercise not in HINTS:
        raise ValueError(f"no hints for {exercise!r}; there are hints for: {', '.join(HINTS)}")
    tiers = HINTS[exercise]
    level = min(_hints_given.get(exercise, 0), len(tiers) - 1)
    _hints_given[exercise] = level + 1
    more = " Run hint again for a more specific one." if level + 1 < len(tiers) else " That is the last hint."
    print(f"Hint {level + 1} of {len(tiers)} ({exercise}): {tiers[level]}{more}")
