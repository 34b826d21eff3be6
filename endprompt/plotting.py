"""Seaborn figures from endprompt's tidy DataFrames, in one style, saved under ``figures/``.

Computation lives in the modules that return the DataFrames (`endprompt.bound_tables`, `endprompt.evaluate`,
`endprompt.study_tables`); these functions only select rows, reshape and draw (seaborn draws means and intervals).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

from endprompt.study_tables import AUX_METRICS, ok_rows

__all__ = ["set_style", "figures_dir", "save", "label_lengths", "label_values", "drop_crowded_tick_labels",
           "mark_lengths", "plain_log_axis", "label_points", "plot_bandwidth", "plot_score_curves",
           "plot_ratio_distributions", "plot_coverage", "plot_identifiability", "plot_score_by_length",
           "plot_needle_heatmap", "plot_perplexity", "plot_task_bars", "study_figures", "plot_learning_curves",
           "plot_formation"]

PALETTE = "colorblind"


def set_style() -> None:
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE, font_scale=0.95)


def figures_dir() -> Path:
    """``$ENDPROMPT_FIGURES`` if set, else ``figures/`` of the repository (or of the working directory)."""
    if os.environ.get("ENDPROMPT_FIGURES"):
        return Path(os.environ["ENDPROMPT_FIGURES"])
    repo = Path(__file__).resolve().parent.parent
    return repo / "figures" if (repo / "pyproject.toml").exists() else Path.cwd() / "figures"


def save(fig: plt.Figure, name: str, out_dir: str | Path | None = None, dpi: int = 130) -> Path:
    """Write ``fig`` as ``<out_dir>/<name>.png`` and return the path."""
    out = Path(out_dir) if out_dir is not None else figures_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def label_lengths(ax, lengths, axis: str = "x") -> None:
    """Ticks of a log length axis at the evaluated ``lengths`` only, labelled as integers (a log axis otherwise adds
    minor labels such as "2x10^2" and "3x10^2" beside "256", which overlap)."""
    ticks = sorted({int(x) for x in lengths})
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_minor_locator(NullLocator())
    target.set_minor_formatter(NullFormatter())
    (ax.set_xticks if axis == "x" else ax.set_yticks)(ticks, [str(x) for x in ticks])


def label_values(ax, values, fmt, axis: str = "x", min_ratio: float = 1.3) -> None:
    """Ticks of a log axis at measured ``values`` only, formatted by ``fmt``; a value within ``min_ratio`` of the last
    kept tick is left unlabelled, so that points measured close together (one method's tokens against another's at
    the same budget fraction) do not overlap."""
    ticks = []
    for v in sorted({float(x) for x in values if np.isfinite(x) and x > 0}):
        if not ticks or v / ticks[-1] >= min_ratio:
            ticks.append(v)
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_minor_locator(NullLocator())
    target.set_minor_formatter(NullFormatter())
    (ax.set_xticks if axis == "x" else ax.set_yticks)(ticks, [fmt(v) for v in ticks])


def drop_crowded_tick_labels(ax, axis: str = "x", pad_pt: float = 6.0) -> None:
    """Blank a major tick label that would not clear the last shown one by ``pad_pt`` points, measured on the drawn
    figure (so after the layout is final): measured values close together on a narrow axis, such as wall times of 1276
    and 1682 s, would otherwise print into each other. Ticks and grid lines stay; labels are taken in screen order (an
    inverted axis too); the first and last measured values stay labelled when they can."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    target = ax.xaxis if axis == "x" else ax.yaxis
    ticks = target.get_major_ticks()
    locs = [t.get_loc() for t in ticks]
    texts = [t.label1.get_text() if t.label1.get_visible() else "" for t in ticks]
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())

    def span(i: int) -> tuple[float, float]:
        box = ticks[i].label1.get_window_extent(renderer)
        return (box.x0, box.x1) if axis == "x" else (box.y0, box.y1)

    shown = sorted((i for i, v in enumerate(locs) if texts[i] and lo <= v <= hi), key=lambda i: span(i)[0])
    pad = pad_pt * fig.dpi / 72.0
    keep: list[int] = []
    for i in shown:
        if keep and span(i)[0] < span(keep[-1])[1] + pad:
            if i == shown[-1] and len(keep) > 1 and span(i)[0] >= span(keep[-2])[1] + pad:
                keep[-1] = i  # the last measured value outranks the one before it
            continue
        keep.append(i)
    kept = set(keep)
    (ax.set_xticks if axis == "x" else ax.set_yticks)(locs, [t if i in kept else "" for i, t in enumerate(texts)])


def _tokens(v: float) -> str:
    return f"{v / 1e6:.2g}M" if v >= 1e5 else f"{v / 1e3:.2g}K"


def mark_lengths(ax, marks: list[tuple[int, str]]) -> None:
    """Dotted vertical lines at named lengths (the training length, the target), labelled inside the plot's top edge
    (clear of the title)."""
    for x, label in marks:
        if x:
            ax.axvline(x, color="0.5", ls=":", lw=1)
            ax.text(x, 0.985, label, transform=ax.get_xaxis_transform(), ha="center", va="top", fontsize=8,
                    color="0.3", bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1})


def plain_log_axis(ax, axis: str = "y") -> None:
    """A log axis labelled in plain numbers at 1, 2 and 5 times the powers of ten (not "10^1" alone)."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def label_points(ax, xs, ys, labels, fontsize: int = 7) -> None:
    """Label scatter points without overlaps: each label starts right of its point and moves up or down, in display
    space, to the nearest free place (greedy, in order of y); a thin line joins a moved label to its point."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    placed = []
    order = np.argsort(np.asarray(ys, dtype=float), kind="stable")
    for i in order:
        x, y, label = xs[i], ys[i], labels[i]
        px, py = ax.transData.transform((x, y))
        text = ax.annotate(label, (x, y), xytext=(5, 0), textcoords="offset points", fontsize=fontsize,
                           va="center")
        box = text.get_window_extent(renderer)
        step = box.height * 1.05
        for k in range(200):  # 0, +1, -1, +2, -2, ... label heights away from the point
            shift = ((k + 1) // 2) * step * (1 if k % 2 else -1) if k else 0.0
            moved = box.translated(0, shift)
            if not any(moved.overlaps(other) for other in placed):
                break
        placed.append(moved)
        if shift:
            dy = shift * 72.0 / fig.dpi
            text.remove()
            ax.annotate(label, (x, y), xytext=(5, dy), textcoords="offset points", fontsize=fontsize, va="center",
                        arrowprops={"arrowstyle": "-", "color": "0.35", "lw": 0.6})


def plot_bandwidth(table: pd.DataFrame) -> plt.Figure:
    """sigma against the factor s per scaling type (`bound_tables.bandwidth_table`), with theta_0/s for reference."""
    set_style()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    sns.lineplot(data=table, x="s", y="sigma", hue="rope_type", style="rope_type", markers=True, dashes=False, ax=ax)
    s = np.sort(table["s"].unique())
    ax.plot(s, 1 / s, color="0.4", lw=0.8, ls=":", label=r"$\theta_0/s$")
    ax.set(xscale="log", yscale="log", xlabel="scale factor s", ylabel=r"bandwidth $\sigma=\max_j\theta_j$",
           title="Only PI lowers the top frequency (L2)")
    ax.set_xticks(s, [f"{x:g}" for x in s])
    ax.legend(fontsize=8)
    return fig


def plot_score_curves(curves: pd.DataFrame, pair: int = 0) -> plt.Figure:
    """S(d)/sum|c_j| over the distance, one panel per configuration (from `bound_tables.score_curves`)."""
    set_style()
    data = curves[curves["pair"] == pair]
    configs = list(dict.fromkeys(data["config"]))
    fig, axes = plt.subplots(len(configs), 1, figsize=(8, 1.4 * len(configs) + 0.6), sharex=True, sharey=True)
    for ax, (config, color) in zip(np.atleast_1d(axes), zip(configs, sns.color_palette(PALETTE, len(configs)))):
        sub = data[data["config"] == config]
        ax.plot(sub["distance"], sub["normalized_score"], lw=0.5, color=color)
        ax.set_ylabel(config, rotation=0, ha="right", va="center", fontsize=9)
    np.atleast_1d(axes)[-1].set_xlabel("relative distance d")
    fig.suptitle(r"One query/key pair: $S(d)/\sum_j|c_j|$ under each scaling", fontsize=11)
    return fig


def plot_ratio_distributions(study: pd.DataFrame) -> plt.Figure:
    """Observed/bound ratios of Eq. 3 (`bound_tables.bernstein_study`): first and second order, per scaling and s."""
    set_style()
    long = study.melt(id_vars=["source", "rope_type", "s"], value_vars=["ratio_1", "ratio_2"], var_name="order",
                      value_name="ratio")
    long["order"] = long["order"].map({"ratio_1": r"$\max|S'|/(\sigma\,\sup|S|)$",
                                       "ratio_2": r"$\max|S''|/(\sigma^2\sup|S|)$"})
    g = sns.catplot(data=long, x="rope_type", y="ratio", hue="s", row="source", col="order", kind="box",
                    fliersize=1, linewidth=0.7, height=3.0, aspect=1.6, palette="crest")
    for ax in g.axes.flat:
        ax.axhline(1.0, color="firebrick", lw=1, ls="--")
        ax.set_xlabel("")
    g.set_titles("{row_name} | {col_name}")
    g.figure.suptitle("Bernstein's inequality (Eq. 3): every ratio <= 1", y=1.02)
    return g.figure


def plot_coverage(coverage: pd.DataFrame, target_len: int) -> plt.Figure:
    """Observed relative distances of each recipe in [0, L-1] (from `bound_tables.coverage_table`)."""
    set_style()
    recipes = list(dict.fromkeys(coverage["recipe"]))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(recipes) + 1.2))
    colors = sns.color_palette(PALETTE, len(recipes))
    for i, recipe in enumerate(recipes):
        sub = coverage[coverage["recipe"] == recipe]
        ax.broken_barh(list(zip(sub["lo"], sub["hi"] - sub["lo"] + 1)), (i - 0.35, 0.7), color=colors[i])
        ax.text(target_len * 1.01, i, f"{sub['share_observed'].iloc[0]:.1%}", va="center", fontsize=8)
    ax.set(yticks=range(len(recipes)), yticklabels=recipes, xlim=(0, target_len), xlabel="relative distance d",
           title=f"Distances observed during training (L5), L = {target_len}")
    ax.invert_yaxis()
    return fig


def plot_identifiability(table: pd.DataFrame) -> plt.Figure:
    """Undetermined share of the gap and error amplification per recipe (from `bound_tables.identifiability_table`)."""
    set_style()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    data = table.assign(config=table["rope_type"] + ", D=" + table["head_dim"].astype(str))
    sns.barplot(data=data, x="recipe", y="unexplained_gap", hue="config", ax=axes[0])
    axes[0].set(ylabel="share of gap score undetermined", xlabel="", title="What the observed distances leave free")
    amp = data[data["gap"] > 0]
    sns.barplot(data=amp, x="recipe", y="amplification", hue="config", ax=axes[1])
    axes[1].set(yscale="log", ylabel="RMS error amplification", xlabel="", title="Conditioning of the determined part")
    for ax in axes:
        ax.tick_params(axis="x", rotation=25)
        ax.legend(fontsize=7)
    fig.suptitle("Identifiability of the score on the gap (L6)", y=1.02)
    return fig


# --- evaluation -------------------------------------------------------------------------------------------------------


def plot_score_by_length(table: pd.DataFrame, hue: str = "model", train_len: int | None = None,
                         target_len: int | None = None) -> plt.Figure:
    """Mean RULER-style score over tasks at each length, one line per ``hue`` (e.g. method), from `evaluate` rows.

    ``train_len`` and ``target_len`` draw the training and target lengths as vertical lines."""
    set_style()
    data = ok_rows(table[table["suite"].isin(["ruler", "synthetic"])])
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=data, x="length", y="score", hue=hue, style=hue, markers=True, dashes=False, errorbar=None,
                 ax=ax)
    ax.set(xscale="log", ylim=(-2, 105), xlabel="context length (tokens)", ylabel="mean score over tasks")
    label_lengths(ax, data["length"].unique())
    mark_lengths(ax, [(train_len, "training length"), (target_len, "target length")])
    ax.legend(fontsize=8)
    return fig


def plot_needle_heatmap(table: pd.DataFrame, model: str | None = None) -> plt.Figure:
    """Needle retrieval score over depth x length (rows of task "needle")."""
    set_style()
    data = ok_rows(table[table["task"] == "needle"])
    if model is not None:
        data = data[data["model"] == model]
    if data["model"].nunique() > 1:
        raise ValueError(f"the table holds {data['model'].nunique()} models; pass model= to draw one of them")
    grid = data.pivot(index="depth", columns="length", values="score")  # one evaluation row per cell
    fig, ax = plt.subplots(figsize=(1.0 * grid.shape[1] + 2.5, 0.5 * grid.shape[0] + 1.5))
    sns.heatmap(grid, vmin=0, vmax=100, cmap="RdYlGn", annot=True, fmt=".0f", cbar_kws={"label": "score"}, ax=ax)
    ax.set(xlabel="context length (tokens)", ylabel="needle depth",
           title="Needle in a haystack" + (f": {model}" if model else ""))
    ax.set_yticklabels([f"{float(t.get_text()):.0%}" for t in ax.get_yticklabels()], rotation=0)
    return fig


def plot_perplexity(table: pd.DataFrame, hue: str = "model") -> plt.Figure:
    """Perplexity by length, one panel per form (truncated prefix / sliding window)."""
    set_style()
    data = ok_rows(table[table["task"] == "perplexity"])
    g = sns.relplot(data=data, x="length", y="score", hue=hue, col="metric", kind="line", marker="o", height=3.4,
                    aspect=1.2, facet_kws={"sharey": False})
    for ax in g.axes.flat:
        ax.set(xscale="log", yscale="log", xlabel="context length (tokens)", ylabel="perplexity")
        label_lengths(ax, data["length"].unique())
        plain_log_axis(ax)
    g.set_titles("{col_name}")
    return g.figure


def plot_task_bars(table: pd.DataFrame, length: int, hue: str = "model") -> plt.Figure:
    """Per-task scores at one length."""
    set_style()
    data = ok_rows(table[(table["length"] == length) & table["suite"].isin(["ruler", "synthetic", "passkey", "mqar"])
                     & ~table["metric"].isin(AUX_METRICS)])
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * data["task"].nunique() + 2), 3.8))
    sns.barplot(data=data, x="task", y="score", hue=hue, ax=ax)
    ax.set(ylim=(0, 105), xlabel="", ylabel="score", title=f"Per-task scores at length {length}")
    ax.tick_params(axis="x", rotation=30)
    return fig


# --- the small-scale study (tables from endprompt.study_tables) ------------------------------------------------------


def _by_length(data: pd.DataFrame, L0: int, target_len: int, ylabel: str, percent: bool = True):
    """One line per method over length (95% interval over seeds), L0 and the target marked; scores in percent on a
    linear axis, else (perplexity) on a log axis."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    sns.lineplot(data=data, x="length", y="score", hue="method", style="method", markers=True, dashes=False,
                 errorbar=("ci", 95), ax=ax, **method_colors(data["method"]))
    ax.set(xscale="log", xlabel="context length (tokens)", ylabel=ylabel)
    if percent:
        ax.set(ylim=(-2, 106))
    else:
        ax.set(yscale="log")
        plain_log_axis(ax)
    label_lengths(ax, data["length"].unique())
    mark_lengths(ax, [(L0, "L0 (training)"), (target_len, f"{target_len // L0} L0 (target)")])
    ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig, ax


def method_colors(methods: pd.Series) -> dict:
    """``hue_order`` and ``palette`` for a plot with one hue per method: sorted names, tab20's ten dark colours then its
    light ones, so that a dozen methods stay apart (seaborn's default would cycle ten colours or fall back to husl)."""
    order = sorted(pd.unique(methods))
    tab = sns.color_palette("tab20", 20)
    colors = tab[0::2] + tab[1::2]
    return {"hue_order": order, "palette": {m: colors[i % 20] for i, m in enumerate(order)}}


def study_figures(tables: dict[str, pd.DataFrame], L0: int, target_len: int, out_dir=None,
                  prefix: str = "02") -> list:
    """Draw the study's tables (`endprompt.study_tables.figure_tables`): retrieval score, passkey digit accuracy and
    held-out perplexity by length per method, per-task scores at the target, cost vs score, needle heatmaps; saved,
    paths returned."""
    set_style()
    paths = []
    fig, ax = _by_length(tables["scores"], L0, target_len, "retrieval score (mean of tasks)")
    paths.append(save(fig, f"{prefix}_score_by_length", out_dir))

    if "digits" in tables:
        digits = tables["digits"]
        fig, ax = _by_length(digits, L0, target_len, "passkey digit accuracy (%)")
        ax.axhline(10, color="0.6", ls="--", lw=1)
        ax.text(0.995, 10, "chance (10%)", transform=ax.get_yaxis_transform(), ha="right", va="center", fontsize=8,
                color="0.3", bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1})
        paths.append(save(fig, f"{prefix}_passkey_digits_by_length", out_dir))

    if "tasks_at_target" in tables:
        grid = tables["tasks_at_target"].pivot(index="method", columns="task", values="score")
        fig, ax = plt.subplots(figsize=(1.3 * grid.shape[1] + 2.5, 0.45 * grid.shape[0] + 1.2))
        sns.heatmap(grid, vmin=0, vmax=100, cmap="RdYlGn", annot=True, fmt=".0f", ax=ax, cbar_kws={"label": "score"})
        ax.set(title=f"Per-task scores at the target length {target_len}", xlabel="", ylabel="")
        paths.append(save(fig, f"{prefix}_tasks_at_target", out_dir))

    if "cost" in tables:
        cost = tables["cost"]
        fig, ax = plt.subplots(figsize=(6.5, 4))
        sns.scatterplot(data=cost, x="wall_time_s", y="score", hue="method", s=80, ax=ax, legend=False,
                        **method_colors(cost["method"]))
        ax.set(xlabel="training wall time (s, matched token budget)",
               ylabel=f"{cost['label'].iloc[0]} at {target_len}", title="Cost vs score")
        ax.margins(x=0.25, y=0.12)
        ax.set_xlim(left=-0.05 * max(cost["wall_time_s"].max(), 1.0))  # room for the labels, no negative times
        label_points(ax, cost["wall_time_s"].to_numpy(), cost["score"].to_numpy(), cost["method"].tolist())
        paths.append(save(fig, f"{prefix}_cost_vs_score", out_dir))

    if "perplexity" in tables:
        fig, ax = _by_length(tables["perplexity"], L0, target_len, "held-out perplexity (sliding window)",
                             percent=False)
        ax.set(title="Perplexity by length")
        paths.append(save(fig, f"{prefix}_perplexity", out_dir))

    if "needle" in tables:
        g = sns.FacetGrid(tables["needle"], col="method", col_wrap=4, height=2.4, aspect=1.1)

        def draw(data, **kw):
            sns.heatmap(data.pivot(index="depth", columns="length", values="score"), vmin=0, vmax=100,
                        cmap="RdYlGn", cbar=False, annot=True, fmt=".0f", annot_kws={"fontsize": 6})

        g.map_dataframe(draw)
        g.set_titles("{col_name}")
        g.figure.suptitle("Needle retrieval, depth x length", y=1.02)
        paths.append(save(g.figure, f"{prefix}_needle", out_dir))
    plt.close("all")
    return paths


def plot_learning_curves(curves: pd.DataFrame, length: int, where: str = "the target length") -> plt.Figure:
    """Learning curves at one length, by default the target (`endprompt.study_tables.curve_table` at ``length``;
    ``where`` names it in the title, e.g. ``"L0 ="``): one row per measure, against physical
    training tokens (left) and training wall time (right), both on log axes labelled at the measured points, one line
    per method with its 95% interval over seeds; percentages on 0-100 axes, the chance level of a digit labelled."""
    set_style()
    measures = list(dict.fromkeys(curves["measure"]))
    colors = method_colors(curves["method"])
    fig, axes = plt.subplots(len(measures), 2, figsize=(11, 2.8 * len(measures) + 0.6), squeeze=False)
    for row, measure in enumerate(measures):
        data = curves[curves["measure"] == measure]
        for col, (x, xlabel, fmt) in enumerate((("train_tokens", "physical training tokens", _tokens),
                                                ("wall_time_s", "training wall time (s)", lambda v: f"{v:.0f}"))):
            ax = axes[row, col]
            sns.lineplot(data=data, x=x, y="score", hue="method", style="method", markers=True, dashes=False,
                         errorbar=("ci", 95), ax=ax, legend=(row == 0 and col == 1), **colors)
            ax.set(xscale="log", xlabel=xlabel if row == len(measures) - 1 else "",
                   ylabel=measure if col == 0 else "")
            label_values(ax, data[x], fmt)
            if "perplexity" in measure:
                ax.set(yscale="log")
                plain_log_axis(ax)
            elif "%" in measure:
                ax.set(ylim=(-3, 103))
            if "digit" in measure:
                ax.axhline(10, color="0.6", ls="--", lw=1)
                ax.text(0.995, 10, "chance (10%)", transform=ax.get_yaxis_transform(), ha="right", va="bottom",
                        fontsize=7, color="0.3")
    if axes[0, 1].get_legend() is not None:
        axes[0, 1].legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"Learning curves at {where} {length} (95% interval over seeds)", y=1.0)
    fig.tight_layout()
    for ax in axes.flat:
        drop_crowded_tick_labels(ax)
    return fig


def plot_formation(table: pd.DataFrame, names: dict[str, str] | None = None) -> plt.Figure:
    """Retrieval forming over pretraining (`endprompt.evaluate.answer_probe.checkpoint_curve` rows, with ``key`` and
    ``stage``): teacher-forced answer-token accuracy against the pretraining step, one panel per base (``names`` maps
    keys to titles), one colour per task and one line style per prompt length; the first-stage/second-stage boundary
    and the chance level of a digit (10%) are marked."""
    set_style()
    keys = list(dict.fromkeys(table["key"]))
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 3.6), squeeze=False, sharey=True)
    for ax, key in zip(axes[0], keys):
        data = table[table["key"] == key].assign(length=lambda d: d["length"].astype(str))
        sns.lineplot(data=data, x="step", y="token_accuracy", hue="task", style="length", markers=True, ax=ax,
                     legend=ax is axes[0, -1])
        ax.axhline(10, color="0.6", ls="--", lw=1)
        ax.text(ax.get_xlim()[0], 10, " chance (one digit in ten)", va="bottom", fontsize=7, color="0.4")
        if {"short", "long"} <= set(data["stage"]):
            mark_lengths(ax, [(data.loc[data["stage"] == "short", "step"].max(), "second stage")])
        ax.set(title=(names or {}).get(key, key), xlabel="pretraining step", ylabel="answer tokens right (%)",
               ylim=(0, 102))
    if axes[0, -1].get_legend() is not None:
        sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    fig.tight_layout()
    return fig
