"""The homework's data: [question, answer] lists in data/<split>.json, and the benchmark."""

import json
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).parent.parent / "data"


class Dataset:
    def __init__(self, split: str):
        with (DATA_DIR / f"{split}.json").open() as f:
            self.data = json.load(f)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, idx: int):
        return self.data[idx]


def is_answer_valid(answer: float, correct_answer: float, relative_tolerance: float = 0.05) -> bool:
    answer, correct_answer = round(answer, 3), round(correct_answer, 3)
    return abs(answer - correct_answer) < relative_tolerance * abs(correct_answer)


@dataclass
class BenchmarkResult:
    accuracy: float
    answer_rate: float
    samples: list


def benchmark(func, dataset: Dataset, max_question: int) -> BenchmarkResult:
    rows = [dataset[i] for i in range(min(len(dataset), max_question))]
    answers = func.answer(*[question for question, _ in rows])
    samples = [(question, truth, answer) for (question, truth), answer in zip(rows, answers)]
    correct = sum(is_answer_valid(answer, truth) for _, truth, answer in samples)
    parsed = sum(answer == answer for _, _, answer in samples)  # NaN is the one value unequal to itself
    return BenchmarkResult(accuracy=correct / len(rows), answer_rate=parsed / len(rows), samples=samples)
