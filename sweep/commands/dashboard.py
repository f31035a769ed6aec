"""`ranksweep dashboard`: a study in optuna-dashboard on 127.0.0.1, with its objectives named, the recommended
pair in the study's note and the report's figures as artifacts."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reports.build import build
from reports.dashboard import annotate, figures_dir, listen, serve, study_url
from reports.dashboard import annotations as dashboard_annotations  # `annotations` names the __future__ feature
from sweep.commands.common import add_storage
from sweep.storage import open_storage
from trainers.errors import RanksweepError


def port_arg(text: str) -> int:
    """argparse type: a TCP port, 0 for any free one."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"'{text}' is not valid: give a port from 0 to 65535 (0: any free one)")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "dashboard",
        help="show a study in optuna-dashboard (needs the 'dashboard' extra)",
        description="Serve optuna-dashboard for one study on 127.0.0.1 until Ctrl-C. Before serving it writes "
        "into the study, through Optuna's and optuna-dashboard's public APIs: the objective names (only when "
        "the study has none, as studies launched by older ranksweep versions), the recommended pair and the "
        "Pareto frontier as the study's note (text you add below ranksweep's part in the dashboard is kept), and "
        "the report's two figures as study artifacts, stored as files in --figures. A trial shows as infeasible "
        "in the Pareto-front plot when its zip is over the budget. --read-only writes none of this.",
    )
    p.add_argument("--study", required=True, help="study name")
    add_storage(p)
    p.add_argument("--port", type=port_arg, default=8080, help="port on 127.0.0.1 (default: 8080; 0: any free one)")
    p.add_argument("--figures", type=Path, default=None,
                   help="folder holding the figures the dashboard shows as artifacts (default: "
                   "runs/<study>/dashboard-artifacts/ under the working directory; start the dashboard from the "
                   "same folder to see them again)")
    p.add_argument("--read-only", action="store_true",
                   help="write nothing into the study or on disk: no names, note or figures, and the served page "
                   "refuses every change (deleting or renaming studies, notes, uploads)")
    return p


def run(args: argparse.Namespace) -> int:
    try:
        import optuna_dashboard  # noqa: F401  (an optional dependency: say how to get it)
    except ImportError:
        raise RanksweepError("optuna-dashboard is not installed; install it with "
                             "`pip install 'optuna-dashboard>=0.21,<0.22'` (or `make install`).") from None
    import optuna

    report = build(args.storage, args.study)  # a missing storage or study is one sentence from here
    storage = open_storage(args.storage, writes=not args.read_only)  # a read-only storage: one sentence
    study = optuna.load_study(study_name=args.study, storage=storage)
    with listen(args.port) as server:  # a port in use fails before anything is written
        if not args.read_only:
            store = _annotate(args, report, study)
        elif args.figures is not None:
            store = optuna.artifacts.FileSystemArtifactStore(args.figures)  # show figures written earlier
        else:
            default = figures_dir(args.study)
            store = optuna.artifacts.FileSystemArtifactStore(default) if default.is_dir() else None

        study_id = storage.get_study_id_from_name(args.study)

        def ready(port: int) -> None:
            print(f"optuna-dashboard for study '{args.study}': {study_url(port, study_id)} (Ctrl-C stops it)",
                  flush=True)

        try:
            serve(server, storage, store, ready, read_only=args.read_only)
        except KeyboardInterrupt:
            print("Dashboard stopped.", file=sys.stderr)
    return 0


def _annotate(args: argparse.Namespace, report, study):
    """Write the names, note and figures into the study and return the figures' artifact store."""
    import optuna
    import sqlalchemy.exc

    folder = args.figures if args.figures is not None else figures_dir(args.study)
    folder.mkdir(parents=True, exist_ok=True)
    store = optuna.artifacts.FileSystemArtifactStore(folder)
    try:
        written = annotate(study, dashboard_annotations(report), store)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = str(exc).strip().splitlines()[0][:200]
        raise RanksweepError(f"Cannot write the note and figures into {args.storage} ({reason}); pass "
                             "--read-only to only show the study.") from None
    changes = [what for what, done in (("objective names", written.metric_names), ("note", written.note))
               if done] + ([f"{written.figures} figures in {folder}/"] if written.figures else [])
    print("Wrote " + ", ".join(changes) + "." if changes else "The study's note and figures are up to date.")
    return store
