"""Notebook widgets: thin wrappers over the pure ``*_view`` functions in ``badsad_lib.plots``.

Core ipywidgets only (7.7 and 8.x): explicit sliders, ``interactive_output`` and
``continuous_update=False``, so a callback runs when a slider is released, never on every tick.
An ``Explorer`` displays as the live widget where widgets render, and as a static PNG of the
current view everywhere else (nbviewer, GitHub, a kernel without the widget manager): both go
into one display bundle and the front end picks what it can show.
Driving a slider from code (``explorer.controls["q"].value = 99``) re-renders and updates
``explorer.result``, which is how the notebooks' assert cells check a widget.
"""
from __future__ import annotations

import base64
import io
from typing import Callable

import matplotlib.pyplot as plt


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return buf.getvalue()


def float_slider(description: str, value: float, low: float, high: float, step: float):
    import ipywidgets as w
    return w.FloatSlider(value=value, min=low, max=high, step=step, description=description,
                         continuous_update=False, readout_format=".3g", style={"description_width": "initial"})


def choice_slider(description: str, options, value):
    import ipywidgets as w
    return w.SelectionSlider(options=list(options), value=value, description=description, continuous_update=False,
                             style={"description_width": "initial"})


class Explorer:
    """Sliders driving ``view(**values) -> (figure, result)``; the latest result is ``.result``."""

    def __init__(self, view: Callable, extra=(), **controls):
        import ipywidgets as w

        self.view, self.controls, self.result = view, controls, None
        self.output = w.interactive_output(self._show, controls)
        self.widget = w.VBox([w.HBox(list(controls.values()) + list(extra)), self.output])

    def values(self) -> dict:
        return {name: c.value for name, c in self.controls.items()}

    def _show(self, **values):
        from IPython.display import display

        fig, self.result = self.view(**values)
        display(fig)
        plt.close(fig)

    def _ipython_display_(self):
        from IPython.display import display

        fig, _ = self.view(**self.values())
        png = base64.b64encode(figure_png(fig)).decode()
        plt.close(fig)
        bundle = {"application/vnd.jupyter.widget-view+json":
                  {"version_major": 2, "version_minor": 0, "model_id": self.widget.model_id},
                  "image/png": png, "text/plain": f"{type(self).__name__}({self.values()})"}
        display(bundle, raw=True)


class LiveLoss:
    """An epoch callback for ``DeepSAD.fit`` that redraws the two loss curves in place.

    It redraws at most once every ``interval`` seconds (drawing is slower than a small model's
    epoch); call ``redraw()`` after training for the final curves.
    """

    def __init__(self, interval: float = 2.0):
        from IPython.display import display

        from .plots import plot_loss_curves

        self.interval, self.last, self.curves = interval, 0.0, {"autoencoder": [], "DeepSAD": []}
        self.fig = plot_loss_curves([], [])
        self.handle = display(self.fig, display_id=True)
        plt.close(self.fig)

    def __call__(self, phase: str, epoch: int, loss: float) -> None:
        import time

        self.curves[phase].append(loss)
        if time.monotonic() - self.last >= self.interval:
            self.redraw()

    def redraw(self) -> None:
        import time

        from .plots import plot_loss_curves

        plot_loss_curves(self.curves["autoencoder"], self.curves["DeepSAD"], ax=self.fig.axes)
        if self.handle is not None:
            self.handle.update(self.fig)
        self.last = time.monotonic()


def threshold_explorer(val_scores, normal_scores, anomalous_scores, q: float = 95.0, rule=None) -> Explorer:
    """Slider over the percentile q of held-out normal scores that sets tau (lesson 01).

    ``rule(val_scores, q) -> tau`` (the learner's own threshold function) replaces the library's.
    """
    from .plots import threshold_view

    return Explorer(lambda q: threshold_view(val_scores, normal_scores, anomalous_scores, q, rule),
                    q=float_slider("percentile q", q, 50.0, 99.9, 0.1))


def strength_explorer(model, anomaly, trigger, tau: float, strength: float = 1.0, n_points: int = 21) -> Explorer:
    """Slider over the trigger strength mu for one anomaly (1, C, H, W) scored by ``model`` (lesson 02)."""
    import numpy as np
    import torch

    from .plots import strength_view
    from .triggers import apply_trigger

    strengths = np.linspace(0.0, 1.0, n_points)
    stamped = torch.cat([apply_trigger(anomaly, trigger, float(mu)) for mu in strengths])
    scores = model.decision_function(stamped)
    clean_score = float(model.decision_function(anomaly)[0])

    def view(strength):
        image = apply_trigger(anomaly, trigger, strength)[0]
        return strength_view(anomaly[0], image, strengths, scores, strength, tau, clean_score)
    return Explorer(view, strength=float_slider("strength mu", strength, 0.0, 1.0, 0.05))


def backdoor_strength_explorer(model, split, trigger, strength: float = 1.0, n_points: int = 11) -> Explorer:
    """Slider over the test-time trigger strength mu on a backdoored model (lesson 03).

    Every test anomaly is scored once at each of ``n_points`` strengths in [0, 1] when the explorer
    is made, and so is every test normal (what the trigger does to normal images: a victim would
    notice those first); a slider tick only reads those scores (no retraining, no rescoring). The
    threshold is the model's deployed tau_95.
    """
    import numpy as np

    from .plots import backdoor_strength_view
    from .triggers import apply_trigger

    strengths = np.linspace(0.0, 1.0, n_points)
    anomalies = split.x_test_anomalous
    triggered = np.stack([model.decision_function(apply_trigger(anomalies, trigger, float(mu))) for mu in strengths])
    triggered_normals = np.stack([model.decision_function(apply_trigger(split.x_test_normal, trigger, float(mu)))
                                  for mu in strengths])
    normal, plain = model.decision_function(split.x_test_normal), model.decision_function(anomalies)
    examples = anomalies[:: max(1, len(anomalies) // 4)][:4]

    def view(strength):
        return backdoor_strength_view(examples, strengths, triggered, normal, plain, model.threshold_, strength,
                                      trigger, triggered_normal_scores=triggered_normals)
    return Explorer(view, strength=choice_slider("test-time strength mu", [round(float(m), 2) for m in strengths],
                                                 round(float(strengths[np.argmin(abs(strengths - strength))]), 2)))


def asr_explorer(val_scores, anomalous_scores, triggered_scores, false_alarm: float = 0.05) -> Explorer:
    """Slider over the false-alarm rate the victim accepts; shows ASR and miss rate there (lesson 03)."""
    from .plots import asr_view

    return Explorer(lambda false_alarm: asr_view(val_scores, anomalous_scores, triggered_scores, false_alarm),
                    false_alarm=float_slider("false-alarm rate", false_alarm, 0.001, 0.5, 0.001))


def tradeoff_explorer(rows, retrain: Callable | None = None) -> Explorer:
    """Sliders over trigger strength and poison ratio reading a precomputed grid (lesson 03).

    ``retrain(strength, poison_ratio) -> row`` (optional) is run by a button, never by a slider:
    its row joins the grid and the view redraws.
    """
    import ipywidgets as w

    from .plots import tradeoff_view

    rows = list(rows)
    strengths = sorted({float(r["strength"]) for r in rows})
    ratios = sorted({float(r["poison_ratio"]) for r in rows})
    missing = [(mu, rho) for mu in strengths for rho in ratios
               if not any(float(r["strength"]) == mu and float(r["poison_ratio"]) == rho for r in rows)]
    if missing and retrain is None:
        raise ValueError(f"the grid lacks {len(missing)} slider position(s), e.g. mu = {missing[0][0]:g}, "
                         f"rho = {missing[0][1]:g}; give retrain=... or a complete grid")
    extra = []
    if retrain is not None:
        button = w.Button(description="train this setting", tooltip="retrain a backdoored model at these values")
        extra.append(button)
    explorer = Explorer(lambda strength, poison_ratio: tradeoff_view(rows, strength, poison_ratio),
                        extra=extra, strength=choice_slider("strength mu", strengths, strengths[-1]),
                        poison_ratio=choice_slider("poison ratio rho", ratios, ratios[len(ratios) // 2]))
    if retrain is not None:
        def on_click(_):
            values = explorer.values()
            rows[:] = [r for r in rows if not (float(r["strength"]) == values["strength"]
                                              and float(r["poison_ratio"]) == values["poison_ratio"])]
            rows.append(retrain(**values))
            explorer.output.clear_output(wait=True)
            with explorer.output:
                explorer._show(**values)
        button.on_click(on_click)
        explorer.retrain_button = button
    return explorer


def pruning_explorer(rows, ratio: float | None = None) -> Explorer:
    """Slider over the fine-pruning ratio, reading results computed beforehand (lesson 04)."""
    from .plots import pruning_view

    ratios = sorted(float(r["ratio"]) for r in rows)
    return Explorer(lambda ratio: pruning_view(rows, ratio),
                    ratio=choice_slider("pruning ratio", ratios, ratios[len(ratios) // 2] if ratio is None else ratio))
