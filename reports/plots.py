"""Figures drawn from the frontier DataFrames: zipped size against the objective, accuracy against rank.

Figures are built with matplotlib's object API on an Agg canvas (no pyplot, no global state), at a
fixed pixel size so the report page lays out the same every time.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sweep.sizing import MIB
from sweep.objective import Objective
from sweep.settings import StudyConfig
from trainers.grading import point_marks
from trainers.training import KINDS

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
PARETO_INCHES = (11.0, 6.5)
RANKS_INCHES = (11.0, 4.8)
PARETO_PIXELS = (int(PARETO_INCHES[0] * DPI), int(PARETO_INCHES[1] * DPI))  # width, height
RANKS_PIXELS = (int(RANKS_INCHES[0] * DPI), int(RANKS_INCHES[1] * DPI))
EMPTY = "no graded trials yet"


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes at its own size (no tight cropping, so the pixel size is fixed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _figure(inches: tuple[float, float]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=inches, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


@dataclass(frozen=True)
class ParetoAxis:
    """What the Pareto plot's y axis shows: the objective, or, where every pair that fits scores the same
    points, the quantity that breaks their tie (answer NLL, else mean accuracy)."""

    quantity: str  # OBJECTIVE, TIE_NLL or TIE_ACCURACY
    label: str  # with unit
    range_label: str  # what the error bars span
    inverted: bool  # lower is better: drawn upside down, so better is up on every plot
    why: str | None  # one line under the title when the axis is not the objective itself


@dataclass(frozen=True)
class ParetoData:
    """Everything the Pareto plot draws, computed before drawing (tests read this, not pixels).

    `points` has one row per drawable pair: size_mib, y, y_low, y_high (in the axis's unit), on_frontier,
    feasible, sampled, sft_rank, rft_rank, sft_alpha, rft_alpha; `left_out` counts pairs without a value
    (graded without an answer NLL, under answer-nll).
    """

    axis: ParetoAxis
    points: pd.DataFrame
    budget_mib: float
    pruned_mib: list[float]  # predicted sizes of trials pruned as over budget (never trained)
    left_out: int


OBJECTIVE, TIE_NLL, TIE_ACCURACY = "objective", "answer NLL", "mean accuracy"
Z95 = 1.96


def pareto_data(pairs: pd.DataFrame, trials: pd.DataFrame, goal: Objective, budget_bytes: int) -> ParetoData:
    """The Pareto plot's data: which quantity the y axis shows, and each pair's value and 95% range in it."""
    import pandas as pd

    axis = _axis(pairs, goal)
    if axis.quantity == TIE_NLL:
        nll, se = pairs["answer_nll"], pairs["answer_nll_se"].fillna(0)
        y, low, high = nll, nll - Z95 * se, nll + Z95 * se
    elif axis.quantity == TIE_ACCURACY:
        y = pairs["mean_accuracy"] * 100
        low, high = (pairs["sft_ci_low"] + pairs["rft_ci_low"]) * 50, (pairs["sft_ci_high"] + pairs["rft_ci_high"]) * 50
    else:
        y, low, high = (pairs[c] * goal.scale for c in ("objective", "objective_low", "objective_high"))
    columns = ["size_mib", "on_frontier", "feasible", "sampled", "sft_rank", "rft_rank", "sft_alpha", "rft_alpha"]
    # The pick and the rivals the paired test cannot tell from it (reports.build.marked_pairs), where marked.
    marks = {c: pairs[c].astype(bool) if c in pairs else False for c in ("is_pick", "indistinct")}
    table = pairs[columns].assign(y=y, y_low=low, y_high=high, **marks)
    drawable = table["y"].notna()
    skipped = trials[trials["skipped"] == "over-budget"]
    pruned = pd.to_numeric(skipped["size_bytes_predicted"], errors="coerce").dropna() / MIB
    return ParetoData(axis, table[drawable].reset_index(drop=True), budget_bytes / MIB,
                      [float(v) for v in pruned], int((~drawable).sum()))


def _axis(pairs: pd.DataFrame, goal: Objective) -> ParetoAxis:
    """The objective, unless it is points and the pairs that fit (all pairs when none fits) score the same
    points: then the tie-break, which is what the pick is made on, answer NLL where every such pair has one."""
    minimised = goal.sign < 0
    objective = ParetoAxis(OBJECTIVE, goal.label,
                           "95% range (answer NLL ± 1.96 SE)" if goal.name == "answer-nll"
                           else "95% range (Wilson bounds of both adapters)", minimised,
                           "Lower is better: the axis is drawn upside down" if minimised else None)
    if goal.name != "points" or pairs.empty:
        return objective
    deciding = pairs[pairs["feasible"]] if pairs["feasible"].any() else pairs
    if deciding["points"].nunique() > 1:
        return objective
    count = "the only pair" if len(deciding) == 1 else f"all {len(deciding)} pairs"
    fits = " that fits" if len(deciding) == 1 else " that fit"
    flat = f"{count}{fits if pairs['feasible'].any() else ''} score {deciding['points'].iloc[0]:.2f} points"
    if deciding["answer_nll"].notna().all():
        return ParetoAxis(TIE_NLL, "mean answer NLL of the pair (nats per token, lower is better)",
                          "95% range (answer NLL ± 1.96 SE)", True,
                          f"{flat[0].upper()}{flat[1:]}: shown by the answer NLL that breaks the tie (axis upside down)")
    return ParetoAxis(TIE_ACCURACY, "mean of SFT and RFT accuracy (%)", "95% range (Wilson bounds of both adapters)",
                      False, f"{flat[0].upper()}{flat[1:]}: shown by the mean accuracy that breaks the tie")


def pareto_figure(pairs: pd.DataFrame, trials: pd.DataFrame, goal: Objective, budget_bytes: int,
                  title: str) -> Figure:
    """Zipped size (MiB) against the objective (or its tie-break where points are flat): every pair,
    infeasible ones apart, trained trials apart from computed pairs, the frontier as a step line with rank
    labels, 95% ranges, and the budget line."""
    return draw_pareto(pareto_data(pairs, trials, goal, budget_bytes), title)


def draw_pareto(data: ParetoData, title: str) -> Figure:
    """The figure of `pareto_data`'s result."""
    fig = _figure(PARETO_INCHES)
    ax = fig.add_subplot()
    axis, pairs, budget = data.axis, data.points, data.budget_mib
    ax.axvline(budget, color="#b22222", linestyle="--", linewidth=1.2, label=f"budget {budget:.2f} MiB")
    ax.set_xlabel("zipped submission size (MiB)")
    ax.set_ylabel(axis.label)
    subtitle = [axis.why] if axis.why else []
    if data.left_out:
        subtitle.append(f"{data.left_out} pair(s) graded without an answer NLL are not drawn")
    ax.set_title("\n".join([title, *subtitle]), loc="left")
    ax.grid(alpha=0.25)
    widest = max(budget, _pruned_rug(ax, data.pruned_mib))
    if axis.inverted:
        ax.invert_yaxis()
    if pairs.empty:
        _note(ax, EMPTY)
        ax.set_xlim(0, widest * 1.06)
        if not axis.inverted:
            ax.set_ylim(0, 55 if axis.label.startswith("homework points") else 100)  # the objective's full range
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
        return fig

    front = pairs[pairs["on_frontier"]].sort_values("size_mib")
    rest = pairs[~pairs["on_frontier"]]
    groups = [  # (rows, label, style): drawn back to front
        (rest[~rest["feasible"] & ~rest["sampled"]], "computed pair, over budget",
         dict(marker="x", color="#e9a3a3", s=22)),
        (rest[~rest["feasible"] & rest["sampled"]], "trained trial, over budget",
         dict(marker="X", color="#c0392b", s=50)),
        (rest[rest["feasible"] & ~rest["sampled"]], "computed pair (adapters from different trials)",
         dict(marker="o", facecolors="none", edgecolors="#8c8c8c", s=26)),
        (rest[rest["feasible"] & rest["sampled"]], "trained trial",
         dict(marker="o", color="#4c72b0", s=40)),
    ]
    for rows, label, style in groups:
        if not rows.empty:
            ax.scatter(rows["size_mib"], rows["y"], label=label, zorder=3, **style)
    sampled = pairs[pairs["sampled"] | pairs["on_frontier"]]
    ax.errorbar(sampled["size_mib"], sampled["y"], yerr=[sampled["y"] - sampled["y_low"], sampled["y_high"] - sampled["y"]],
                fmt="none", ecolor="#9aa9c4", elinewidth=1, capsize=2, zorder=2, label=axis.range_label)
    for column, label, style in (("indistinct", "not told apart from the pick (paired test)",
                                  dict(marker="o", facecolors="none", edgecolors="#e67e22", s=140, linewidths=1.5)),
                                 ("is_pick", "recommended pair", dict(marker="*", color="#f1c40f", s=260,
                                                                       edgecolors="#7d6608", linewidths=0.8))):
        rows = pairs[pairs[column]]
        if not rows.empty:
            ax.scatter(rows["size_mib"], rows["y"], label=label, zorder=7, **style)
    texts = []
    if front.empty:
        _note(ax, "no pair fits the budget", top=True)
    else:
        texts = _frontier(ax, front, budget)
    key = ax.text(0.01, 0.99, "labels: SFT rank / RFT rank", transform=ax.transAxes, fontsize=8, va="top",
                  color="#555555")
    others = [ax.annotate(f"{int(s)}/{int(r)}", (x, v), fontsize=7.5, color="#666666", zorder=6)
              for s, r, x, v in zip(rest["sft_rank"], rest["rft_rank"], rest["size_mib"], rest["y"])]
    ax.set_xlim(0, max(widest, pairs["size_mib"].max()) * 1.06)
    ax.margins(y=0.12)
    # The legend first: it narrows the axes, and labels placed before that would crowd once it is drawn.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    _place_labels(ax, texts, optional=others, avoid=[key])
    return fig


def _frontier(ax: Axes, front: pd.DataFrame, budget: float) -> list:
    """The frontier: a step line out to the budget, its points, and a rank label by each point (returned
    unplaced)."""
    xs = list(front["size_mib"]) + [max(budget, front["size_mib"].max())]
    ys = list(front["y"])
    ax.step(xs, ys + ys[-1:], where="post", color="#2e7d32", linewidth=1.6, zorder=4, label="Pareto frontier")
    for sampled, marker, face in ((True, "D", "#2e7d32"), (False, "D", "white")):
        rows = front[front["sampled"] == sampled]
        if not rows.empty:
            ax.scatter(rows["size_mib"], rows["y"], marker=marker, s=54, zorder=5,
                       facecolors=face, edgecolors="#2e7d32", linewidths=1.4,
                       label="frontier: " + ("trained trial" if sampled else "computed pair"))
    labels = [f"{int(s)}/{int(r)}" for s, r in zip(front["sft_rank"], front["rft_rank"])]
    repeated = {label for label in labels if labels.count(label) > 1}  # same ranks, other alphas: say which
    labels = [f"{label} α{a:g}/{b:g}" if label in repeated else label
              for label, a, b in zip(labels, front["sft_alpha"], front["rft_alpha"])]
    return [ax.annotate(label, (x, v), fontsize=9, color="#1b5e20", zorder=6)
            for label, x, v in zip(labels, front["size_mib"], front["y"])]


def _place_labels(ax: Axes, texts: list, optional: list = (), avoid: list = ()) -> None:
    """Put each label at the first spot around its point that collides with no label placed before it.

    Upper-left comes first: nothing sits there (a point there would beat the frontier point). `texts`
    (the frontier's) are always drawn; an `optional` label (another pair's) that finds no free spot is
    removed, so a crowded plot loses labels rather than overlapping them. `avoid`: other texts to keep clear of.
    """
    spots = [((-5, 5), "right", "bottom"), ((5, -5), "left", "top"), ((-5, -5), "right", "top"),
             ((5, 5), "left", "bottom"), ((-5, 16), "right", "bottom"), ((5, -16), "left", "top")]
    canvas = ax.figure.canvas
    canvas.draw()  # settle the constrained layout so label extents are final
    renderer = canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    placed = [other.get_window_extent(renderer) for other in avoid]
    for text in [*texts, *optional]:
        text.set_in_layout(False)
        chosen = None
        for offset, ha, va in spots:
            text.set_position(offset)
            text.set_anncoords("offset points")
            text.set_horizontalalignment(ha)
            text.set_verticalalignment(va)
            box = text.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            padded = box.padded(3)  # labels that merely touch read as one ("2/88/2")
            if inside and not any(padded.overlaps(other) for other in placed):
                chosen = box
                break
        if chosen is None and text not in texts:
            text.remove()
            continue
        if chosen is None:  # crowded: keep the first spot rather than wander off
            offset, ha, va = spots[0]
            text.set_position(offset)
            text.set_horizontalalignment(ha)
            text.set_verticalalignment(va)
            chosen = text.get_window_extent(renderer)
        placed.append(chosen)


def _pruned_rug(ax: Axes, sizes: list[float]) -> float:
    """Ticks along the bottom at the predicted sizes (MiB) of trials pruned as over budget (never trained).

    Returns the largest such size (0 when none), so the x axis can reach it.
    """
    if sizes:
        ax.scatter(sizes, [0.02] * len(sizes), marker="|", s=120, color="#c0392b",
                   transform=ax.get_xaxis_transform(), label="pruned: predicted over budget", zorder=3)
    return max(sizes, default=0.0)


def ranks_figure(adapters: pd.DataFrame, config: StudyConfig) -> Figure:
    """Accuracy (%) against rank (log2 axis) for SFT and RFT adapters with 95% Wilson bars; the right axis
    marks the accuracies where homework points start and fill."""
    fig = _figure(RANKS_INCHES)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, kind in zip(axes, KINDS):
        rows = adapters[adapters["kind"] == kind]
        ranks = sorted({int(r) for r in getattr(config, f"{kind}_ranks") or []} | {int(r) for r in rows["rank"]}) or [1]
        ax.set_xscale("log", base=2)
        ax.set_xlim(min(ranks) / 1.5, max(ranks) * 1.5)
        ax.set_xticks(ranks, [str(r) for r in ranks])
        ax.minorticks_off()
        ax.set_ylim(0, 100)
        ax.set_xlabel(f"{kind.upper()} LoRA rank (log2 scale)")
        ax.set_title(f"{kind.upper()} adapters", loc="left")
        ax.grid(alpha=0.25)
        # Accuracy (percent) where the kind's points start, fill, and (RFT) reach full extra credit.
        marks = {round(100 * acc): f"{total:g} pts" for acc, total in point_marks(kind)}
        for level in marks:
            ax.axhline(level, color="#999999", linestyle=":", linewidth=1)
        twin = ax.twinx()
        twin.set_ylim(0, 100)
        twin.set_yticks(list(marks), list(marks.values()), fontsize=8, color="#555555")
        if rows.empty:
            _note(ax, EMPTY if adapters.empty else f"no graded {kind.upper()} adapter yet")
            continue
        _rank_points(ax, rows)
    axes[0].set_ylabel("accuracy on validation questions (%)")
    return fig


def _rank_points(ax: Axes, rows: pd.DataFrame) -> None:
    """One point per adapter with its interval, nudged sideways per alpha; a line through each rank's best."""
    ratios = sorted({round(a / r, 3) for a, r in zip(rows["alpha"].fillna(0), rows["rank"])})
    for i, ratio in enumerate(ratios):
        picked = rows[(rows["alpha"].fillna(0) / rows["rank"]).round(3) == ratio]
        nudge = 2 ** (0.07 * (i - (len(ratios) - 1) / 2))  # same rank, other alpha: side by side
        acc = picked["accuracy"] * 100
        ax.errorbar(picked["rank"] * nudge, acc, yerr=[acc - picked["ci_low"] * 100, picked["ci_high"] * 100 - acc],
                    fmt="o", capsize=3, markersize=5, label=f"alpha = {ratio:g} × rank" if ratio else "alpha unknown")
    best = rows.groupby("rank")["accuracy"].max() * 100
    ax.plot(best.index, best.values, color="#444444", linewidth=1, alpha=0.6, zorder=1, label="best per rank")
    ax.legend(loc="best", fontsize=8)


def _note(ax: Axes, text: str, top: bool = False) -> None:
    """A message across the plot area: centred, or at the top where it covers no data."""
    ax.text(0.5, 0.97 if top else 0.5, text, transform=ax.transAxes, ha="center", va="top" if top else "center",
            fontsize=13, color="#555555", zorder=10,
            bbox=dict(boxstyle="round", facecolor="white", edgecolor="#cccccc"))
