"""Zip the homework folder for submission: python3 bundle.py homework <id>  ->  <id>.zip"""

import fnmatch
import sys
import zipfile
from pathlib import Path

MAXSIZE_MB = 50
EXCLUDE = ["__pycache__", "*.pyc", "*.md", "checkpoint-*", "events.out.tfevents*", "optimizer.pt",
           "scheduler.pt", "rng_state*.pth", "training_args.bin", "trainer_state.json"]


def excluded(path: Path) -> bool:
    return any(fnmatch.fnmatch(part, pattern) for part in path.parts for pattern in EXCLUDE)


def bundle(folder: str, name: str) -> Path:
    source = Path(folder).resolve()
    target = Path(f"{name}.zip")
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source.parent)
            if path.is_file() and not excluded(relative):
                archive.write(path, relative.as_posix())
    size_mb = target.stat().st_size / 1024 / 1024
    print(f"Submission created: {target.resolve()} {size_mb:.2f} MB")
    if size_mb > MAXSIZE_MB:
        print(f"Your bundle is over the {MAXSIZE_MB} MB limit.")
    return target


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python3 bundle.py homework <id>")
    bundle(sys.argv[1], sys.argv[2])
