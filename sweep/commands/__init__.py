"""One module per CLI subcommand, each with `add_parser(subparsers)` and `run(args) -> int`.

Modules import torch, transformers and optuna inside `run` so that `ranksweep --help` stays fast.
"""

import pkgutil

# The order `ranksweep --help` lists them in; a module not named here is listed after these.
ORDER = ["train", "rft_data", "grade", "size", "launch", "worker", "status", "report", "decide", "export"]
HELPERS = {"common", "running"}


def command_modules() -> list[str]:
    found = {m.name for m in pkgutil.iter_modules(__path__) if m.name not in HELPERS}
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))
