"""The export plan: pick a study's rank pair, turn it into file changes (rank constants, adapter copies,
or a JSON/TOML config file), show them as a diff, then write them all or nothing, with backups
(sweep/changeset.py).

Nothing is written outside the homework root (and the --to file); every file that is replaced is first
copied to `<root>/.ranksweep/backups/<UTC time>/`, which sits beside `homework/` and so never enters
the submission zip.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from sweep.bundle import ADAPTER_FILES, ADAPTER_HOMES, bundle_members, zip_bytes
from sweep.changeset import Change, apply, inside as _inside
from sweep.frontier import recommend
from sweep.rank_constants import is_identifier, set_constant
from sweep.sizing import fits, mib, size_text
from sweep.storage import open_storage
from sweep.study_io import load_trials
from trainers.data import parse_json
from trainers.errors import RanksweepError

DEFAULT_SFT_VAR = "homework/sft.py:DEFAULT_LORA_RANK"
DEFAULT_RFT_VAR = "homework/rft.py:RFT_LORA_RANK"


@dataclass(frozen=True)
class RankVar:
    """Where a rank lives in the user's code: a file relative to the homework root, and a constant name."""

    file: str
    name: str


def parse_var(text: str) -> RankVar:
    """Parse --sft-var/--rft-var `FILE:NAME` (FILE relative to the homework root)."""
    file, sep, name = text.rpartition(":")
    if not sep or not file or not is_identifier(name):
        raise RanksweepError(f"'{text}' is not FILE:NAME (e.g. homework/sft.py:DEFAULT_LORA_RANK).")
    return RankVar(file=Path(file).as_posix(), name=name)


@dataclass(frozen=True)
class Choice:
    """The exported pair: ranks and alphas, adapter folders, and what the study measured for it (bytes, points)."""

    study: str
    trial: int | None
    sft_rank: int
    rft_rank: int
    sft_alpha: float | None
    rft_alpha: float | None
    adapter_dtype: str | None
    sft_dir: Path | None
    rft_dir: Path | None
    size_bytes: int | None
    points: float | None
    base_model: str | None
    budget_bytes: int | None
    reason: str

    def summary(self) -> str:
        """One line naming the pair, for the top of the export's output."""
        which = f"trial {self.trial}" if self.trial is not None else "recommended pair"
        alphas = f"alpha {_num(self.sft_alpha)}/{_num(self.rft_alpha)}, " if self.sft_alpha is not None else ""
        points = f", {self.points:.2f} points" if self.points is not None else ""
        return (f"study '{self.study}', {which}: SFT rank {self.sft_rank}, RFT rank {self.rft_rank} "
                f"({alphas}{self.adapter_dtype or 'fp32'}{points})" + (f": {self.reason}" if self.reason else ""))


def study_name(storage: str, name: str | None) -> str:
    """--study, or the storage's only study when it holds exactly one."""
    import optuna

    if name is not None:
        return name
    names = sorted(optuna.get_all_study_names(open_storage(storage)))
    if len(names) != 1:
        held = f"it holds {', '.join(names)}" if names else "it holds none"
        raise RanksweepError(f"Name the study to export with --study ({storage}: {held}).")
    return names[0]


def choose(storage: str, study: str, trial: int | None = None) -> Choice:
    """The pair to export: the study's recommendation, or the COMPLETE trial numbered `trial`."""
    trials, config = load_trials(storage, study)
    common = {"study": study, "base_model": config.base_model, "budget_bytes": config.budget_bytes}
    if trial is None:
        rec = recommend(storage, study)
        return Choice(**common, trial=rec.trial, sft_rank=rec.sft_rank, rft_rank=rec.rft_rank,
                      sft_alpha=rec.sft_alpha, rft_alpha=rec.rft_alpha, adapter_dtype=rec.adapter_dtype,
                      sft_dir=_opt(rec.sft_dir, Path), rft_dir=_opt(rec.rft_dir, Path), size_bytes=rec.size_bytes,
                      points=rec.points, reason=rec.reason)
    rows = trials[trials["trial"] == trial]
    if rows.empty or rows.iloc[0]["state"] != "COMPLETE":
        state = "does not exist" if rows.empty else f"is {rows.iloc[0]['state']}"
        raise RanksweepError(f"Trial {trial} of study '{study}' {state}; pick a COMPLETE trial (ranksweep report lists them).")
    row = rows.iloc[0]
    if _opt(row.get("sft_rank"), int) is None or _opt(row.get("rft_rank"), int) is None:
        raise RanksweepError(f"Trial {trial} of study '{study}' records no ranks; pick another trial.")
    return Choice(**common, trial=trial, sft_rank=int(row["sft_rank"]), rft_rank=int(row["rft_rank"]),
                  sft_alpha=_opt(row.get("sft_alpha"), float), rft_alpha=_opt(row.get("rft_alpha"), float),
                  adapter_dtype=_opt(row.get("adapter_dtype"), str), sft_dir=_opt(row.get("sft_dir"), Path),
                  rft_dir=_opt(row.get("rft_dir"), Path), size_bytes=_opt(row.get("size_bytes"), int),
                  points=_opt(row.get("points"), float), reason="")


def _opt(value, kind):
    """`kind(value)` (float, int, Path), or None for a missing value (None, NaN, pandas NA, "")."""
    return None if value is None or str(value) in ("", "nan", "<NA>", "None") else kind(value)


def _num(value):
    """An integral float as an int (alpha 32.0 → 32), anything else unchanged."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def check_tree(root: Path, sft: RankVar, rft: RankVar) -> None:
    """Refuse a --homework folder that is not a homework root: it needs homework/ and both rank files."""
    if not (root / "homework").is_dir():
        raise RanksweepError(f"{root} does not look like a homework folder (no homework/ in it); "
                             f"point --homework at the folder that holds homework/.")
    for var in (sft, rft):
        if not _inside(root, var.file, "Rank file").is_file():
            raise RanksweepError(f"{root} does not look like a homework folder: {var.file} is missing "
                                 f"(point --homework at the folder that holds homework/, or use --sft-var/--rft-var).")


def rank_changes(root: Path, sft: RankVar, rft: RankVar, sft_rank: int, rft_rank: int) -> list[Change]:
    """The rank-constant edits, grouped per file (both constants may live in one file)."""
    if (sft.file, sft.name) == (rft.file, rft.name) and sft_rank != rft_rank:
        raise RanksweepError(f"--sft-var and --rft-var both name {sft.file}:{sft.name}; give each rank its own constant.")
    check_tree(root, sft, rft)
    files = {var.file: (root / var.file).read_bytes() for var in (sft, rft)}
    new = dict(files)
    for var, rank in ((sft, sft_rank), (rft, rft_rank)):
        new[var.file] = set_constant(new[var.file], var.name, rank, label=var.file)
    return [Change(f, files[f], new[f]) for f in files if new[f] != files[f]]


def _adapter_base(folder: Path) -> str | None:
    """`base_model_name_or_path` from a folder's adapter_config.json, if there is one."""
    config = folder / "adapter_config.json"
    if not config.is_file():
        return None
    try:
        return parse_json(config.read_bytes()).get("base_model_name_or_path") or None
    except (ValueError, AttributeError):
        raise RanksweepError(f"{config} is not a valid adapter config; fix or remove it and export again.") from None


def _same_model(a: str, b: str) -> bool:
    a, b = a.rstrip("/"), b.rstrip("/")
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def check_base_model(root: Path, choice: Choice, base_model: str | None,
                     checkpoint: tuple[str, str | None] = ("", None)) -> None:
    """Refuse adapters trained on another base model than the homework's: --base-model, else the tree's adapter
    configs and `checkpoint`, (where, model) its checkpoint line names (a fresh tree has no adapter yet, but
    names its model there; sweep.homework.tree.checkpoint_model reads it)."""
    studied = {n for n in [choice.base_model, *(_adapter_base(d) for d in (choice.sft_dir, choice.rft_dir) if d)] if n}
    if base_model is not None:
        expected = [("--base-model", base_model)]
    else:
        expected = [(f"{home}/adapter_config.json", _adapter_base(root / home)) for home in ADAPTER_HOMES.values()]
        expected.append(checkpoint)
    for source, name in expected:
        if name and not any(_same_model(name, s) for s in studied):
            trained = choice.base_model or ", ".join(sorted(studied)) or "an unknown model"
            raise RanksweepError(
                f"The study's adapters were trained on '{trained}' but {source} names '{name}', and an adapter only "
                f"works on its own base model; export without --with-adapters, or pass --base-model '{trained}' "
                f"if they are the same model.")


def adapter_changes(root: Path, choice: Choice) -> list[Change]:
    """Copies of the pair's adapter files into homework/sft_model and homework/rft_model (only what differs)."""
    changes = []
    for kind, source in (("sft", choice.sft_dir), ("rft", choice.rft_dir)):
        missing = [f for f in ADAPTER_FILES if source is None or not (source / f).is_file()]
        if missing:
            raise RanksweepError(f"The {kind.upper()} adapter of this pair is not on disk ({source or 'no folder recorded'} "
                                 f"lacks {', '.join(missing)}); export without --with-adapters, or rerun the study.")
        for name in ADAPTER_FILES:
            target = _inside(root, f"{ADAPTER_HOMES[kind]}/{name}", "Adapter file")
            old = target.read_bytes() if target.is_file() else None
            new = (source / name).read_bytes()
            if new != old:
                changes.append(Change(f"{ADAPTER_HOMES[kind]}/{name}", old, new, source / name))
    return changes


@dataclass(frozen=True)
class ZipCheck:
    """The submission zip's size against the budget (bytes); `planned`: measured with a dry run's changes in place."""

    size_bytes: int
    budget_bytes: int
    planned: bool

    @property
    def over(self) -> bool:
        return not fits(self.size_bytes, self.budget_bytes)

    def line(self) -> str:
        """The size in MiB (bytes/1024/1024, as the homework reports it) and the verdict."""
        verdict = (f"OVER by {size_text(self.size_bytes - self.budget_bytes)}; export a smaller pair "
                   f"(ranksweep report lists them)") if self.over else "fits"
        return (f"submission zip{' after export' if self.planned else ''}: {size_text(self.size_bytes)} "
                f"of the {size_text(self.budget_bytes)} budget: {verdict}")


def zip_check(root: Path, budget: int, pending: list[Change]) -> ZipCheck:
    """Build the submission zip in memory by the bundle rules; pending changes are measured as if written."""
    members = dict(bundle_members(root))
    if not pending:
        return ZipCheck(zip_bytes(sorted(members.items())), budget, planned=False)
    # A dry run must not touch DIR, so edited text goes through a scratch folder that is removed at once.
    with tempfile.TemporaryDirectory(prefix="ranksweep-export-") as scratch:
        for n, change in enumerate(pending):
            if change.source is None and change.path not in members:
                continue  # a rank file outside homework/ is not part of the submission
            if change.source is None:
                (Path(scratch) / str(n)).write_bytes(change.new)
            members[change.path] = change.source or Path(scratch) / str(n)
        return ZipCheck(zip_bytes(sorted(members.items())), budget, planned=True)
