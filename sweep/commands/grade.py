"""`ranksweep grade`: grade one adapter (or the bare base model) by the homework's rule."""

from __future__ import annotations

import json
from pathlib import Path

from sweep.commands.common import add_base_model, add_device, positive_int, questions_arg
from trainers.errors import RanksweepError
from trainers.grading import BATCH_SIZE, KINDS


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
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    return parser


def _kind(args, adapter: Path | None) -> str:
    from trainers.grading import read_adapter_kind

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


def run(args) -> int:
    from trainers.data import read_qa
    from trainers.grading import grade_model

    questions, batch_size = args.questions, args.batch_size
    adapter = None if args.adapter == "none" else Path(args.adapter)
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        what = "does not exist" if not adapter.exists() else "has no adapter_config.json"
        raise RanksweepError(f"Adapter folder '{adapter}' {what}: pass a trained adapter folder or 'none'.")
    kind = _kind(args, adapter)
    if args.valid_data is None:
        from trainers.unitgen import builtin_data

        valid_path = builtin_data()[1]
    else:
        valid_path = args.valid_data
    rows = read_qa(valid_path)

    from trainers.models import load_model

    loaded = load_model(args.base_model, args.device)
    grade = grade_model(
        loaded, rows, kind=kind, adapter_dir=adapter, questions=questions, batch_size=batch_size, progress=not args.json
    )
    if args.json:
        print(json.dumps({**grade.to_json(), "adapter": str(adapter) if adapter else None, "base_model": args.base_model}))
        return 0
    low, high = grade.ci_low * 100, grade.ci_high * 100
    print(f"{kind.upper()} {adapter or 'base model'} on {args.base_model} ({loaded.device})")
    print(f"  accuracy     {grade.accuracy:6.1%}  ({grade.correct}/{grade.questions}, 95% CI {low:.1f}–{high:.1f}%)")
    print(f"  answer rate  {grade.answer_rate:6.1%}  ({grade.parsed}/{grade.questions} gave a number in <answer> tags)")
    print(f"  points       {grade.points:6.2f}  (of {25 if kind == 'sft' else 30})")
    print(f"  time         {grade.seconds:6.1f} s")
    return 0
