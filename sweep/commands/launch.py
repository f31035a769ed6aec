"""`ranksweep launch`: start or resume a study in an Optuna storage."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from sweep import bundle
from sweep.commands.common import (add_base_model, add_device, add_no_progress, add_storage, add_threads, alpha_ratio,
                                   budget_mb, comma_list, epochs_arg, learning_rate, non_negative_float, positive_int,
                                   questions_arg, rank_arg,
                                   recover_steps_arg, seed_arg, study_name)
from sweep.commands.running import decide_study, execute
from sweep.decision import after_launch_minutes
from sweep.files import writable_folder
from sweep.homework.study import check_homework_trainer, homework_rest_bytes
from sweep.objective import OBJECTIVES
from sweep.settings import StudySettings
from sweep.sizing import DEFAULT_BUDGET_MB, budget_bytes
from sweep.space import PRESETS, describe, parse_floats, parse_ranks, with_overrides
from sweep.strategies import check_strategy, resolve_strategy
from sweep.study import feasible_pairs, open_study
from trainers.batching import steps_for
from trainers.data import read_qa, read_rft
from trainers.errors import RanksweepError
from trainers.hardware import set_threads
from trainers.models import resolve_device
from trainers.prompts import DEFAULT_PROMPT_TEMPLATE, check_prompt_template
from trainers.unitgen import builtin_data, level_named


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "launch",
        help="start or resume a study: train and grade SFT/RFT rank pairs under a size budget",
        description="Start (or resume) an Optuna study that picks SFT/RFT rank pairs, trains and grades both "
        "adapters of each pair, and records accuracy, homework points and the zipped size. Pairs whose predicted "
        "size is over the budget are never trained; adapters already trained (by any trial, study or worker) "
        "are reused from the artifact cache. Rerunning the same command resumes the study.",
    )
    p.add_argument("--study", required=True, type=study_name, help="study name (created if new, resumed if it exists)")
    add_storage(p)
    p.add_argument("--budget-mb", type=budget_mb, default=DEFAULT_BUDGET_MB,
                   help="zipped submission limit in MiB, as the homework reports bytes/1024/1024 "
                   f"(default: {DEFAULT_BUDGET_MB:g})")
    p.add_argument("--trials", type=positive_int, default=None,
                   help="distinct pairs to train and grade in total (default: the preset's)")
    p.add_argument("--preset", choices=list(PRESETS), default="full",
                   help=f"quick: CPU-sized ({describe(PRESETS['quick'])}); full: homework scale "
                   f"({describe(PRESETS['full'])}). Flags override it.")
    add_base_model(p)
    add_device(p)
    add_threads(p)
    p.add_argument("--homework", type=Path, default=None,
                   help="homework root (holds homework/ and data/): its data is used and the rest of its "
                   "homework/ folder counts toward the zipped size")
    p.add_argument("--train-data", type=Path, help="[question, answer] JSON (default: homework's or built-in)")
    p.add_argument("--valid-data", type=Path, help="[question, answer] JSON used for grading")
    p.add_argument("--rft-data", type=Path,
                   help="[question, answer, reasoning] JSON (default: homework's rft.json, else generated once "
                   "by rejection sampling from the base model)")
    p.add_argument("--sft-ranks", type=comma_list(rank_arg), help="comma list of SFT ranks to search, e.g. 1,2,4,8")
    p.add_argument("--rft-ranks", type=comma_list(rank_arg), help="comma list of RFT ranks to search")
    p.add_argument("--alpha-ratios", type=comma_list(alpha_ratio), help="comma list of lora_alpha/rank ratios (default: 4)")
    p.add_argument("--lrs", type=comma_list(learning_rate), help="comma list of learning rates (default: 1e-3)")
    p.add_argument("--epochs", type=comma_list(epochs_arg), help="comma list of epoch counts (default: the preset's)")
    p.add_argument("--adapter-dtypes", help="comma list from fp32,fp16: how adapters are stored (fp16 halves size)")
    p.add_argument("--objective", choices=tuple(OBJECTIVES),
                   default="points", help="what to optimise (default: the pair's homework points, maximised, ties "
                   "broken by the mean answer NLL; answer-nll: the mean NLL per token of the true answers, "
                   "minimised); the zipped size is always minimised")
    p.add_argument("--level", choices=["metric-prefix", "homework"], default=None,
                   help="built-in data when you give none: metric-prefix (whole amounts between metric prefixes, "
                   "'Convert 46 liters to milliliters.'; the 135M embedded model learns it in one CPU epoch) or "
                   "homework (any two units of a category, like the course's data; the 360M model's level). "
                   "Default: the preset's (quick: metric-prefix, full: homework)")
    p.add_argument("--questions", type=questions_arg, default=None,
                   help="validation questions graded per adapter, N or 'all' (default: the preset's)")
    p.add_argument("--prompt-template", default=DEFAULT_PROMPT_TEMPLATE, metavar="T",
                   help="the text your homework's format_prompt feeds the model, with {question} where the question "
                   "goes, e.g. '{question} ': adapters are trained and graded on it (default: the raw question)")
    p.add_argument("--trainer", choices=["ranksweep", "homework"], default="ranksweep",
                   help="who trains and grades each pair: ranksweep's fast trainer (default), or 'homework': your "
                   "tree's own training commands, bundle.py and grader, in a scratch copy per trial (needs --homework; "
                   "commands and timeouts in DIR/ranksweep.toml)")
    p.add_argument("--strategy", choices=["auto", "independent", "shrink", "nested"], default="auto",
                   help="how adapters are made: independent trains each rank; shrink trains the largest rank once "
                   "per kind and cuts it to each rank (peft's conversion), then trains --recover-steps steps; "
                   "nested trains one adapter whose prefixes are every rank; auto (default): shrink with 25 recovery "
                   "steps where a training is longer than those steps plus the cut (~6 steps), else independent. "
                   "Rule: the cheapest strategy whose accuracy at every rank stays inside independent's 95%% "
                   "interval; measured, only shrink+25 did, 1.46x cheaper (README: 'Every rank from one training')")
    p.add_argument("--recover-steps", type=recover_steps_arg, default=None,
                   help="with --strategy shrink or auto: training steps at each rank after the cut (default: 25)")
    p.add_argument("--max-examples", type=positive_int, help="training rows per adapter (default: the preset's)")
    p.add_argument("--batch-size", type=positive_int, help="training batch size (default: 16)")
    p.add_argument("--rft-questions", type=positive_int, help="training questions offered to rejection sampling")
    p.add_argument("--rft-samples", type=positive_int, help="completions sampled per question for RFT data")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed for sampling pairs and training (default: 0)")
    p.add_argument("--artifacts", type=Path, default=Path("runs/artifacts"),
                   help="artifact cache shared by studies and workers (default: runs/artifacts)")
    p.add_argument("--force", action="store_true",
                   help="resume a study even though its base model or data changed")
    add_no_progress(p)
    p.add_argument("--decide-minutes", type=non_negative_float, default=None, metavar="M",
                   help="after the trials, grade the pick and its close rivals on more questions (and seeds) for up "
                   "to M minutes while the pick is not decisive (ranksweep decide); 0: skip it (default: "
                   "15%% of this launch's search time where that is a minute or more)")
    return p


def _data_paths(args) -> tuple[Path, Path, Path | None]:
    train, valid, rft = args.train_data, args.valid_data, args.rft_data
    if args.homework is not None:
        data = args.homework / "data"
        if not (args.homework / "homework").is_dir():
            raise RanksweepError(f"'{args.homework}' has no homework/ folder; --homework takes the homework root.")
        train = train or data / "train.json"
        valid = valid or data / "valid.json"
        if rft is None and (data / "rft.json").is_file():
            rft = data / "rft.json"
    if train is None or valid is None:
        builtin_train, builtin_valid = builtin_data(_level(args))
        train, valid = train or builtin_train, valid or builtin_valid
    for path in (train, valid, rft):
        if path is not None and not path.is_file():
            raise RanksweepError(f"Data file '{path}' does not exist.")
    return train, valid, rft


def _level(args) -> str:
    """The built-in data level: --level, else the preset's."""
    return level_named(args.level or PRESETS[args.preset].level).name


def build_settings(args):
    """Turn the command line into StudySettings (validating data files and the search space)."""
    check_strategy(args.strategy, args.recover_steps)
    if args.trainer == "homework" and args.objective == "answer-nll":
        # The course grader reports answers right or wrong, no likelihoods: every trial would score NaN.
        raise RanksweepError("--objective answer-nll needs ranksweep's own grading, which --trainer homework "
                             "replaces with the homework's grader: choose points or an accuracy objective.")
    train, valid, rft = _data_paths(args)
    train_rows = len(read_qa(train))
    read_qa(valid)  # validate now: a bad file should fail before any training
    rft_rows = len(read_rft(rft)) if rft is not None else None
    preset = with_overrides(
        PRESETS[args.preset],
        sft_ranks=parse_ranks(args.sft_ranks) if args.sft_ranks else None,
        rft_ranks=parse_ranks(args.rft_ranks) if args.rft_ranks else None,
        alpha_ratios=parse_floats(args.alpha_ratios, "Alpha ratios") if args.alpha_ratios else None,
        lrs=parse_floats(args.lrs, "Learning rates") if args.lrs else None,
        epochs=parse_floats(args.epochs, "Epochs") if args.epochs else None,
        adapter_dtypes=tuple(d.strip() for d in args.adapter_dtypes.split(",")) if args.adapter_dtypes else None,
        max_examples=args.max_examples,
        batch_size=args.batch_size,
        rft_questions=args.rft_questions,
        rft_samples=args.rft_samples,
        trials=args.trials,
    )
    effort = preset.effort
    if args.questions is not None:
        effort = replace(effort, questions=args.questions)
    resolve_device(args.device)
    return StudySettings(
        name=args.study, storage=args.storage, base_model=args.base_model, device=args.device,
        objective=args.objective, budget_bytes=budget_bytes(args.budget_mb), space=preset.space, effort=effort,
        trials=preset.trials, seed=args.seed, preset=args.preset, artifacts=args.artifacts,
        train_path=train, valid_path=valid, rft_path=rft, homework=args.homework,
        **_strategy(args, train_rows, rft_rows, preset), trainer=args.trainer,
        prompt_template=check_prompt_template(args.prompt_template),
        level=_level(args) if args.train_data is None and args.homework is None else None,
    )


def _strategy(args, train_rows: int, rft_rows: int | None, preset) -> dict:
    """The study's strategy and recovery steps, `auto` resolved from the shortest training of the space: SFT's,
    or RFT's on its data (at most the questions offered to rejection sampling when it is yet to be sampled)."""
    effort = preset.effort
    if rft_rows is None:
        rft_rows = min(train_rows, effort.rft_questions or train_rows)
    shortest = min(
        steps_for(min(rows, effort.max_examples or rows), effort.batch_size, min(preset.space.epochs))
        for rows in (train_rows, rft_rows)
    )
    requested = args.strategy
    if requested == "auto" and getattr(args, "trainer", "ranksweep") != "ranksweep":
        requested = "independent"  # another trainer makes each adapter its own way
    strategy, steps = resolve_strategy(requested, args.recover_steps, shortest)
    return {"strategy": strategy, "recover_steps": steps}


def run(args) -> int:
    set_threads(args.threads)
    settings = build_settings(args)
    rest = bundle.rest_bytes(settings.homework) if settings.homework else 0
    if settings.trainer == "homework":  # its commands checked, and its rest measured by its own bundle.py
        rest = homework_rest_bytes(settings, check_homework_trainer(settings))
    feasible_pairs(settings, rest)  # an impossible budget or unknown model is refused before the study exists
    writable_folder(settings.artifacts, "--artifacts")
    opened = open_study(settings, rest, force=args.force)  # checks the study before writing to it
    started = time.monotonic()
    code = execute(opened, settings, progress=not args.no_progress)
    if code == 0:
        minutes = after_launch_minutes(opened.study, settings, args.decide_minutes, time.monotonic() - started)
        if minutes > 0:
            try:
                decide_study(opened, settings, minutes=minutes, progress=not args.no_progress)
            except RanksweepError as exc:  # no pick to decide on (nothing fits yet): the search's result stands
                print(f"Decision phase skipped: {exc}")
            except KeyboardInterrupt:
                print("\nStopped the decision phase; what it graded is kept. Continue it with: ranksweep decide "
                      f"--study {settings.name}", file=sys.stderr)
                return 130
    return code
