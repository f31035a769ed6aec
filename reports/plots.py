"""Figures drawn from the frontier DataFrames: zipped size against the objective, accuracy against rank.

Figures are built with matplotlib's object API on an Agg canvas (no pyplot, no global state), at a
fixed pixel size so the report page lays out the same every time.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from reports.frontier import MIB
from reports.objective import Objective

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
# Accuracy (percent) where each kind's points start, fill, and (RFT) reach full extra credit.
POINT_MARKS = {"sft": {40: "0 pts", 60: "25 pts"}, "rft": {60: "0 pts", 70: "25 pts", 80: "30 pts"}}


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


def pareto_figure(pairs: pd.DataFrame, trials: pd.DataFrame, goal: Objective, budget_bytes: int,
                  title: str) -> Figure:
    """Zipped size (MiB) against the objective: every pair, infeasible ones apart, trained trials apart from
    computed pairs, the frontier as a step line with rank labels, 95% ranges, and the budget line."""
    fig = _figure(PARETO_INCHES)
    ax = fig.add_subplot()
    budget = budget_bytes / MIB
    ax.axvline(budget, color="#b22222", linestyle="--", linewidth=1.2, label=f"budget {budget:.2f} MiB")
    ax.set_xlabel("zipped submission size (MiB)")
    ax.set_ylabel(goal.label)
    ax.set_title(title, loc="left")
    ax.grid(alpha=0.25)
    widest = max(budget, _pruned_rug(ax, trials))
    if pairs.empty:
        _note(ax, EMPTY)
        ax.set_xlim(0, widest * 1.06)
        ax.set_ylim(0, 55 if goal.name == "points" else 100)  # the objective's full range
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
        return fig

    def y(column: str, rows: pd.DataFrame):
        return rows[column] * goal.scale

    front = pairs[pairs["on_frontier"]].sort_values("size_bytes")
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
            ax.scatter(rows["size_mib"], y("objective", rows), label=label, zorder=3, **style)
    sampled = pairs[pairs["sampled"] | pairs["on_frontier"]]
    ax.errorbar(sampled["size_mib"], y("objective", sampled),
                yerr=[y("objective", sampled) - y("objective_low", sampled),
                      y("objective_high", sampled) - y("objective", sampled)],
                fmt="none", ecolor="#9aa9c4", elinewidth=1, capsize=2, zorder=2,
                label="95% range (Wilson bounds of both adapters)")
    texts = []
    if front.empty:
        _note(ax, "no pair fits the budget", top=True)
    else:
        texts = _frontier(ax, front, goal, budget)
    key = ax.text(0.01, 0.99, "labels: SFT rank / RFT rank", transform=ax.transAxes, fontsize=8, va="top",
                  color="#555555")
    others = [ax.annotate(f"{int(s)}/{int(r)}", (x, v), fontsize=7.5, color="#666666", zorder=6)
              for s, r, x, v in zip(rest["sft_rank"], rest["rft_rank"], rest["size_mib"], y("objective", rest))]
    ax.set_xlim(0, max(widest, pairs["size_mib"].max()) * 1.06)
    ax.margins(y=0.12)
    # The legend first: it narrows the axes, and labels placed before that would crowd once it is drawn.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
    _place_labels(ax, texts, optional=others, avoid=[key])
    return fig


def _frontier(ax: Axes, front: pd.DataFrame, goal: Objective, budget: float) -> list:
    """The frontier: a step line out to the budget, its points, and a rank label by each point (returned
    unplaced)."""
    xs = list(front["size_mib"]) + [max(budget, front["size_mib"].max())]
    ys = list(front["objective"] * goal.scale)
    ax.step(xs, ys + ys[-1:], where="post", color="#2e7d32", linewidth=1.6, zorder=4, label="Pareto frontier")
    for sampled, marker, face in ((True, "D", "#2e7d32"), (False, "D", "white")):
        rows = front[front["sampled"] == sampled]
        if not rows.empty:
            ax.scatter(rows["size_mib"], rows["objective"] * goal.scale, marker=marker, s=54, zorder=5,
                       facecolors=face, edgecolors="#2e7d32", linewidths=1.4,
                       label="frontier: " + ("trained trial" if sampled else "computed pair"))
    labels = [f"{int(s)}/{int(r)}" for s, r in zip(front["sft_rank"], front["rft_rank"])]
    repeated = {label for label in labels if labels.count(label) > 1}  # same ranks, other alphas: say which
    labels = [f"{label} α{a:g}/{b:g}" if label in repeated else label
              for label, a, b in zip(labels, front["sft_alpha"], front["rft_alpha"])]
    return [ax.annotate(label, (x, v), fontsize=9, color="#1b5e20", zorder=6)
            for label, x, v in zip(labels, front["size_mib"], front["objective"] * goal.scale)]


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


def _pruned_rug(ax: Axes, trials: pd.DataFrame) -> float:
    """Ticks along the bottom at the predicted size of trials pruned as over budget (never trained).

    Returns the largest such size in MiB (0 when none), so the x axis can reach it.
    """
    import pandas as pd

    pruned = trials[trials["skipped"] == "over-budget"]
    sizes = pd.to_numeric(pruned["size_bytes_predicted"], errors="coerce").dropna() / MIB
    if not sizes.empty:
        ax.scatter(sizes, [0.02] * len(sizes), marker="|", s=120, color="#c0392b",
                   transform=ax.get_xaxis_transform(), label="pruned: predicted over budget", zorder=3)
    return float(sizes.max()) if not sizes.empty else 0.0


def ranks_figure(adapters: pd.DataFrame, config: dict) -> Figure:
    """Accuracy (%) against rank (log2 axis) for SFT and RFT adapters with 95% Wilson bars; the right axis
    marks the accuracies where homework points start and fill."""
    fig = _figure(RANKS_INCHES)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, kind in zip(axes, ("sft", "rft")):
        rows = adapters[adapters["kind"] == kind]
        ranks = sorted({int(r) for r in config.get(f"{kind}_ranks") or []} | {int(r) for r in rows["rank"]}) or [1]
        ax.set_xscale("log", base=2)
        ax.set_xlim(min(ranks) / 1.5, max(ranks) * 1.5)
        ax.set_xticks(ranks, [str(r) for r in ranks])
        ax.minorticks_off()
        ax.set_ylim(0, 100)
        ax.set_xlabel(f"{kind.upper()} LoRA rank (log2 scale)")
        ax.set_title(f"{kind.upper()} adapters", loc="left")
        ax.grid(alpha=0.25)
        marks = POINT_MARKS[kind]
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
