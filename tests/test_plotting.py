"""endprompt.plotting: every figure function draws from a small hand-made table and writes a PNG; plotting computes
no statistics and stands below training and the study."""

import ast
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from endprompt import plotting  # noqa: E402
from endprompt.study_tables import figure_tables  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def written(fig, name, out) -> Path:
    path = plotting.save(fig, name, out)
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 2000, name
    return path


def eval_table() -> pd.DataFrame:
    """Rows shaped like `endprompt.evaluate.evaluate`'s, for two models."""
    rows = []
    for model in ("a", "b"):
        for length in (256, 512, 1024):
            for task, suite, metric in [("niah_single_1", "synthetic", "string_match_all"),
                                        ("vt", "synthetic", "string_match_all"),
                                        ("passkey", "passkey", "exact_match"), ("passkey", "passkey", "k_max"),
                                        ("ppl", "perplexity", "ppl_sliding"), ("ppl", "perplexity", "ppl_truncated")]:
                score = 5.0 + length / 100 if suite == "perplexity" else 100.0 * (length <= 512)
                rows.append({"model": model, "suite": suite, "task": "perplexity" if task == "ppl" else task,
                             "length": length, "metric": metric, "score": score, "n": 2, "status": "ok",
                             "reason": "", "depth": np.nan})
            for depth in (0.0, 0.5, 1.0):
                rows.append({"model": model, "suite": "needle", "task": "needle", "length": length,
                             "metric": "string_match_all", "score": 100.0 * depth, "n": 1, "status": "ok",
                             "reason": "", "depth": depth})
    rows.append({**rows[0], "status": "error", "score": np.nan})  # a failed row is drawn nowhere
    return pd.DataFrame(rows)


def study_results() -> pd.DataFrame:
    """Rows shaped like `endprompt.reproduce`'s results.csv: two methods, two seeds."""
    table = eval_table()
    frames = []
    for seed in (0, 1):
        for method, model in (("endprompt", "a"), ("pi", "b")):
            trained = method != "pi"
            part = table[table["model"] == model].assign(seed=seed, method=method, train_tokens=1000 * trained,
                                                          wall_time_s=10.0 * trained + seed, peak_memory_gb=0.1)
            frames.append(part)
    out = pd.concat(frames, ignore_index=True)
    digits = out[out["metric"] == "exact_match"].assign(metric="digit_accuracy", score=60.0)
    return pd.concat([out, digits], ignore_index=True)


def test_theory_figures(tmp_path):
    bandwidth = pd.DataFrame({"rope_type": ["linear"] * 2 + ["yarn"] * 2, "s": [2, 4, 2, 4],
                              "sigma": [0.5, 0.25, 1.0, 1.0]})
    written(plotting.plot_bandwidth(bandwidth), "bandwidth", tmp_path)
    d = np.arange(0, 100)
    curves = pd.concat([pd.DataFrame({"config": c, "pair": 0, "distance": d, "normalized_score": np.cos(d / k)})
                        for c, k in (("none", 1), ("linear", 8))])
    written(plotting.plot_score_curves(curves), "curves", tmp_path)
    ratios = pd.DataFrame({"source": ["random"] * 4 + ["model"] * 4, "rope_type": ["linear", "yarn"] * 4,
                           "s": [2, 2, 4, 4] * 2, "ratio_1": np.linspace(0.5, 1, 8), "ratio_2": np.linspace(0.2, 1, 8)})
    written(plotting.plot_ratio_distributions(ratios), "ratios", tmp_path)
    coverage = pd.DataFrame({"recipe": ["endprompt", "endprompt", "full"], "lo": [0, 900, 0], "hi": [99, 1023, 1023],
                             "share_observed": [0.22, 0.22, 1.0]})
    written(plotting.plot_coverage(coverage, 1024), "coverage", tmp_path)
    ident = pd.DataFrame({"recipe": ["short", "endprompt"] * 2, "rope_type": ["linear"] * 2 + ["yarn"] * 2,
                          "head_dim": 64, "unexplained_gap": [0.9, 0.5, 0.8, 0.4], "amplification": [3.0, 80, 2, 40],
                          "gap": [100, 50, 100, 50]})
    written(plotting.plot_identifiability(ident), "ident", tmp_path)


def test_evaluation_figures(tmp_path):
    table = eval_table()
    written(plotting.plot_score_by_length(table, hue="model", train_len=256, target_len=1024), "score", tmp_path)
    written(plotting.plot_needle_heatmap(table, model="a"), "needle", tmp_path)
    written(plotting.plot_perplexity(table), "ppl", tmp_path)
    written(plotting.plot_task_bars(table, 512), "bars", tmp_path)
    with pytest.raises(ValueError, match="the table holds 2 models; pass model="):
        plotting.plot_needle_heatmap(table)


def test_formation_figure(tmp_path):
    rows = [{"key": key, "stage": stage, "step": step, "task": task, "length": length,
             "token_accuracy": float(step % 97)}
            for key, stages in (("one", [("single", 0)]), ("two", [("short", 0), ("long", 300)]))
            for stage, start in stages for step in (start + 100, start + 200, start + 300)
            for task in ("passkey", "niah_single_1") for length in (128, 256)]
    fig = plotting.plot_formation(pd.DataFrame(rows), names={"two": "two stages"})
    assert [ax.get_title() for ax in fig.axes] == ["one", "two stages"]
    assert any(t.get_text() == "second stage" for t in fig.axes[1].texts)
    assert not any(t.get_text() == "second stage" for t in fig.axes[0].texts)
    written(fig, "formation", tmp_path)


def test_study_figures_draw_the_study_tables(tmp_path):
    tables = figure_tables(study_results(), target_len=1024)
    assert set(tables) == {"scores", "digits", "tasks_at_target", "cost", "perplexity", "needle"}
    paths = plotting.study_figures(tables, 128, 1024, tmp_path, prefix="t")
    assert {p.stem for p in paths} == {"t_score_by_length", "t_passkey_digits_by_length", "t_tasks_at_target",
                                       "t_cost_vs_score", "t_perplexity", "t_needle"}
    for p in paths:
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 2000


def test_plotting_only_draws():
    """No aggregation in plotting's source and no import of training or the study."""
    source = Path(plotting.__file__).read_text()
    calls = {n.func.attr for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute)}
    assert not calls & {"groupby", "mean", "std", "median", "pivot_table", "agg", "aggregate", "quantile", "ppf"}
    code = ("import sys, endprompt.plotting; "
            "print(sorted(m for m in sys.modules if m.startswith('endprompt')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "endprompt.train" not in loaded and "endprompt.reproduce" not in loaded


def test_length_axes_show_the_evaluated_lengths_only_and_cost_labels_do_not_overlap(tmp_path):
    # issue 13: log-x axes showed "2x10^2 256 3x10^2" overlapping; cost labels overlapped when methods cost alike
    results = study_results()
    figs = plotting.study_figures(figure_tables(results, 1024), 256, 1024, tmp_path, prefix="t")
    assert len(figs) >= 5
    fig, ax = plotting._by_length(figure_tables(results, 1024)["scores"], 256, 1024, "score")
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
    assert labels == ["256", "512", "1024"] and not [t for t in ax.get_xticklabels(minor=True) if t.get_text()]
    assert {t.get_text() for t in ax.texts} >= {"L0 (training)", "4 L0 (target)"}
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    xs, ys = np.array([100.0, 101, 102, 300]), np.array([8.0, 8.05, 8.1, 2])
    ax.scatter(xs, ys)
    plotting.label_points(ax, xs, ys, ["endprompt", "endprompt-random", "full", "pi"])
    fig.canvas.draw()
    from matplotlib.text import Text

    boxes = [Text.get_window_extent(t) for t in ax.texts]  # the words themselves, not an annotation's leader line
    assert len(boxes) == 4
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_method_colors_keep_a_dozen_methods_apart():
    methods = pd.Series([f"m{i:02d}" for i in range(14)] * 2)
    colors = plotting.method_colors(methods)
    assert colors["hue_order"] == sorted(set(methods))
    assert len(set(colors["palette"].values())) == 14  # no colour shared
    again = plotting.method_colors(methods[::-1])  # the same method keeps its colour whatever the row order
    assert again["palette"] == colors["palette"]


def test_learning_curve_axes_are_labelled_at_the_measured_points_only():
    from endprompt.study_tables import curve_table

    rows = []
    for method, tokens, wall in (("full", 8.192e6, 1466.0), ("endprompt", 6.7e6, 700.0)):
        for fraction in (0.125, 0.25, 0.5, 1.0):
            common = {"method": method, "seed": 0, "length": 2048, "status": "ok", "budget_fraction": fraction,
                      "train_tokens": tokens * fraction, "wall_time_s": wall * fraction}
            rows += [{**common, "task": "passkey", "metric": "digit_accuracy", "score": 100 * fraction},
                     {**common, "task": "perplexity", "metric": "ppl_sliding", "score": 50 - 10 * fraction}]
    fig = plotting.plot_learning_curves(curve_table(pd.DataFrame(rows), 2048), 2048)
    fig.canvas.draw()
    tokens_ax, time_ax = fig.axes[0], fig.axes[1]
    labels = [t.get_text() for t in tokens_ax.get_xticklabels() if t.get_text()]
    # full-length's 1.0M, 2.0M, 4.1M and 8.2M are within 1.3x of endprompt's points and stay unlabelled
    assert labels == ["0.84M", "1.7M", "3.4M", "6.7M"], labels
    assert not [t for t in tokens_ax.get_xticklabels(minor=True) if t.get_text()]
    assert tokens_ax.get_xscale() == "log" and time_ax.get_xscale() == "log"
    digits_ax = fig.axes[2] if "digit" in fig.axes[2].get_ylabel() else fig.axes[0]
    assert digits_ax.get_ylim() == (-3, 103) and "chance (10%)" in {t.get_text() for t in digits_ax.texts}


def test_learning_curves_are_drawn_at_the_length_asked_and_say_which():
    # the random placement traded L0's passkey for the target's: the same curves at L0 must be drawable, titled so
    from endprompt.study_tables import curve_table

    rows = [{"method": "full", "seed": 0, "length": length, "status": "ok", "budget_fraction": fraction,
             "train_tokens": 8e6 * fraction, "wall_time_s": 1000 * fraction, "task": "passkey", "metric": "accuracy",
             "score": score * fraction}
            for length, score in ((256, 100.0), (2048, 40.0)) for fraction in (0.25, 0.5, 1.0)]
    curves = pd.DataFrame(rows)
    for length, where, top in ((2048, "the target length", 40.0), (256, "L0 =", 100.0)):
        fig = plotting.plot_learning_curves(curve_table(curves, length), length, where)
        assert fig.get_suptitle().startswith(f"Learning curves at {where} {length} "), fig.get_suptitle()
        assert max(fig.axes[0].lines[0].get_ydata()) == top  # the scores of that length, not another's


def test_learning_curve_tick_labels_never_overlap():
    # study-bpe's wall-time axis printed "1276" into "1682": measured times 1.3x apart on a narrow log axis
    from endprompt.study_tables import curve_table

    rows = []
    arms = (("full", 8.2e6, 1682.0), ("endprompt-eot", 7.6e6, 1276.0), ("full-yarn", 8.2e6, 3057.0),
            ("pose", 8.2e6, 1490.0), ("endprompt", 7.8e6, 936.0))
    for method, tokens, wall in arms:
        for fraction in (0.125, 0.25, 0.5, 1.0):
            common = {"method": method, "seed": 0, "length": 2048, "status": "ok", "budget_fraction": fraction,
                      "train_tokens": tokens * fraction, "wall_time_s": wall * fraction}
            rows.append({**common, "task": "passkey", "metric": "digit_accuracy", "score": 100 * fraction})
    fig = plotting.plot_learning_curves(curve_table(pd.DataFrame(rows), 2048), 2048)
    fig.canvas.draw()
    for ax in fig.axes[:2]:
        shown = [t for t in ax.get_xticklabels() if t.get_text()]
        boxes = [t.get_window_extent() for t in shown]
        assert len(shown) >= 3, [t.get_text() for t in shown]
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]), \
            [t.get_text() for t in shown]
    time_labels = [t.get_text() for t in fig.axes[1].get_xticklabels() if t.get_text()]
    assert time_labels[0] == "117" and time_labels[-1] == "3057", time_labels  # the extremes measured stay labelled


def test_crowded_tick_labels_are_blanked_in_screen_order_keeping_ticks():
    import matplotlib.pyplot as plt

    fig, (ax, inverted, hidden) = plt.subplots(1, 3, figsize=(6, 2))
    values = [100, 110, 120, 400, 410, 1000]
    for a in (ax, inverted, hidden):
        a.plot(values, values)
        a.set_xscale("log")
        plotting.label_values(a, values, lambda v: f"{v:.0f}", min_ratio=1.0)
    inverted.invert_xaxis()
    hidden.tick_params(labelbottom=False)
    for a in (ax, inverted, hidden):
        plotting.drop_crowded_tick_labels(a)
    fig.canvas.draw()
    for a in (ax, inverted):
        shown = [t for t in a.get_xticklabels() if t.get_text()]
        boxes = [t.get_window_extent() for t in shown]
        assert len(shown) >= 3 and not any(b.overlaps(c) for i, b in enumerate(boxes) for c in boxes[i + 1 :])
        assert {"100", "1000"} <= {t.get_text() for t in shown}  # the extremes measured stay
        assert len(a.get_xticks()) == len(values)  # every tick (and grid line) stays; only labels go
    assert not [t for t in hidden.get_xticklabels() if t.get_visible() and t.get_text()]  # hidden stays hidden
