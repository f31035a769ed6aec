"""Tables for people: the trials and frontier CSVs, and the frontier as the terminal and the HTML page show it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sweep.frontier import show_nll
from sweep.sizing import MIB
from sweep.objective import Objective

if TYPE_CHECKING:
    import pandas as pd

# trials.csv leads with what a reader scans for; every other recorded attr follows.
TRIAL_CSV_FIRST = (
    "trial", "state", "sft_rank", "rft_rank", "alpha_ratio", "lr", "epochs", "adapter_dtype",
    "size_mib", "size_source", "budget_mib", "feasible",
    "sft_accuracy", "sft_ci_low", "sft_ci_high", "rft_accuracy", "rft_ci_low", "rft_ci_high",
    "sft_answer_nll", "sft_answer_nll_se", "rft_answer_nll", "rft_answer_nll_se", "sft_points", "rft_points",
    "points", "mean_accuracy", "score", "skipped", "error",
)
FRONTIER_CSV = (
    "trial", "sft_rank", "rft_rank", "size_mib", "points", "sft_accuracy", "rft_accuracy", "mean_accuracy",
    "objective", "objective_low", "objective_high", "points_low", "points_high",
    "answer_nll", "answer_nll_se", "sft_answer_nll", "sft_answer_nll_se", "rft_answer_nll", "rft_answer_nll_se",
    "sft_ci_low", "sft_ci_high", "rft_ci_low", "rft_ci_high", "size_bytes", "size_source", "sampled",
    "sft_alpha", "rft_alpha", "adapter_dtype", "sft_key", "rft_key", "sft_dir", "rft_dir",
)


def trial_table(trials: pd.DataFrame, budget_bytes: int) -> pd.DataFrame:
    """Every trial with its size in MiB (measured, else predicted) and feasibility under the study's budget now.

    `feasible` is recomputed because a study resumed with another budget keeps the old verdicts in its
    trials' `feasible` attr (kept as `feasible_when_run`); it is empty where no size is known.
    """
    import pandas as pd

    table = trials.rename(columns={"feasible": "feasible_when_run"})
    measured = pd.to_numeric(table["size_bytes"], errors="coerce")
    predicted = pd.to_numeric(table["size_bytes_predicted"], errors="coerce")
    size = measured.fillna(predicted)
    table["size_mib"] = size / MIB
    table["size_source"] = pd.Series(pd.NA, index=table.index, dtype=object)
    table.loc[predicted.notna(), "size_source"] = "predicted"
    table.loc[measured.notna(), "size_source"] = "measured"
    table["budget_mib"] = budget_bytes / MIB
    table["feasible"] = (size <= budget_bytes).astype("boolean").mask(size.isna())
    first = [column for column in TRIAL_CSV_FIRST if column in table.columns]
    return table[first + [column for column in table.columns if column not in first]]


def frontier_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """The non-dominated feasible pairs, smallest first (`trial` empty where never trained together)."""
    return pairs[pairs["on_frontier"]].reindex(columns=list(FRONTIER_CSV)).reset_index(drop=True)


def margin_table(margins) -> pd.DataFrame:
    """margins.csv: the pick against each rival (sweep.verdict.Margin): points and answer-NLL differences (pick
    minus rival) with their paired 95% intervals, the verdict and the sentence."""
    import pandas as pd

    rows = []
    for m in margins:
        p, n = m.points, m.nll
        rows.append({
            "pick": m.pick, "rival": m.other, "relation": m.relation, "extra_mib": m.extra_bytes / MIB,
            "points_diff": p and p.estimate, "points_low": p and p.low, "points_high": p and p.high,
            "questions": p and p.questions, "seed_spread": p and p.seed_spread, "method": p and p.method,
            "nll_diff": n and n.estimate, "nll_low": n and n.low, "nll_high": n and n.high,
            "decisive": m.decisive, "more_questions": m.more_questions, "more_minutes": m.more_minutes,
            "verdict": m.sentence(),
        })
    columns = ["pick", "rival", "relation", "extra_mib", "points_diff", "points_low", "points_high", "questions",
               "seed_spread", "method", "nll_diff", "nll_low", "nll_high", "decisive", "more_questions",
               "more_minutes", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def readable_frontier(pairs: pd.DataFrame, goal: Objective) -> pd.DataFrame:
    """The frontier with formatted columns: ranks, MiB, points, accuracies with their 95% ranges, the pair's
    answer NLL ± SE ('-' where it was not recorded)."""
    import pandas as pd

    front = frontier_table(pairs)
    shown = pd.DataFrame({
        "trial": front["trial"].map(lambda t: "-" if pd.isna(t) else str(int(t))),
        "SFT rank": front["sft_rank"].astype(int),
        "RFT rank": front["rft_rank"].astype(int),
        "MiB": front["size_mib"].map("{:.2f}".format),
        "points": front["points"].map("{:.2f}".format),
        "SFT accuracy (95%)": [_acc(a, lo, hi) for a, lo, hi in
                               zip(front["sft_accuracy"], front["sft_ci_low"], front["sft_ci_high"])],
        "RFT accuracy (95%)": [_acc(a, lo, hi) for a, lo, hi in
                               zip(front["rft_accuracy"], front["rft_ci_low"], front["rft_ci_high"])],
        "answer NLL ± SE": [show_nll(n, se) for n, se in zip(front["answer_nll"], front["answer_nll_se"])],
    })
    if goal.name == "mean-accuracy":  # the other objectives are columns already
        shown[goal.noun] = [f"{v * goal.scale:.1f}%" for v in front["objective"]]
    shown["size"] = front["size_source"]
    return shown


def readable_adapters(adapters: pd.DataFrame) -> pd.DataFrame:
    """Every graded adapter, SFT then RFT by rank: accuracy (95%), answer rate, answer NLL ± SE, points, size."""
    import pandas as pd

    return pd.DataFrame({
        "kind": adapters["kind"].str.upper(),
        "rank": adapters["rank"].astype(int),
        "alpha": adapters["alpha"].map(lambda a: "-" if pd.isna(a) else f"{a:g}"),
        "accuracy (95%)": [_acc(a, lo, hi) for a, lo, hi in
                           zip(adapters["accuracy"], adapters["ci_low"], adapters["ci_high"])],
        "answer rate": adapters["answer_rate"].map(lambda r: "-" if pd.isna(r) else f"{r:.0%}"),
        "answer NLL ± SE": [show_nll(n, se) for n, se in zip(adapters["answer_nll"], adapters["answer_nll_se"])],
        "points": adapters["points"].map("{:.2f}".format),
        "zipped MiB": (adapters["zip_bytes"] / MIB).map("{:.2f}".format),
        "first trial": adapters["first_trial"].astype(int),
    })


def state_counts(trials: pd.DataFrame) -> str:
    """'8 complete, 2 pruned, 1 failed, 1 running' (or 'none yet')."""
    words = {"FAIL": "failed"}
    counts = trials["state"].value_counts()
    return ", ".join(f"{n} {words.get(state, str(state).lower())}" for state, n in counts.items()) or "none yet"


def _acc(value: float, low: float, high: float) -> str:
    """An accuracy and its interval in percent: '61% [51–70]'."""
    return f"{value:.0%} [{low * 100:.0f}–{high * 100:.0f}]"
