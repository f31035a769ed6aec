"""python -m grader <zip or folder>: load the submitted adapters and score them, one `N / M` line per case."""

import importlib
import json
import sys
import tempfile
import zipfile
from pathlib import Path

VALID = Path(__file__).resolve().parent.parent / "data" / "valid.json"
MAX_QUESTIONS = 100


def clip01(x: float) -> float:
    return min(1.0, max(0.0, x))


def accuracy(llm, rows) -> float:
    answers = llm.answer(*[question for question, _ in rows])
    correct = 0
    for answer, (_, truth) in zip(answers, rows):
        a, t = round(answer, 3), round(truth, 3)
        correct += abs(a - t) < 0.05 * abs(t)
    return correct / len(rows)


def case(name: str, acc: float, points: float, of: int) -> None:
    print(f"  - {name:<34} accuracy {acc:.3f}   [ {points:.0f} / {of} ]")


def grade(submission: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        if submission.is_file():
            with zipfile.ZipFile(submission) as archive:
                archive.extractall(scratch)
            root = Path(scratch)
        else:
            root = submission.resolve().parent if submission.name == "homework" else submission.resolve()
        sys.path.insert(0, str(root))
        homework = importlib.import_module("homework")
        rows = json.loads(VALID.read_text())[:MAX_QUESTIONS]
        total = 0.0
        print("SFT model")
        acc = accuracy(homework.load_sft(), rows)
        sft = 25 * clip01((acc - 0.4) / 0.2)
        case("SFT answer accuracy", acc, sft, 25)
        print("RFT model")
        acc = accuracy(homework.load_rft(), rows)
        rft, extra = 25 * clip01((acc - 0.6) / 0.1), 5 * clip01((acc - 0.7) / 0.1)
        case("RFT answer accuracy", acc, rft, 25)
        case("RFT answer accuracy (extra credit)", acc, extra, 5)
        total = sft + rft + extra
        print(f"Total {total:.0f} / 55")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m grader <zip or homework folder>")
    grade(Path(sys.argv[1]))
