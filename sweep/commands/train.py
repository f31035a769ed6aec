"""`ranksweep train`: train one SFT or RFT LoRA adapter outside a study, with the study's own trainer."""

from __future__ import annotations

from pathlib import Path

from sweep.commands.common import (add_base_model, add_device, add_no_progress, alpha_ratio, check_output, epochs_arg, learning_rate,
                                   positive_int, rank_arg, seed_arg)
from trainers.adapter_files import is_adapter_folder
from trainers.data import file_sha256, read_qa, read_rft
from trainers.models import load_model
from trainers.prompts import DEFAULT_PROMPT_TEMPLATE, check_prompt_template, templated
from trainers.rft_data import ensure_rft_data
from trainers.training import (ADAPTER_DTYPES, KINDS, MAX_RANK, TrainConfig, rft_examples, sft_examples, train_adapter,
                               validate)
from trainers.unitgen import builtin_data

DEFAULTS = TrainConfig(kind="sft", rank=1)


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "train",
        help="train one SFT or RFT LoRA adapter",
        description="Train one LoRA adapter (all-linear targets) and save it as a PEFT folder, with "
        "training_log.csv and ranksweep.json beside it. SFT trains each question to be completed by "
        "<answer>value</answer>; RFT by a reasoning chain ending the same way. Without data files, SFT uses "
        "the built-in unit-conversion questions and RFT generates (and caches) rejection-sampled chains.",
    )
    parser.add_argument("kind", choices=KINDS, help="sft or rft")
    parser.add_argument("--rank", required=True, type=rank_arg, metavar="R",
                        help=f"LoRA rank (a whole number from 1 to {MAX_RANK})")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="adapter folder to write: a new or empty folder, or an adapter folder with --force")
    parser.add_argument("--force", action="store_true", help="replace the adapter already in --out")
    add_base_model(parser)
    add_device(parser)
    parser.add_argument(
        "--train-data", type=Path, metavar="FILE", help="[question, answer] JSON (default: built-in questions)"
    )
    parser.add_argument(
        "--rft-data",
        type=Path,
        metavar="FILE",
        help="rft only: [question, answer, reasoning] JSON (default: rejection-sampled from --train-data "
        "with --base-model, and cached)",
    )
    numbers = [
        ("--epochs", "E", DEFAULTS.epochs, epochs_arg, "passes over the data, fractions allowed, at most 1000"),
        ("--lr", "X", DEFAULTS.lr, learning_rate, "peak learning rate, at most 1 (linear warmup, cosine decay)"),
        ("--alpha-ratio", "A", DEFAULTS.alpha_ratio, alpha_ratio, "lora_alpha = A x rank"),
        ("--batch-size", "B", DEFAULTS.batch_size, positive_int, "rows per optimizer step"),
        ("--seed", "S", DEFAULTS.seed, seed_arg, "seeds LoRA init, shuffling and the --max-examples draw"),
    ]
    for flag, metavar, default, kind, text in numbers:
        parser.add_argument(flag, default=default, type=kind, metavar=metavar, help=f"{text} (default: {default:g})")
    parser.add_argument("--max-examples", type=positive_int, metavar="N",
                        help="train on N rows drawn with --seed (default: all)")
    parser.add_argument(
        "--adapter-dtype",
        choices=ADAPTER_DTYPES,
        default=DEFAULTS.adapter_dtype,
        help=f"dtype of the saved weights; fp16 halves the file (default: {DEFAULTS.adapter_dtype})",
    )
    parser.add_argument("--prompt-template", default=DEFAULT_PROMPT_TEMPLATE, metavar="T",
                        help="the text your code feeds the model, with {question} where the question goes, e.g. "
                        "'{question} ' for a format_prompt that appends a space (default: the raw question)")
    add_no_progress(parser)
    return parser


def _examples(args):
    """The training pairs and the file they came from; data problems surface before any model loads."""
    if args.kind == "sft":
        path = args.train_data or builtin_data()[0]
        return sft_examples(read_qa(path)), path
    if args.rft_data is not None:
        path = args.rft_data
    else:
        train_path = args.train_data or builtin_data()[0]
        read_qa(train_path)  # a bad file is reported before the generator model loads
        path = ensure_rft_data(args.base_model, args.device, Path(train_path), progress=not args.no_progress)
    return rft_examples(read_rft(path)), path


def run(args) -> int:
    config = TrainConfig.from_attrs(args)
    validate(config, None, args.out)  # before any data generation or model loading
    check_output(args.out, "--out", ours=is_adapter_folder, what="a ranksweep adapter folder", force=args.force)
    check_prompt_template(args.prompt_template)
    examples, data_path = _examples(args)
    examples = templated(examples, args.prompt_template)
    validate(config, examples, args.out)
    loaded = load_model(args.base_model, args.device)
    result = train_adapter(
        loaded,
        examples,
        config,
        args.out,
        progress=not args.no_progress,
        metadata={"data_path": str(data_path), "data_sha256": file_sha256(data_path),
                  "prompt_template": args.prompt_template},
        replace=args.force,  # without --force, a folder another run filled meanwhile is not replaced
    )
    print(f"adapter folder:    {result.adapter_dir}")
    print(f"trainable params:  {result.trainable_params:,}")
    print(f"adapter file:      {result.raw_bytes:,} bytes ({config.adapter_dtype})")
    print(f"steps:             {result.steps} ({result.examples} examples, batch {config.batch_size})")
    print(f"final loss:        {result.losses[-1]:.4f}")
    print(f"seconds:           {result.seconds:.1f}")
    return 0
