"""Widgets and the pure views behind them: sliders driven through .value, results checked."""
import matplotlib
import numpy as np
import pytest

from badsad_lib import plots, widgets
from badsad_lib.triggers import apply_trigger, trigger_for

matplotlib.use("Agg")
RNG = np.random.default_rng(0)
VAL, NORMAL, ANOM = RNG.gamma(2, 0.1, 500), RNG.gamma(2, 0.1, 300), RNG.gamma(2, 0.5, 300)


def test_threshold_view_costs_false_alarms():
    _, loose = plots.threshold_view(VAL, NORMAL, ANOM, 80)
    _, strict = plots.threshold_view(VAL, NORMAL, ANOM, 99)
    assert strict["tau"] > loose["tau"]
    assert strict["false_alarm"] < loose["false_alarm"] and strict["detection"] <= loose["detection"]
    assert abs(loose["false_alarm"] - 0.2) < 0.12  # 300 test normals vs 500 validation draws


def test_threshold_view_legend_names_each_artist():
    fig, _ = plots.threshold_view(VAL, NORMAL, ANOM, 90)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["normal", "anomalous", "threshold tau (90th pct of normals)"]
    assert ax.lines[0].get_label().startswith("threshold tau")


def test_the_learners_threshold_rule_drives_the_view():
    _, result = plots.threshold_view(VAL, NORMAL, ANOM, 90, rule=lambda s, q: 0.0)
    assert result["tau"] == 0.0 and result["false_alarm"] == 1.0


def test_threshold_explorer_follows_its_slider():
    explorer = widgets.threshold_explorer(VAL, NORMAL, ANOM, q=95)
    explorer.controls["q"].value = 99.0
    assert explorer.result["q"] == 99.0
    assert explorer.controls["q"].continuous_update is False


def test_explorer_display_bundle_has_widget_and_static_png(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False, **kw: shown.append(obj))
    widgets.threshold_explorer(VAL, NORMAL, ANOM)._ipython_display_()
    bundle = shown[-1]
    assert "application/vnd.jupyter.widget-view+json" in bundle and len(bundle["image/png"]) > 1000


def test_asr_view_rises_as_false_alarms_fall():
    trig = RNG.gamma(2, 0.08, 300)
    _, strict = plots.asr_view(VAL, ANOM, trig, 0.01)
    _, loose = plots.asr_view(VAL, ANOM, trig, 0.3)
    assert strict["asr"] > loose["asr"] and strict["asr"] > strict["miss_rate"]


def test_strength_explorer_scores_the_triggered_image(digits_model, digits_split):
    anomaly = digits_split.x_test_anomalous[:1]
    trigger = trigger_for(anomaly)
    explorer = widgets.strength_explorer(digits_model, anomaly, trigger, digits_model.threshold_)
    explorer.controls["strength"].value = 0.5
    stamped = apply_trigger(anomaly, trigger, 0.5)
    assert explorer.result["score"] == pytest.approx(float(digits_model.decision_function(stamped)[0]), rel=1e-4)
    assert explorer.result["passes"] == (explorer.result["score"] <= digits_model.threshold_)


def test_tradeoff_and_pruning_views_pick_the_requested_row():
    rows = [{"strength": mu, "poison_ratio": rho, "asr_95": mu * rho * 5, "auc_backdoored": 0.9625 + mu * rho / 100,
             "auc_clean_model": 0.98} for mu in (0.5, 1.0) for rho in (0.05, 0.1)]
    explorer = widgets.tradeoff_explorer(rows)
    explorer.controls["strength"].value = 0.5
    assert explorer.result["strength"] == 0.5 and explorer.result["poison_ratio"] == 0.1
    fig, _ = plots.tradeoff_view(rows, 0.5, 0.1)
    ax = fig.axes[0]
    assert len(ax.get_xticks()) <= 6  # legible ticks, not "0.96250.96500.9675"
    assert {"rho = 0.05", "rho = 0.1"} <= {t.get_text() for t in ax.get_legend().get_texts()}
    with pytest.raises(ValueError, match="lacks 1 slider position"):
        widgets.tradeoff_explorer(rows[:-1])
    assert plots.tradeoff_view(rows, 0.3, 0.1)[1] is None  # not in the grid: the button trains it
    pruned = [{"ratio": r, "asr_after": 1 - r, "auc_after": 0.9} for r in (0.0, 0.5)]
    explorer = widgets.pruning_explorer(pruned)
    explorer.controls["ratio"].value = 0.0
    assert explorer.result["asr_after"] == 1.0


def test_tradeoff_button_retrains_and_adds_the_row():
    rows = [{"strength": 1.0, "poison_ratio": 0.1, "asr_95": 0.5, "auc_backdoored": 0.9, "auc_clean_model": 0.95}]
    calls = []

    def retrain(strength, poison_ratio):
        calls.append((strength, poison_ratio))
        return {"strength": strength, "poison_ratio": poison_ratio, "asr_95": 0.99, "auc_backdoored": 0.9,
                "auc_clean_model": 0.95}
    explorer = widgets.tradeoff_explorer(rows, retrain=retrain)
    explorer.retrain_button.click()
    assert calls == [(1.0, 0.1)] and explorer.result["asr_95"] == 0.99


def test_live_loss_collects_both_phases():
    live = widgets.LiveLoss(interval=0)
    live("autoencoder", 1, 2.0)
    live("DeepSAD", 1, 1.0)
    assert live.curves == {"autoencoder": [2.0], "DeepSAD": [1.0]}


def test_backdoor_strength_explorer_reads_precomputed_scores(digits_model, digits_split):
    from badsad_lib.metrics import attack_success_rate

    trigger = trigger_for(digits_split.x_train)
    explorer = widgets.backdoor_strength_explorer(digits_model, digits_split, trigger)
    scored = []
    real = digits_model.decision_function
    digits_model.decision_function = lambda x: scored.append(len(x)) or real(x)
    try:
        explorer.controls["strength"].value = 0.5
    finally:
        del digits_model.decision_function
    assert scored == []  # a slider tick rescores nothing
    stamped = apply_trigger(digits_split.x_test_anomalous, trigger, 0.5)
    want = attack_success_rate(digits_model.decision_function(stamped), digits_model.threshold_)
    assert explorer.result["strength"] == 0.5 and explorer.result["asr"] == pytest.approx(want)
    assert 0 <= explorer.result["miss_rate"] <= 1
    normals = digits_model.decision_function(apply_trigger(digits_split.x_test_normal, trigger, 0.5))
    assert explorer.result["normal_pass"] == pytest.approx(attack_success_rate(normals, digits_model.threshold_))


def test_latent_plot_and_roc_draw():
    codes = {"normal": RNG.normal(size=(50, 4)), "anomalous": RNG.normal(3, 1, size=(50, 4))}
    fig = plots.plot_latent_2d(codes, center=np.zeros(4))
    assert len(fig.axes[0].collections) == 3
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["normal", "anomalous", "center c"]
    sizes = [h.get_markersize() for h in legend.legend_handles]
    assert max(sizes) <= 2 * min(sizes)  # the star does not swamp the entries above it
    fig = plots.plot_roc(np.r_[NORMAL, ANOM], np.r_[np.zeros(300), np.ones(300)])
    assert "AUC" in fig.axes[0].get_legend().get_texts()[0].get_text()


def _all_figures(digits_split):
    rows = [{"strength": mu, "poison_ratio": rho, "asr_95": 0.5, "auc_backdoored": 0.9, "auc_clean_model": 0.95,
             "conditional_asr_95": 0.5, "miss_rate_95": 0.1} for mu in (0.5, 1.0) for rho in (0.05, 0.1)]
    x = digits_split.x_test[:4]
    trigger = trigger_for(x)
    yield plots.plot_triggered_examples(x, x)
    yield plots.plot_image_rows({"a": x})
    yield plots.plot_score_histograms(NORMAL, ANOM, ANOM / 2, 0.5)
    yield plots.plot_asr_by_strength({"0": 0.1, "1": 0.9}, 0.1)
    yield plots.plot_loss_curves([1, 0.5], [2, 1])
    yield plots.plot_roc(np.r_[NORMAL, ANOM], np.r_[np.zeros(300), np.ones(300)])
    yield plots.threshold_view(VAL, NORMAL, ANOM, 95)[0]
    yield plots.plot_latent_2d({"normal": RNG.normal(size=(20, 4))})
    yield plots.strength_view(x[0], x[0], np.linspace(0, 1, 3), np.ones(3), 0.5, 1.0, 1.0)[0]
    yield plots.backdoor_strength_view(x, np.linspace(0, 1, 3), np.stack([ANOM] * 3), NORMAL, ANOM, 0.5, 0.5,
                                       trigger, triggered_normal_scores=np.stack([NORMAL] * 3))[0]
    yield plots.asr_view(VAL, ANOM, ANOM / 2, 0.05)[0]
    yield plots.tradeoff_view(rows, 1.0, 0.1)[0]
    yield plots.pruning_view([{"ratio": 0.0, "asr_after": 1.0, "auc_after": 0.9}], 0.0)[0]
    yield plots.plot_poison_curve(rows)
    yield plots.plot_groups(rows, lambda r: f"rho {r['poison_ratio']}", title="groups")


def test_every_figure_has_a_title_and_axis_labels(digits_split):
    import matplotlib.pyplot as plt

    for fig in _all_figures(digits_split):
        titled = bool(fig._suptitle and fig._suptitle.get_text()) or all(
            ax.get_title() for ax in fig.axes if ax.get_xlabel())
        assert titled, fig
        for ax in fig.axes:
            if ax.get_xticks().size and ax.lines + ax.collections + ax.patches and not ax.images:
                assert ax.get_xlabel() and ax.get_ylabel(), (fig, ax.get_title())
        plt.close(fig)


def test_groups_differ_by_more_than_colour():
    styles = list(plots.STYLES.values())
    for key in ("marker", "linestyle", "hatch"):
        values = [str(s[key]) for s in styles]
        assert len(set(values)) == len(values), key


def test_each_course_group_has_its_own_style():
    labels = ["normal (test)", "anomalous (test)", "anomalous + trigger", "known anomalies (train)", "poisoned (train)"]
    colours = [plots.style(label)["color"] for label in labels]
    assert len(set(colours)) == len(labels)


def test_a_dot_plot_draws_every_cell_and_each_groups_mean():
    rows = [{"method": m, "asr_95": a, "miss_rate_95": 0.1} for m, a in
            (("naive", 0.1), ("naive", 0.3), ("badsad", 0.9), ("badsad", 1.0), ("skip", 0.5))]
    fig = plots.plot_groups(rows, lambda r: None if r["method"] == "skip" else r["method"], order=["badsad", "naive"],
                            title="t", ylabel="method")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["badsad", "naive"]
    means = sorted(round(float(line.get_xdata()[0]), 6) for line in ax.lines if line.get_markersize() == 7)
    assert means == [0.1, 0.1, 0.2, 0.95]  # two miss-rate means, naive's and badsad's ASR means; "skip" left out
    cells = sum(len(line.get_xdata()) for line in ax.lines if line.get_markersize() == 3)
    assert cells == 8 and [t.get_text() for t in ax.get_legend().get_texts()] == [
        "ASR@95 (triggered anomalies passing)", "miss rate@95 (no trigger)"]
