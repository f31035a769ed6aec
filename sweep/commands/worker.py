"""`ranksweep worker`: join an existing study from another process or machine (same loop as launch)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from sweep.commands.common import add_device, add_no_progress, add_storage, add_threads, positive_int
from sweep.commands.running import execute
from sweep.files import writable_folder
from sweep.settings import settings_from_config
from sweep.storage import write_config
from sweep.study import feasible_pairs, load_existing
from trainers.hardware import set_threads
from trainers.models import resolve_device


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "worker",
        help="join an existing study and run its trials (one per GPU, any number of machines)",
        description="Join a study created by `ranksweep launch` and run trials until it has as many complete "
        "pairs as it asked for. Workers share the study through its storage (PostgreSQL across machines, SQLite "
        "on one machine) and the trained adapters through the artifact folder, whose file locks make sure no "
        "adapter is trained twice.",
    )
    p.add_argument("--study", required=True, help="name of an existing study")
    add_storage(p)
    add_device(p)
    add_threads(p)
    p.add_argument("--artifacts", type=Path, default=None,
                   help="artifact folder (default: the one the study was launched with)")
    p.add_argument("--trials", type=positive_int, default=None,
                   help="raise the study's target of distinct complete pairs to this many (default: keep it)")
    add_no_progress(p)
    return p


def run(args) -> int:
    set_threads(args.threads)
    # Reads only (a read-only storage is refused here); each worker draws with its own seed.
    opened = load_existing(args.study, args.storage, writes=True)
    config = opened.config
    settings = settings_from_config(config, name=args.study, storage=args.storage,
                                    device=args.device, artifacts=args.artifacts)
    # Every flag is checked before the study is touched: a bad one leaves no trial and no raised target.
    resolve_device(args.device)
    writable_folder(settings.artifacts, "--artifacts")
    feasible_pairs(settings, config.homework_rest_bytes)
    if args.trials is not None and args.trials > config.trials:
        # Raise only: a worker starting late must not lower the target another worker is running toward.
        write_config(opened.study, replace(config, trials=args.trials))
        settings = replace(settings, trials=args.trials)
    elif args.trials is not None and args.trials < config.trials:
        print(f"Study '{args.study}' asks for {config.trials} complete pairs; --trials {args.trials} leaves that "
              "target as it is (a worker only raises it).")
    return execute(opened, settings, progress=not args.no_progress)
