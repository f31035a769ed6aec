"""A ranksweep study as optuna-dashboard shows it: objective names, the recommended pair as the study's note,
the report's figures as study artifacts, and a loopback server that stops on Ctrl-C.

Everything written into the study goes through public APIs (`Study.set_metric_names`,
`optuna_dashboard.save_note`, `optuna.artifacts.upload_artifact`) and is skipped when already there, so
starting the dashboard twice on an unchanged study writes nothing the second time.
"""

from __future__ import annotations

import errno
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Callable, TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from reports.build import render, report_folder
from reports.tables import readable_frontier, state_counts
from sweep.sizing import MIB
from sweep.objective import MAXIMIZE, SIZE_METRIC, metric_names
from trainers.errors import RanksweepError

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts import FileSystemArtifactStore

    from reports.report import Report

HOST = "127.0.0.1"  # the dashboard can edit and delete studies: never listen beyond this machine
# The note's ranksweep part ends here; whatever a user typed below it in the dashboard survives a restart.
NOTE_END = "---\n*Above: written by `ranksweep dashboard` each time it starts. Below: your notes, kept.*"
# (An HTML comment would be invisible in Markdown but the dashboard prints it as text.)


@dataclass(frozen=True)
class Annotations:
    """What the dashboard should show beside the trials: objective names, the note, figures by file name."""

    metric_names: list[str]
    note: str
    figures: dict[str, bytes]


@dataclass(frozen=True)
class Written:
    """What `annotate` changed in the study (all false/0 when it was up to date)."""

    metric_names: bool
    note: bool
    figures: int


def figures_dir(study_name: str) -> Path:
    """runs/<study>/dashboard-artifacts/: beside the report's own folder (runs/<study>/report/)."""
    try:
        return report_folder(study_name).parent / "dashboard-artifacts"
    except RanksweepError:
        raise RanksweepError(f"The study name '{study_name}' cannot name a folder; pass --figures DIR for the "
                             "dashboard's figures.") from None


def annotations(report: Report) -> Annotations:
    """Names, note and figures for a study, computed with the report's own functions."""
    files = render(report)
    graded = int((report.trials["state"] == "COMPLETE").sum())
    # The trial count in the name tells figures of a study that grew apart in the dashboard's list.
    figures = {f"{stem}-{graded}-trials.png": files[f"{stem}.png"] for stem in ("pareto", "ranks")}
    return Annotations(metric_names(report.goal.name), note_markdown(report), figures)


def note_markdown(report: Report) -> str:
    """The study's note: the recommended pair and why, then the Pareto frontier as a Markdown table."""
    rec = report.recommendation
    lines = ["## ranksweep: recommended pair", ""]
    if rec is None:
        lines.append(f"No recommendation yet: {report.problem}")
    else:
        which = f"trial {rec.trial}" if rec.trial is not None else "never trained as one trial"
        lines += [f"**SFT rank {rec.sft_rank}, RFT rank {rec.rft_rank}** (alpha {rec.sft_alpha:g}/{rec.rft_alpha:g}, "
                  f"{rec.adapter_dtype}, {rec.size_bytes / MIB:.2f} MiB of {report.budget_bytes / MIB:.2f} MiB, "
                  f"{which}).", "", f"Why: {rec.reason}"]
        if rec.overlaps:
            lines += ["", f"Its 95% {report.goal.noun} {rec.overlaps}; grading more questions would tell them apart."]
    count = "1 trial" if len(report.trials) == 1 else f"{len(report.trials)} trials"
    way = "maximised" if report.goal.direction == MAXIMIZE else "minimised"
    lines += ["", f"{count} ({state_counts(report.trials)}); objectives: `{report.goal.name}` ({way}) and "
              f"`{SIZE_METRIC}` (minimised); a trial is feasible when its zip fits the budget."]
    front = readable_frontier(report.pairs, report.goal)
    if not front.empty:
        lines += ["", "### Pareto frontier", "", "Trial `-`: the two adapters come from different trials.", "",
                  "| " + " | ".join(front.columns) + " |", "|" + "---|" * len(front.columns)]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in front.itertuples(index=False)]
    lines += ["", "Figures: Study Artifacts, at the bottom of the study's page (`ranksweep report` writes the whole "
              "report).", "", NOTE_END]
    return "\n".join(lines)


def merged_note(ours: str, existing: str) -> str:
    """Our part replaced, the user's text after NOTE_END kept; a note ranksweep never wrote is kept below ours."""
    if NOTE_END in existing:
        kept = existing.split(NOTE_END, 1)[1]
    else:
        kept = ("\n\n" + existing) if existing.strip() else ""
    return ours + kept


def annotate(study: optuna.Study, wanted: Annotations, store: FileSystemArtifactStore) -> Written:
    """Write names (only when the study has none: the launcher names its studies), note and new figures."""
    from optuna_dashboard import get_note, save_note

    names = study.metric_names is None
    if names:
        study.set_metric_names(wanted.metric_names)
    existing = get_note(study)
    body = merged_note(wanted.note, existing)
    note = body != existing
    if note:  # each save adds a version; an unchanged note keeps its history short
        save_note(study, body)
    return Written(names, note, upload_new_figures(study, store, wanted.figures))


def upload_new_figures(study: optuna.Study, store: FileSystemArtifactStore, figures: dict[str, bytes]) -> int:
    """Upload each figure unless an artifact of the same name holds the same bytes; returns how many went up."""
    from optuna.artifacts import get_all_artifact_meta, upload_artifact

    existing = get_all_artifact_meta(study)
    uploaded = 0
    with tempfile.TemporaryDirectory() as folder:
        for name, data in figures.items():
            if any(meta.filename == name and _stored_bytes(store, meta.artifact_id) == data for meta in existing):
                continue
            path = Path(folder) / name  # upload_artifact names the artifact after the file
            path.write_bytes(data)
            upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study)
            uploaded += 1
    return uploaded


def _stored_bytes(store: FileSystemArtifactStore, artifact_id: str) -> bytes | None:
    """An artifact's content, or None when its file is gone (the folder was moved or deleted)."""
    from optuna.artifacts.exceptions import ArtifactNotFound

    try:
        with store.open_reader(artifact_id) as reader:
            return reader.read()
    except ArtifactNotFound:
        return None


def listen(port: int) -> WSGIServer:
    """A threaded WSGI server bound to HOST:port (0: any free port), without an app yet; bound before anything is
    written into the study, so that a port in use fails first. A RanksweepError when the port is in use.

    Threaded: the dashboard's page fetches the study, its plots and artifacts at once, and a single-threaded server
    (what `optuna_dashboard.run_server` uses) answers them one after another."""

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True  # a request in flight never holds up Ctrl-C

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format, *args):  # one line per request would bury the URL
            pass

    try:
        return Server((HOST, port), QuietHandler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise RanksweepError(f"Port {port} on {HOST} is in use; pass --port with another one (0 picks a "
                                 "free one).") from None
        raise


READ_METHODS = ("GET", "HEAD")


def refusing_writes(app):
    """`app` answering 405 to every request but GET and HEAD: optuna-dashboard's page deletes, creates and renames
    studies, writes notes, tells trials and uploads artifacts through such requests, and none reads with them."""
    body = json.dumps({"reason": "This dashboard was started with --read-only: it changes nothing."}).encode()

    def guarded(environ, start_response):
        if environ.get("REQUEST_METHOD", "GET").upper() in READ_METHODS:
            return app(environ, start_response)
        start_response("405 Method Not Allowed", [("Content-Type", "application/json"), ("Allow", ", ".join(
            READ_METHODS)), ("Content-Length", str(len(body)))])
        return [body]

    return guarded


def serve(server: WSGIServer, storage: optuna.storages.BaseStorage, store: FileSystemArtifactStore | None,
          on_ready: Callable[[int], None], *, read_only: bool = False) -> None:
    """Serve optuna-dashboard on a server from `listen` until Ctrl-C (KeyboardInterrupt propagates; the caller
    closes the server). `on_ready` gets the bound port; `read_only` refuses every request that could write."""
    import optuna_dashboard

    app = optuna_dashboard.wsgi(storage, artifact_store=store)
    server.set_app(refusing_writes(app) if read_only else app)
    on_ready(server.server_port)
    server.serve_forever()


def study_url(port: int, study_id: int) -> str:
    """The study's page in the dashboard (its Pareto-front plot is on it for a two-objective study)."""
    return f"http://{HOST}:{port}/dashboard/studies/{study_id}"

