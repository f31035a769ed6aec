"""`ranksweep size`: how big an SFT/RFT adapter pair will be, before training, against a zip budget."""

from __future__ import annotations

import json
from pathlib import Path

from sweep import bundle, sizing
from sweep.commands.common import add_base_model, budget_mb, rank_arg
from sweep.sizing import DEFAULT_BUDGET_MB, mib
from trainers.errors import RanksweepError
from trainers.training import ADAPTER_DTYPES



def add_parser(subparsers):
    parser = subparsers.add_parser(
        "size",
        help="predict adapter sizes and the zipped submission before training",
        description="Predict the exact adapter_model.safetensors bytes of an SFT/RFT LoRA pair (all-linear targets) "
        "from the base model's config alone, bound the zipped submission, and say whether it fits the budget. "
        "Without ranks, list for each SFT rank the largest RFT rank that fits. Sizes are in MiB "
        "(bytes/1024/1024, as the homework reports them). --base-model also takes smollm2-135m and smollm2-360m, "
        "whose dimensions are built in (no download).",
    )
    add_base_model(parser)
    parser.add_argument("--sft-rank", type=rank_arg, metavar="R", help="LoRA rank of the SFT adapter")
    parser.add_argument("--rft-rank", type=rank_arg, metavar="R", help="LoRA rank of the RFT adapter")
    parser.add_argument(
        "--budget-mb", type=budget_mb, metavar="MB", default=DEFAULT_BUDGET_MB,
        help=f"zip budget in MiB (default: {DEFAULT_BUDGET_MB:g})"
    )
    parser.add_argument(
        "--adapter-dtype",
        choices=ADAPTER_DTYPES,
        default="fp32",
        help="dtype the adapters are saved in (default: fp32)",
    )
    parser.add_argument("--homework", metavar="DIR", help="directory holding homework/: its other files count too")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _adapter_dict(adapter) -> dict:
    return {
        "rank": adapter.rank,
        "params": adapter.params,
        "raw_bytes": adapter.raw_bytes,
        "compressed_bytes": adapter.compressed_bytes,
    }


def _pair_dict(pair, budget: int) -> dict:
    return {
        "sft": _adapter_dict(pair.sft),
        "rft": _adapter_dict(pair.rft),
        "rest_bytes": pair.rest_bytes,
        "total_raw_bytes": pair.total_raw_bytes,
        "total_compressed_bytes": pair.total_compressed_bytes,
        "budget_bytes": budget,
        "fits": pair.total_compressed_bytes <= budget,
    }


def _print_pair(pair, budget: int, args) -> None:
    print(f"Base model {args.base_model}, all-linear LoRA targets, adapters saved in {args.adapter_dtype}")
    print(f"{'':8}{'rank':>6}{'params':>14}{'raw MiB':>10}{'raw bytes':>14}")
    for label, adapter in (("SFT", pair.sft), ("RFT", pair.rft)):
        print(f"{label:8}{adapter.rank:>6}{adapter.params:>14,}{mib(adapter.raw_bytes):>10.2f}{adapter.raw_bytes:>14,}")
    print(f"{'total':8}{'':>6}{pair.sft.params + pair.rft.params:>14,}{mib(pair.total_raw_bytes):>10.2f}"
          f"{pair.total_raw_bytes:>14,}")
    if args.homework:
        print(f"Rest of the homework, zipped: {mib(pair.rest_bytes):.2f} MiB ({pair.rest_bytes:,} bytes)")
    print(f"Zipped submission, upper bound: {mib(pair.total_compressed_bytes):.2f} MiB "
          f"({pair.total_compressed_bytes:,} bytes)")
    print(f"Budget: {mib(budget):.2f} MiB ({budget:,} bytes)")
    margin = budget - pair.total_compressed_bytes
    if margin >= 0:
        print(f"Fits: {mib(margin):.2f} MiB to spare.")
    else:
        advice = "lower a rank" + (" or use --adapter-dtype fp16" if args.adapter_dtype == "fp32" else "")
        print(f"Does not fit: up to {mib(-margin):.2f} MiB over the budget; {advice}.")


def _print_pairs(pairs, budget: int, args) -> None:
    print(f"Largest feasible pairs for a {mib(budget):.2f} MiB budget "
          f"(base model {args.base_model}, {args.adapter_dtype} adapters):")
    print(f"{'SFT rank':>8}{'RFT rank':>10}{'SFT raw MiB':>13}{'RFT raw MiB':>13}{'zip bound MiB':>15}")
    for pair in pairs:
        print(f"{pair.sft.rank:>8}{pair.rft.rank:>10}{mib(pair.sft.raw_bytes):>13.2f}"
              f"{mib(pair.rft.raw_bytes):>13.2f}{mib(pair.total_compressed_bytes):>15.2f}")


def run(args) -> int:
    sft_rank, rft_rank = args.sft_rank, args.rft_rank
    if (sft_rank is None) != (rft_rank is None):
        raise RanksweepError("Give both --sft-rank and --rft-rank, or neither to list the largest pairs that fit.")
    budget = sizing.budget_bytes(args.budget_mb)
    rest = bundle.rest_bytes(Path(args.homework)) if args.homework else 0
    config = sizing.config_for(args.base_model)

    if sft_rank is not None:
        pair = sizing.pair_size(config, sft_rank, rft_rank, args.adapter_dtype, rest)
        if args.json:
            print(json.dumps(_pair_dict(pair, budget), indent=2))
        else:
            _print_pair(pair, budget, args)
        return 0

    # With no pair to list, the answer is an error that says how big the smallest pair is.
    sizing.check_budget(config, sizing.DEFAULT_SFT_RANKS, [1], budget, args.adapter_dtype, rest)
    pairs = sizing.largest_feasible_pairs(config, budget, args.adapter_dtype, rest)
    if args.json:
        print(json.dumps([_pair_dict(pair, budget) for pair in pairs], indent=2))
    else:
        _print_pairs(pairs, budget, args)
    return 0
