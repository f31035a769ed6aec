"""`ranksweep grade`: grade one adapter (or the bare base model) by the homework's rule."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from sweep.commands.common import add_base_model, add_device, add_no_progress, positive_int, questions_arg
from sweep.homework.config import read_config
from sweep.homework.grade import disagree, grade_with_homework
from sweep.homework.tree import check_homework
from trainers.data import QA, read_qa
from trainers.errors import RanksweepError
from trainers.grading import BATCH_SIZE, grade_model, points, read_adapter_kind
from trainers.models import load_model
from trainers.training import KINDS
from trainers.prompts import DEFAULT_PROMPT_TEMPLATE, check_prompt_template, read_adapter_template, render_prompt
from trainers.unitgen import builtin_data


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "grade",
        help="grade an adapter on validation questions",
        description="Answer the first N validation questions greedily with the base model plus an adapter and "
        "grade them as the homework does: the number in <answer>…</answer> is right when within 5% of the truth "
        "(both rounded to 3 decimals). Prints accuracy with its Wilson 95% interval, answer rate and points.",
    )
    parser.add_argument(
        "--adapter", required=True, metavar="DIR", help="PEFT adapter folder, or 'none' to grade the base model alone"
    )
    add_base_model(parser)
    add_device(parser)
    parser.add_argument(
        "--valid-data", type=Path, metavar="FILE", help="[question, answer] JSON (default: built-in valid.json)"
    )
    parser.add_argument("--questions", default=100, type=questions_arg, metavar="N", help="grade the first N questions, or 'all' (default: 100)")
    parser.add_argument("--kind", choices=KINDS, help="sft or rft (default: the kind in the adapter's ranksweep.json)")
    parser.add_argument("--batch-size", default=BATCH_SIZE, type=positive_int, metavar="B",
                        help=f"questions answered together (default: {BATCH_SIZE})")
    parser.add_argument("--prompt-template", metavar="T",
                        help="the text the model is asked, with {question} where the question goes, e.g. "
                        "'{question} ' (default: the template the adapter was trained with, else the raw question)")
    parser.add_argument("--homework", type=Path, metavar="DIR",
                        help="also grade the adapter with the homework's own loader and benchmark, in a scratch copy "
                        "of DIR loading --base-model (DIR is never changed; names and timeouts from DIR/ranksweep.toml)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    add_no_progress(parser)
    return parser


def _kind(args, adapter: Path | None) -> str:
    recorded = read_adapter_kind(adapter) if adapter is not None else None
    if recorded is not None and recorded not in KINDS:
        raise RanksweepError(f"'{adapter}/ranksweep.json' names kind '{recorded}'; pass --kind sft or --kind rft.")
    if recorded is not None and args.kind is not None and args.kind != recorded:
        raise RanksweepError(f"The adapter was trained as {recorded} but --kind says {args.kind}; drop --kind.")
    kind = recorded or args.kind
    if kind is None:
        where = "the base model" if adapter is None else f"'{adapter}' (it has no ranksweep.json)"
        raise RanksweepError(f"Cannot tell whether {where} is graded as SFT or RFT: pass --kind sft or --kind rft.")
    return kind


def _prompt_template(args, adapter: Path | None) -> str:
    """--prompt-template, else the one recorded beside the adapter at training, else the raw question."""
    if args.prompt_template is not None:
        return check_prompt_template(args.prompt_template)
    recorded = read_adapter_template(adapter) if adapter is not None else None
    return recorded or DEFAULT_PROMPT_TEMPLATE


def run(args) -> int:
    questions, batch_size = args.questions, args.batch_size
    adapter = None if args.adapter == "none" else Path(args.adapter)
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        what = "does not exist" if not adapter.exists() else "has no adapter_config.json"
        raise RanksweepError(f"Adapter folder '{adapter}' {what}: pass a trained adapter folder or 'none'.")
    kind = _kind(args, adapter)
    template = _prompt_template(args, adapter)
    homework_config = None
    if args.homework is not None:
        if adapter is None:
            raise RanksweepError("--homework grades an adapter through the homework's loader: pass --adapter DIR.")
        homework_config = read_config(check_homework(args.homework))
    if args.valid_data is not None:
        valid_path = args.valid_data
    elif homework_config is not None:
        valid_path = args.homework / homework_config.valid_data
    else:
        valid_path = builtin_data()[1]
    rows = [QA(render_prompt(template, row.question), row.answer) for row in read_qa(valid_path)]

    theirs = None
    if homework_config is not None:  # first: the user's code is the likelier one to fail
        theirs = grade_with_homework(args.homework, adapter, kind, questions=questions, config=homework_config,
                                     base_model=args.base_model)

    loaded = load_model(args.base_model, args.device)
    grade = grade_model(loaded, rows, kind=kind, adapter_dir=adapter, questions=questions, batch_size=batch_size,
                        progress=not (args.json or args.no_progress))
    if args.json:
        record = {**grade.to_json(), "adapter": str(adapter) if adapter else None, "base_model": args.base_model,
                  "prompt_template": template}
        if theirs is not None:
            record["homework"] = asdict(theirs)
        print(json.dumps(record))
        return 0
    low, high = grade.ci_low * 100, grade.ci_high * 100
    print(f"{kind.upper()} {adapter or 'base model'} on {args.base_model} ({loaded.device})")
    if theirs is not None:
        _print_comparison(grade, theirs, template, args.homework)
        return 0
    print(f"  accuracy     {grade.accuracy:6.1%}  ({grade.correct}/{grade.questions}, 95% CI {low:.1f}–{high:.1f}%)")
    print(f"  answer rate  {grade.answer_rate:6.1%}  ({grade.parsed}/{grade.questions} gave a number in <answer> tags)")
    print(f"  points       {grade.points:6.2f}  (of {25 if kind == 'sft' else 30})")
    print(f"  time         {grade.seconds:6.1f} s")
    return 0


def _print_comparison(ours, theirs, template: str, homework: Path) -> None:
    def row(label, acc, correct, n, low, high, rate, seconds):
        print(f"  {label:<16} {acc:6.1%}  ({correct}/{n}, 95% CI {low * 100:.1f}–{high * 100:.1f}%)   "
              f"answer rate {rate:6.1%}   points {points(ours.kind, acc):5.2f}   {seconds:5.1f} s")

    print(f"  {'':<16} accuracy")
    row("homework's code", theirs.accuracy, theirs.correct, theirs.questions, theirs.ci_low, theirs.ci_high,
        theirs.answer_rate, theirs.seconds)
    row("ranksweep", ours.accuracy, ours.correct, ours.questions, ours.ci_low, ours.ci_high, ours.answer_rate,
        ours.seconds)
    if theirs.questions != ours.questions:
        print(f"  note: the homework asked {theirs.questions} questions, ranksweep {ours.questions}")
    if disagree(theirs, ours.ci_low, ours.ci_high):
        print(f"  the graders disagree: the homework's {theirs.accuracy:.1%} is outside ranksweep's 95% interval. "
              f"ranksweep prompted with {template!r}; train and grade with --prompt-template set to the text "
              f"{homework}'s format_prompt returns.")
    else:
        print("  the graders agree: the homework's accuracy is inside ranksweep's 95% interval")
