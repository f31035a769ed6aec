"""The frontier as plain data: graded adapters, every SFT×RFT pair of them, which pairs are non-dominated,
and the recommended pair. Computed here, below both of its readers: `export` takes the recommendation,
reports/ draws plots and tables as thin views of these DataFrames."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sweep.objective import Objective, objective_for
from sweep.study_io import load_trials
from sweep.bundle import combined_bytes
from sweep.evidence import DecisionRecord, load_record
from sweep.settings import StudyConfig
from sweep.sizing import MIB, fits
from trainers.errors import RanksweepError
from trainers.training import KINDS

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

# What tells a pick from an overlapping smaller pair. A study grades every adapter on the same number of questions
# for its whole life (a resume with another --questions is refused); the decision phase (sweep/decision.py) grades
# the close pairs on more questions after the search, or a new study grades everything again.
SEPARATE_ADVICE = ("grading more questions would tell them apart: `ranksweep decide` grades both on more validation "
                   "questions (then other seeds) until one is decisive, or launch a new --study with the same flags "
                   "and a larger --questions (adapters already trained come from the artifact cache; only the "
                   "grading runs again)")
ADAPTER_COLUMNS = (
    "kind", "key", "rank", "alpha", "lr", "epochs", "adapter_dtype", "accuracy", "ci_low", "ci_high",
    "answer_rate", "questions", "points", "points_low", "points_high", "answer_nll", "answer_nll_se",
    "zip_bytes", "raw_bytes", "dir",
    "first_trial", "n_trials",
)
PAIR_COLUMNS = (
    "trial", "sft_rank", "rft_rank", "size_mib", "points", "sft_accuracy", "rft_accuracy", "mean_accuracy",
    "objective", "objective_low", "objective_high", "points_low", "points_high", "answer_nll", "answer_nll_se",
    "sft_answer_nll", "sft_answer_nll_se", "rft_answer_nll", "rft_answer_nll_se", "size_bytes", "size_source",
    "feasible", "sampled", "on_frontier", "sft_ci_low", "sft_ci_high", "rft_ci_low", "rft_ci_high",
    "sft_alpha", "rft_alpha", "adapter_dtype", "sft_key", "rft_key", "sft_dir", "rft_dir",
    "sft_zip_bytes", "rft_zip_bytes", "sft_trial", "rft_trial",
)
MEASURED, SUM_OF_PARTS = "measured", "sum of parts"
Z95 = 1.96  # a 95% normal interval: the answer NLL's range is its mean ± Z95 standard errors


def adapter_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct graded adapter (kind, cache key), from the first trial that recorded it.

    Accuracy and its Wilson bounds are fractions, `points` homework points, `zip_bytes` bytes of the
    adapter folder zipped alone; `n_trials` counts the trials that used it (cache hits included).
    """
    import pandas as pd

    parts = []
    for kind in KINDS:
        graded = trials[
            trials[f"{kind}_accuracy"].notna() & trials[f"{kind}_key"].notna() & trials[f"{kind}_zip_bytes"].notna()
        ].sort_values("trial")
        part = pd.DataFrame({
            "kind": kind,
            **{name: graded[f"{kind}_{name}"] for name in ADAPTER_COLUMNS[1:] if f"{kind}_{name}" in graded},
            "adapter_dtype": graded["adapter_dtype"],
            "first_trial": graded["trial"],
        })
        part["n_trials"] = part.groupby("key")["key"].transform("size")
        parts.append(part.drop_duplicates("key", keep="first"))
    table = pd.concat(parts, ignore_index=True).reindex(columns=list(ADAPTER_COLUMNS))
    for column in ("accuracy", "ci_low", "ci_high", "zip_bytes", "points", "points_low", "points_high", "answer_nll",
                   "answer_nll_se"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    # A grade recorded without bounds still has an interval: the point itself.
    table["ci_low"] = table["ci_low"].fillna(table["accuracy"])
    table["ci_high"] = table["ci_high"].fillna(table["accuracy"])
    # Points as graded (the rule lives with the grader); rounded so equal scores reached by different float
    # paths compare equal (ties are broken on purpose).
    table["points"] = table["points"].round(9)
    table["points_low"] = table["points_low"].fillna(table["points"])
    table["points_high"] = table["points_high"].fillna(table["points"])
    return table.sort_values(["kind", "rank", "first_trial"], ignore_index=True)


def combined_frontier(trials: pd.DataFrame, config: StudyConfig, objective: str | None = None) -> pd.DataFrame:
    """Every SFT×RFT pair of graded adapters with size (bytes, MiB), points, objective and its 95% range,
    `feasible` (size <= budget), `sampled` (trained together as `trial`) and `on_frontier`.

    A sampled pair's size is the trial's measured zip; any other pair's is the sum of its adapters' zips
    plus the rest of the homework (`size_source` says which). Rows run from smallest to largest.
    """
    import pandas as pd

    goal = objective_for(objective, config)
    adapters = adapter_table(trials)
    sft = adapters[adapters["kind"] == "sft"].drop(columns="kind").add_prefix("sft_")
    rft = adapters[adapters["kind"] == "rft"].drop(columns="kind").add_prefix("rft_")
    pairs = sft.merge(rft, how="cross")
    # One submission stores both adapters in one dtype; pairing fp16 with fp32 would describe no real export.
    same_dtype = pairs["sft_adapter_dtype"].fillna("") == pairs["rft_adapter_dtype"].fillna("")
    pairs = pairs[same_dtype].rename(columns={"sft_adapter_dtype": "adapter_dtype", "sft_first_trial": "sft_trial",
                                              "rft_first_trial": "rft_trial"})
    pairs = pairs.merge(_sampled_pairs(trials), on=["sft_key", "rft_key"], how="left")

    pairs["points"] = (pairs["sft_points"] + pairs["rft_points"]).round(9)
    pairs["points_low"] = pairs["sft_points_low"] + pairs["rft_points_low"]
    pairs["points_high"] = pairs["sft_points_high"] + pairs["rft_points_high"]
    pairs["mean_accuracy"] = (pairs["sft_accuracy"] + pairs["rft_accuracy"]) / 2
    # The pair's answer NLL: the mean of its adapters' (empty where either was graded without one), and the
    # standard error of that mean, the two grades being independent.
    pairs["answer_nll"] = (pairs["sft_answer_nll"] + pairs["rft_answer_nll"]) / 2
    pairs["answer_nll_se"] = (pairs["sft_answer_nll_se"] ** 2 + pairs["rft_answer_nll_se"] ** 2) ** 0.5 / 2
    # The study's own objective function, on the adapters' columns: at the grades, and at both ends of their
    # 95% ranges (Wilson bounds of accuracy and points, answer NLL ± Z95 SE); every objective grows or falls
    # with all three together, so its range lies between its values at the two ends.
    pairs["objective"] = goal.value(*_scores(pairs, "accuracy", "points", 0))
    worst = goal.value(*_scores(pairs, "ci_low", "points_low", Z95))
    best = goal.value(*_scores(pairs, "ci_high", "points_high", -Z95))
    pairs["objective_low"] = worst.where(worst <= best, best)
    pairs["objective_high"] = best.where(worst <= best, worst)
    if goal.name == "answer-nll" and not pairs.empty and pairs["objective"].isna().all():
        raise RanksweepError(
            "This study's adapters were graded before ranksweep recorded the answer NLL, so --objective "
            "answer-nll has nothing to rank; report it with --objective points (or an accuracy objective)."
        )

    pairs["sampled"] = pairs["trial"].notna()
    rest = int(config.homework_rest_bytes or 0)
    # The size of a pair never trained together: its parts added up the way the loop adds up a trained one.
    parts = pd.Series([combined_bytes(rest, int(s), int(r)) for s, r in zip(pairs["sft_zip_bytes"], pairs["rft_zip_bytes"])],
                      index=pairs.index, dtype="float64")
    pairs["size_bytes"] = pairs["measured_bytes"].where(pairs["sampled"], parts).astype("int64")
    pairs["size_source"] = pairs["sampled"].map({True: MEASURED, False: SUM_OF_PARTS})
    pairs["size_mib"] = pairs["size_bytes"] / MIB
    pairs["feasible"] = fits(pairs["size_bytes"], budget_bytes(config))
    pairs["on_frontier"] = False
    feasible = (pairs["feasible"] & pairs["objective"].notna()).to_numpy()  # a pair without a value is no rival
    pairs.loc[feasible, "on_frontier"] = non_dominated(
        goal.sign * pairs.loc[feasible, "objective"].to_numpy(float), pairs.loc[feasible, "size_bytes"].to_numpy(float)
    )
    pairs["trial"] = pairs["trial"].astype("Int64")
    table = pairs.reindex(columns=list(PAIR_COLUMNS))
    return table.sort_values(["size_bytes", "objective"], ascending=[True, goal.sign < 0], ignore_index=True)


@dataclass(frozen=True)
class _Scores:
    """One kind's adapter columns under the names the objective reads (sweep.records.AdapterResult's)."""

    accuracy: pd.Series
    points: pd.Series
    answer_nll: pd.Series


def _scores(pairs: pd.DataFrame, accuracy: str, points: str, nll_ses: float) -> tuple[_Scores, _Scores]:
    """Both kinds' scores: accuracy and points from the named columns, answer NLL moved by `nll_ses` SEs
    (a missing SE moves it by nothing)."""
    return tuple(_Scores(pairs[f"{kind}_{accuracy}"], pairs[f"{kind}_{points}"],
                         pairs[f"{kind}_answer_nll"] + nll_ses * pairs[f"{kind}_answer_nll_se"].fillna(0))
                 for kind in KINDS)


def _sampled_pairs(trials: pd.DataFrame) -> pd.DataFrame:
    """(sft_key, rft_key) -> the first complete trial that trained that pair, and its measured zip bytes."""
    import pandas as pd

    done = trials[(trials["state"] == "COMPLETE") & trials["sft_key"].notna() & trials["rft_key"].notna()
                  & trials["size_bytes"].notna()].sort_values("trial")
    done = done.drop_duplicates(["sft_key", "rft_key"], keep="first")
    return pd.DataFrame({
        "sft_key": done["sft_key"].astype(object), "rft_key": done["rft_key"].astype(object),
        "trial": done["trial"].astype(float), "measured_bytes": pd.to_numeric(done["size_bytes"]).astype(float),
    })


def show_nll(nll: float | None, se: float | None) -> str:
    """An answer NLL as tables print it: '0.842 ± 0.031', '0.842' without an SE, '-' when not recorded."""
    import pandas as pd

    if nll is None or pd.isna(nll):
        return "-"
    return f"{nll:.3f}" if se is None or pd.isna(se) else f"{nll:.3f} ± {se:.3f}"


def budget_bytes(config: StudyConfig) -> int:
    """The study's zipped-size budget in bytes."""
    budget = config.budget_bytes
    if budget is None:
        raise RanksweepError("The study config has no budget_bytes; launch the study again with --budget-mb.")
    return int(budget)


def non_dominated(objective: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Mask of points no other point beats: objective at least as high and size at most as large, one strictly.

    A sweep by size: a point survives when it is the best of its size and beats everything smaller.
    """
    import numpy as np

    keep = np.zeros(len(size), dtype=bool)
    best_smaller = -np.inf
    for value in np.unique(size):  # sorted ascending
        same = size == value
        top = objective[same].max()
        if top > best_smaller:
            keep[same & (objective == top)] = True
            best_smaller = top
    return keep


@dataclass(frozen=True)
class Recommendation:
    """The pair to export: ranks, alphas, adapter folders, zipped size (bytes) and what it scored."""

    sft_rank: int
    rft_rank: int
    sft_key: str
    rft_key: str
    sft_dir: str
    rft_dir: str
    sft_alpha: float
    rft_alpha: float
    adapter_dtype: str
    size_bytes: int
    points: float
    objective_value: float
    trial: int | None  # None when the pair was never sampled as one trial
    overlaps: str | None  # the smallest smaller pair whose 95% range reaches this one's, or None (SEPARATE_ADVICE)
    reason: str  # one sentence: why this pair


def recommend(storage: str, study_name: str, objective: str | None = None) -> Recommendation:
    """The best feasible pair of a study by its objective (or `objective`); ties go to the smaller zip."""
    trials, config = load_trials(storage, study_name)
    pairs, goal, budget = combined_frontier(trials, config, objective), objective_for(objective, config), budget_bytes(config)
    return decided(pick(pairs, goal, budget, study_name), pairs, goal, budget, study_name,
                   load_record(storage, study_name))


def decided(rec: Recommendation, pairs: pd.DataFrame, goal: Objective, budget: int, study_name: str,
            record: DecisionRecord) -> Recommendation:
    """`rec`, or the pair the decision phase settled on where it moved the pick (on more questions and seeds than
    the trials' values, which Optuna keeps fixed: sweep/decision.py)."""
    if record.pick is None or tuple(record.pick) == (rec.sft_key, rec.rft_key):
        return rec
    chosen = pairs[(pairs["sft_key"] == record.pick[0]) & (pairs["rft_key"] == record.pick[1]) & pairs["feasible"]]
    if chosen.empty or chosen["objective"].isna().all():
        return rec
    moved = pick(chosen, goal, budget, study_name)
    return replace(moved, overlaps=None, reason=(
        f"Chosen by the decision phase over the first pass's SFT {rec.sft_rank} / RFT {rec.rft_rank}, on more "
        f"questions than the trials graded: {record.verdict or 'it has not finished'}"))


def pick(pairs: pd.DataFrame, goal: Objective, budget: int, study_name: str) -> Recommendation:
    """The recommendation from a `combined_frontier` table; RanksweepError when no pair fits the budget."""
    import pandas as pd

    ranked = pairs.assign(quality=goal.sign * pairs["objective"])  # grows with quality either way
    # Pairs the objective cannot score (graded without an answer NLL, under answer-nll) are left out.
    scored = ranked["feasible"] & ranked["objective"].notna()
    feasible = ranked[scored].sort_values(["quality", "size_bytes"], ascending=[False, True])
    if feasible.empty:
        what = "has no graded SFT/RFT pair yet" if pairs.empty else f"has no pair within {budget / MIB:.2f} MiB"
        raise RanksweepError(
            f"Study '{study_name}' {what}; run more trials (smaller --sft-ranks/--rft-ranks fit a tighter budget) "
            "and report again."
        )
    best = feasible.iloc[0]
    # Smaller pairs whose 95% range reaches the best one's: the data cannot tell them apart.
    reaches = (feasible["objective_high"] >= best["objective_low"] if goal.sign > 0
               else feasible["objective_low"] <= best["objective_high"])
    close = feasible[(feasible["size_bytes"] < best["size_bytes"]) & reaches]
    overlaps = None
    if not close.empty:
        near = close.sort_values(["size_bytes", "quality"], ascending=[True, False]).iloc[0]
        overlaps = (f"interval overlaps the smaller pair sft={int(near['sft_rank'])}/rft={int(near['rft_rank'])} "
                    f"({near['size_mib']:.1f} MiB)")
    trial = None if pd.isna(best["trial"]) else int(best["trial"])
    return Recommendation(
        sft_rank=int(best["sft_rank"]), rft_rank=int(best["rft_rank"]),
        sft_key=str(best["sft_key"]), rft_key=str(best["rft_key"]),
        sft_dir=str(best["sft_dir"]), rft_dir=str(best["rft_dir"]),
        sft_alpha=float(best["sft_alpha"]), rft_alpha=float(best["rft_alpha"]),
        adapter_dtype=str(best["adapter_dtype"]) if not pd.isna(best["adapter_dtype"]) else "fp32",
        size_bytes=int(best["size_bytes"]), points=float(best["points"]),
        objective_value=float(best["objective"]), trial=trial, overlaps=overlaps,
        reason=_reason(best, feasible, goal, budget,
                       unscored=int((pairs["feasible"] & pairs["objective"].isna()).sum())),
    )


def _reason(best: pd.Series, feasible: pd.DataFrame, goal: Objective, budget: int, unscored: int = 0) -> str:
    """One sentence: what the pair scored against how many others, and where its numbers come from; `unscored`
    pairs fit but have no value (graded without an answer NLL, under answer-nll)."""
    import pandas as pd

    pairs = "the only pair that fits" if len(feasible) == 1 else f"the {len(feasible)} pairs that fit"
    best_of = f"Highest {goal.noun}" if goal.sign > 0 else "Lowest mean answer NLL"
    sentence = (f"{best_of} of {pairs} the {budget / MIB:.2f} MiB budget: "
                f"{goal.show(best['objective'] if goal.name != 'points' else best['points'])} "
                f"at {best['size_mib']:.2f} MiB")  # two decimals, as the tables: a 0.25 MiB budget read "0.2"
    if goal.name == "points":
        tied = int((feasible["points"] == best["points"]).sum()) - 1
        if tied and pd.notna(best["answer_nll"]):
            sentence += (f", answer NLL {show_nll(best['answer_nll'], best['answer_nll_se'])} nats per token "
                         f"(mean accuracy {best['mean_accuracy']:.1%}) breaking a tie with {tied} other pair(s)")
        elif tied:
            sentence += f", mean accuracy {best['mean_accuracy']:.1%} breaking a tie with {tied} other pair(s)"
    if pd.isna(best["trial"]):
        sentence += (f", combining adapters graded in trials {int(best['sft_trial'])} and {int(best['rft_trial'])} "
                     "(never trained as one trial; size summed from their zipped parts)")
    else:
        sentence += f", measured in trial {int(best['trial'])}"
    if unscored:
        sentence += f"; {unscored} more pair(s) that fit were graded without an answer NLL and are left out"
    return sentence + "."

