"""RFT data by rejection sampling: sample reasoning chains per training question, keep a correct one.

Each question is put to an instruct model inside a few-shot chat prompt (trainers/prompts.py); of its
K sampled completions the first whose answer passes the grading rule becomes the question's
reasoning, and questions with no correct completion are dropped.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from trainers.data import QA, RFTRow, file_sha256, read_qa, write_json_atomic, write_rft
from trainers.errors import RanksweepError
from trainers.fewshot import few_shot_named
from trainers.generation import sample
from trainers.grading import answer_is_hopeless, is_correct, parse_answer
from trainers.hardware import use_bf16
from trainers.models import cache_dir, load_model, resolve_device

STOP = "</answer>"


@dataclass(frozen=True)
class RFTSettings:
    """How RFT data is sampled: questions (None = all), samples per question, temperature, token budget, seed,
    and the few-shot prompt (trainers/fewshot.py, named like the built-in data levels).

    `batch_size` is the number of sequences decoded together (samples of batch_size // samples questions);
    bench/rft_generation.py measured 128 wide against 16 (docs/benchmarks.md).
    """

    questions: int | None = None
    samples: int = 10
    temperature: float = 0.7
    max_new_tokens: int = 128
    seed: int = 0
    batch_size: int = 128
    prompt: str = "homework"


@dataclass
class RFTReport:
    """What a rejection-sampling run produced: the kept rows and counts; `seconds` is generation wall time."""

    rows: list[RFTRow]
    asked: int
    kept: int
    completions: int
    seconds: float

    @property
    def success_rate(self) -> float:
        """Fraction of asked questions that got a correct reasoning chain."""
        return self.kept / self.asked if self.asked else 0.0

    def summary(self) -> dict:
        """The counts without the rows, as JSON."""
        return {
            "asked": self.asked,
            "kept": self.kept,
            "success_rate": self.success_rate,
            "completions": self.completions,
            "seconds": self.seconds,
        }


def pick_reasoning(completions: list[str], truth: float) -> str | None:
    """The first completion whose answer is correct, cut right after its `</answer>`; None if none is."""
    for text in completions:
        end = text.find(STOP)
        if end < 0:
            continue
        reasoning = text[: end + len(STOP)].strip()
        if is_correct(parse_answer(reasoning), truth):
            return reasoning
    return None


def generate_rft(loaded, rows: list[QA], settings: RFTSettings, *, progress: bool = True) -> RFTReport:
    """Rejection-sample a reasoning chain for each of the first `settings.questions` rows with `loaded`'s model."""
    from tqdm.auto import tqdm

    asked = rows if settings.questions is None else rows[: settings.questions]
    few_shot = few_shot_named(settings.prompt)
    prompts = [few_shot.render(loaded.tokenizer, row.question) for row in asked]
    chosen: list[str | None] = [None] * len(asked)
    with tqdm(total=len(asked), desc="rft samples", unit="q", disable=not progress, leave=False) as bar:

        def record(indices, completions):
            for i, texts in zip(indices, completions):
                chosen[i] = pick_reasoning(texts, asked[i].answer)
            bar.update(len(indices))
            bar.set_postfix_str(f"kept {sum(c is not None for c in chosen)}/{bar.n}")

        start = time.perf_counter()
        sample(
            loaded.model,
            loaded.tokenizer,
            prompts,
            k=settings.samples,
            temperature=settings.temperature,
            max_new_tokens=settings.max_new_tokens,
            stop=STOP,
            seed=settings.seed,
            batch_size=settings.batch_size,
            give_up=answer_is_hopeless,  # a chain whose answer cannot parse is never kept: stop sampling it
            on_batch=record,
        )
        seconds = time.perf_counter() - start
    kept = [RFTRow(row.question, row.answer, text) for row, text in zip(asked, chosen) if text is not None]
    return RFTReport(
        rows=kept, asked=len(asked), kept=len(kept), completions=len(asked) * settings.samples, seconds=seconds
    )


def sampling_dtype(device: str) -> str:
    """The generator's weight dtype, the one load_model holds a model in (trainers.hardware.use_bf16).

    Weights in bf16, not autocast per call, is what pays off in decoding: 32 prompts x 4 chains of up to 64
    tokens took 21.7 s in bf16 weights against 57.0 s in float32 on a 2-core avx512_bf16 CPU (autocast made
    it slower than float32)."""
    return "bfloat16" if use_bf16(resolve_device(device)) else "float32"


def rft_cache_key(generator: str, train_path: Path, settings: RFTSettings, dtype: str = "float32") -> str:
    """What RFT data depends on: the generator model's name and weight dtype, the training file's content,
    settings and prompt."""
    identity = {
        "generator": generator,
        "train_sha256": file_sha256(train_path),
        "settings": asdict(settings),
        "prompt": few_shot_named(settings.prompt).fingerprint(),
    }
    if dtype != "float32":  # float32 keeps the keys data sampled before this choice existed
        identity["dtype"] = dtype
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def ensure_rft_data(
    generator: str,
    device: str,
    train_path: Path,
    settings: RFTSettings | None = None,
    *,
    cache_root: Path | None = None,
    progress: bool = True,
    loaded=None,
) -> Path:
    """The cached rft.json for this generator, training file and settings; generated once when absent.

    `loaded`: the caller's model, sampled with when it is this generator in the sampling dtype (no second
    copy in memory); else the generator is loaded for the call. Beside the file lies `<name>.report.json`
    with asked, kept, success_rate, completions and seconds.
    """
    settings = settings or RFTSettings()
    train_path = Path(train_path)
    rows = read_qa(train_path)
    root = Path(cache_root) if cache_root is not None else cache_dir() / "rft"
    dtype = sampling_dtype(device)
    target = root / f"rft-{rft_cache_key(generator, train_path, settings, dtype)}.json"
    if target.is_file():
        return target
    if (loaded is None or loaded.name != generator or loaded.device != resolve_device(device)
            or _dtype_name(loaded.model) != dtype):
        loaded = load_model(generator, device)
    report = generate_rft(loaded, rows, settings, progress=progress)
    if report.kept == 0:
        raise RanksweepError(
            f"Rejection sampling kept none of {report.asked} questions ({report.completions} completions from "
            f"'{generator}' were all wrong): sample more per question or offer more questions (launch: "
            "--rft-samples, --rft-questions; rft-data: --samples, --questions), or use a stronger --base-model."
        )
    # The report goes first: whoever sees the data file may rely on its report being there.
    write_json_atomic(report_path(target), {"generator": generator, "dtype": dtype, **asdict(settings),
                                            **report.summary()})
    write_rft(target, report.rows)
    return target


def _dtype_name(model) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def report_path(rft_path: Path) -> Path:
    """Where the report of a cached rft.json lives: `<name>.report.json` beside it."""
    return rft_path.with_name(rft_path.stem + ".report.json")


def read_report(rft_path: Path) -> dict:
    """The report written beside a cached rft.json (empty when missing)."""
    path = report_path(rft_path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
