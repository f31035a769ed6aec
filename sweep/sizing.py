"""Predict LoRA adapter file sizes exactly from a model config, before any training.

A LoRA on Linear(in, out) holds r·(in + out) parameters. PEFT saves them with safetensors: 8 bytes of header
length, a JSON header (names, shapes, offsets) padded with spaces to a multiple of 8, then the data. All of it
follows from the config and the rank, so the file size is exact; the zipped size depends on the trained values,
and for it we give an upper bound.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from functools import lru_cache, partial

from sweep.bundle import ADAPTER_FILES, ADAPTER_HOMES, ZIP_END_RECORD
from trainers.errors import RanksweepError
from trainers.models import resolve_config
from trainers.training import MAX_RANK, is_rank

MIB = 1024 * 1024
DTYPES = {"fp32": ("F32", 4), "fp16": ("F16", 2)}  # our name -> (safetensors dtype code, bytes per value)
PEFT_METADATA = {"format": "pt"}  # what peft's save_pretrained passes to safetensors
DEFAULT_SFT_RANKS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

# Deflate (zlib level 6, as zipfile writes) on adapter_model.safetensors. Adapters trained one epoch on the
# embedded 135M model (ranks 4, 8, 32) deflate to 0.920-0.925 of raw in float32 and 0.906-0.914 in float16,
# their weight data alone to 0.926-0.929 and 0.916-0.923. Training moves lora_A from peft's uniform init and
# lora_B from zero towards normal shapes (kurtosis 2.1 and 2.4 after one epoch; 1.8 and 3.0 are uniform and
# normal), and normal weights deflate worse: files in peft's exact layout for both SmolLM2 shapes, ranks
# 1-128, with A and B drawn normal at a trained adapter's spread, put the data at 0.9285-0.9354 (fp32) and
# 0.9225-0.9376 (fp16), worst for small tensors, where one deflate block's Huffman code serves several
# tensors. The bound follows that envelope with a margin of 0.2-0.6%: flat above KNEE_BYTES of data per
# tensor, rising by SLOPE per halving below. Heavier tails than normal (Laplace) would exceed it by up to 0.6%.
DATA_RATIO = {"fp32": 0.931, "fp16": 0.9255}
DATA_RATIO_SLOPE = {"fp32": 0.0015, "fp16": 0.0030}
KNEE_BYTES = 96 * 1024
# The JSON header is names and offsets; deflate shrinks it to 0.076-0.089 of its size.
HEADER_RATIO = 0.12
# Deflate framing where header and data meet; the zip member headers: local 30 + central 46 bytes plus the
# name twice, with slack for extra fields some zip tools add.
DEFLATE_SLACK = 256
ZIP_MEMBER_FIXED = 30 + 46
ZIP_MEMBER_SLACK = 64
# adapter_config.json is about 1.3 KB of JSON and deflates to about 0.6 KB; a long base-model path or an
# explicit target list adds to it, hence the allowance per listed target.
ADAPTER_CONFIG_BOUND = 2048
ADAPTER_MEMBERS = tuple(f"{ADAPTER_HOMES['sft']}/{name}" for name in ADAPTER_FILES)
MEMBER_OVERHEAD = sum(ZIP_MEMBER_FIXED + ZIP_MEMBER_SLACK + 2 * len(name) for name in ADAPTER_MEMBERS)


@dataclass(frozen=True)
class AdapterSize:
    """One adapter's size: parameters, exact adapter_model.safetensors bytes, and the deflate bound."""

    rank: int
    params: int
    raw_bytes: int
    dtype: str
    header_bytes: int = 0  # safetensors length prefix + JSON header, included in raw_bytes
    compressed_bytes: int = 0  # upper bound of the zipped adapter folder (weights + config + zip headers)


@dataclass(frozen=True)
class PairSize:
    """An SFT/RFT adapter pair and the zipped submission they make with the rest of the homework."""

    sft: AdapterSize
    rft: AdapterSize
    rest_bytes: int
    total_raw_bytes: int
    total_compressed_bytes: int


def _smollm2(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=49152, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, tie_word_embeddings=True, max_position_embeddings=8192,
    )


# The real SmolLM2 dimensions, built in code so that sizes can be asked without any download.
SHAPES = {
    "smollm2-135m": partial(_smollm2, hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3),
    "smollm2-360m": partial(_smollm2, hidden=960, intermediate=2560, layers=32, heads=15, kv_heads=5),
}


def config_for(name: str):
    """A model config without weights: a SHAPES name, else anything --base-model accepts."""
    if name in SHAPES:
        return SHAPES[name]()
    return resolve_config(name)


@dataclass(frozen=True)
class _Layout:
    """What an adapter's file depends on besides rank and dtype: the targeted layers' shapes, and the targets."""

    shapes: tuple[tuple[str, int, int], ...]
    targets: str | tuple[str, ...]


_layouts: dict[tuple[str, str | tuple[str, ...]], _Layout] = {}


def _layout(config, target_modules) -> _Layout:
    targets = target_modules if isinstance(target_modules, str) else tuple(target_modules)
    key = (config.to_json_string(use_diff=False), targets)
    if key not in _layouts:
        _layouts[key] = _Layout(_find_lora_shapes(config, key[1]), key[1])
    return _layouts[key]


def lora_shapes(config, target_modules="all-linear") -> list[tuple[str, int, int]]:
    """The Linear layers peft's LoRA wraps, as (module path, in_features, out_features), in module order."""
    return list(_layout(config, target_modules).shapes)


def _find_lora_shapes(config, targets) -> tuple[tuple[str, int, int], ...]:
    import torch
    from peft import LoraConfig
    from peft.tuners.tuners_utils import _maybe_include_all_linear_layers, check_target_module_exists
    from transformers import AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    # The meta device gives the module tree (names, layer types, in/out features) without allocating weights.
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices from building a model say nothing about sizes
        model = AutoModelForCausalLM.from_config(config)
    lora = LoraConfig(r=1, target_modules=targets if isinstance(targets, str) else list(targets), task_type="CAUSAL_LM")
    # peft's own "all-linear" expansion, so the selection (output head excluded) is the one get_peft_model makes.
    lora = _maybe_include_all_linear_layers(lora, model)
    shapes = []
    for name, module in model.named_modules():
        if not name or not check_target_module_exists(lora, name):
            continue
        if isinstance(module, torch.nn.Linear):
            shapes.append((name, module.in_features, module.out_features))
        elif isinstance(module, Conv1D):  # GPT-2 style: weight is (in, out)
            shapes.append((name, module.weight.shape[0], module.weight.shape[1]))
        else:
            raise RanksweepError(
                f"LoRA target '{name}' is a {type(module).__name__}, not a Linear layer; "
                "size prediction covers Linear targets only, so list Linear module names."
            )
    if not shapes:
        raise RanksweepError(f"No Linear layer of this model matches the LoRA targets {targets!r}; check the names.")
    return tuple(shapes)


def _check_rank(rank) -> int:
    if not is_rank(rank):
        raise RanksweepError(f"LoRA rank {rank!r} is not valid: use a whole number from 1 to {MAX_RANK}.")
    return int(rank)


def _check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise RanksweepError(f"Adapter dtype '{dtype}' is not supported: choose one of {', '.join(DTYPES)}.")
    return dtype


def _check_budget_bytes(budget) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 1 <= budget < math.inf:
        raise RanksweepError(f"Budget {budget!r} is not valid: give a positive number of bytes (see budget_bytes).")
    return int(budget)


def safetensors_header(entries: list[tuple[str, tuple[int, ...]]], dtype: str, metadata=PEFT_METADATA) -> bytes:
    """The bytes before the data in a safetensors file of these (name, shape) tensors: length prefix + JSON."""
    code, width = DTYPES[_check_dtype(dtype)]
    # safetensors orders tensors by dtype (all equal here), then by name as bytes, and lays data out in that order.
    ordered = sorted(entries, key=lambda entry: entry[0].encode("utf-8"))
    header = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, shape in ordered:
        size = math.prod(shape) * width
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    # serde_json's compact form; non-ASCII names stay raw UTF-8 as in the Rust writer.
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def adapter_tensors(
    config, rank: int, target_modules="all-linear", rank_pattern: dict[str, int] | None = None
) -> list[tuple[str, tuple[int, ...]]]:
    """The (saved name, shape) of every tensor in adapter_model.safetensors, as peft's save_pretrained names them."""
    return _tensors(lora_shapes(config, target_modules), _check_rank(rank), _check_pattern(rank_pattern))


def _check_pattern(rank_pattern) -> tuple[tuple[str, int], ...]:
    """A rank_pattern as a hashable tuple in its own order (peft takes the first key that matches)."""
    if not rank_pattern:
        return ()
    if not isinstance(rank_pattern, dict):
        raise RanksweepError(f"rank_pattern must map module names to ranks, not {type(rank_pattern).__name__}.")
    return tuple((str(key), _check_rank(value)) for key, value in rank_pattern.items())


def _module_rank(path: str, rank: int, pattern: tuple[tuple[str, int], ...]) -> int:
    if not pattern:
        return rank
    from peft.utils.other import get_pattern_key

    # peft's own matching (a key matches a module path it ends, at a dot), as LoraModel applies rank_pattern.
    ranks = dict(pattern)
    return ranks.get(get_pattern_key(ranks.keys(), path), rank)


def _tensors(shapes, rank: int, pattern: tuple[tuple[str, int], ...] = ()) -> list[tuple[str, tuple[int, ...]]]:
    tensors = []
    for path, in_features, out_features in shapes:
        r = _module_rank(path, rank, pattern)
        # peft drops the adapter name ("default") from saved keys: ...q_proj.lora_A.weight
        tensors.append((f"base_model.model.{path}.lora_A.weight", (r, in_features)))
        tensors.append((f"base_model.model.{path}.lora_B.weight", (out_features, r)))
    return tensors


def data_ratio(dtype: str, bytes_per_tensor: float = 0) -> float:
    """Upper bound of deflated/raw for LoRA weight data with this mean tensor size (bytes; 0 = unknown)."""
    if bytes_per_tensor <= 0:
        bytes_per_tensor = 1024  # unknown: assume small tensors, the least compressible case we model
    halvings = max(0.0, math.log2(KNEE_BYTES / bytes_per_tensor))
    return min(1.0, DATA_RATIO[_check_dtype(dtype)] + DATA_RATIO_SLOPE[dtype] * halvings)


def compressed_bound(raw_bytes: int, dtype: str, header_bytes: int = 0, tensors: int = 0) -> int:
    """Upper bound of adapter_model.safetensors deflated (bytes); the header size and tensor count tighten it."""
    header_bytes = min(max(header_bytes, 0), raw_bytes)
    data = raw_bytes - header_bytes
    ratio = data_ratio(dtype, data / tensors if tensors > 0 else 0)
    return math.ceil(data * ratio + header_bytes * HEADER_RATIO) + DEFLATE_SLACK


def _config_bound(target_modules) -> int:
    extra = 0 if isinstance(target_modules, str) else sum(len(t) + 4 for t in target_modules)
    return ADAPTER_CONFIG_BOUND + extra


def adapter_size(
    config,
    rank: int,
    dtype: str = "fp32",
    target_modules="all-linear",
    rank_pattern: dict[str, int] | None = None,
    alpha_pattern: dict[str, float] | None = None,
) -> AdapterSize:
    """Exact adapter_model.safetensors bytes and parameter count for one rank; no weights are loaded.

    `rank_pattern` gives modules their own rank as peft's LoraConfig does (a shrunk adapter's energy threshold
    writes one); `alpha_pattern` only scales and never changes the file, and is accepted so that a derived
    adapter's config can be passed as it is.
    """
    del alpha_pattern  # scaling lives in adapter_config.json, not in the weights file
    pattern = _check_pattern(rank_pattern)
    return _adapter_size(_layout(config, target_modules), _check_rank(rank), _check_dtype(dtype), pattern)


@lru_cache(maxsize=4096)
def _adapter_size(layout: _Layout, rank: int, dtype: str, pattern: tuple[tuple[str, int], ...] = ()) -> AdapterSize:
    tensors = _tensors(layout.shapes, rank, pattern)
    params = sum(math.prod(shape) for _, shape in tensors)
    header = len(safetensors_header(tensors, dtype))
    raw = header + params * DTYPES[dtype][1]
    folder = compressed_bound(raw, dtype, header, len(tensors)) + _config_bound(layout.targets) + MEMBER_OVERHEAD
    return AdapterSize(rank, params, raw, dtype, header_bytes=header, compressed_bytes=folder)


def pair_size(
    config, sft_rank: int, rft_rank: int, dtype: str = "fp32", rest_bytes: int = 0, target_modules="all-linear"
) -> PairSize:
    """Both adapters' exact raw bytes and the zipped-submission upper bound (bytes) with the rest of the homework."""
    layout = _layout(config, target_modules)
    return _pair_size(layout, _check_rank(sft_rank), _check_rank(rft_rank), _check_dtype(dtype), rest_bytes)


def predicted_pair(config, params, rest_bytes: int = 0) -> PairSize:
    """`pair_size` of a trial's params (a mapping holding sft_rank, rft_rank and adapter_dtype)."""
    return pair_size(config, params["sft_rank"], params["rft_rank"], params["adapter_dtype"], rest_bytes=rest_bytes)


def _pair_size(layout: _Layout, sft_rank: int, rft_rank: int, dtype: str, rest_bytes: int) -> PairSize:
    if isinstance(rest_bytes, bool) or not isinstance(rest_bytes, int) or rest_bytes < 0:
        raise RanksweepError(f"The rest of the homework cannot weigh {rest_bytes!r} bytes; pass 0 or more.")
    sft = _adapter_size(layout, sft_rank, dtype)
    rft = _adapter_size(layout, rft_rank, dtype)
    # rest_bytes is a whole zip (its own end record); the adapters add their members and one more end record.
    total = rest_bytes + sft.compressed_bytes + rft.compressed_bytes + ZIP_END_RECORD
    return PairSize(sft, rft, rest_bytes, total_raw_bytes=sft.raw_bytes + rft.raw_bytes, total_compressed_bytes=total)


DEFAULT_BUDGET_MB = 50.0  # the course's limit on the submission zip, in its "MB" (MiB)
MAX_BUDGET_MB = 1e9  # a petabyte; above it the budget in bytes overflows a float


def budget_bytes(budget_mb: float) -> int:
    """A budget in the homework's "MB" (bytes/1024/1024, i.e. MiB) as whole bytes."""
    if isinstance(budget_mb, bool) or not isinstance(budget_mb, (int, float)) or not 0 < budget_mb <= MAX_BUDGET_MB:
        raise RanksweepError(f"Budget {budget_mb!r} MB is not valid: give a number of MB (bytes/1024/1024) greater "
                             f"than 0 and at most {MAX_BUDGET_MB:g}.")
    return math.floor(budget_mb * MIB)


def fits(size_bytes, budget_bytes):
    """Whether a zipped size fits the budget (both bytes; a size equal to the budget fits). Works elementwise on
    pandas Series too (the report's pairs)."""
    return size_bytes <= budget_bytes


def mib(n_bytes: int) -> float:
    """Bytes as the homework reports them: bytes/1024/1024."""
    return n_bytes / MIB


def size_text(n_bytes: int) -> str:
    """A size for a sentence: MiB to two decimals and the exact bytes, so that two sizes under 0.01 MiB apart
    (or a budget of a few bytes) still read differently."""
    return f"{mib(n_bytes):.2f} MiB ({int(n_bytes):,} bytes)"


def check_budget(config, sft_ranks, rft_ranks, budget: int, dtype: str, rest_bytes: int = 0) -> None:
    """Raise RanksweepError if even the smallest SFT/RFT rank pair's zipped bound exceeds budget (bytes)."""
    if not sft_ranks or not rft_ranks:
        raise RanksweepError("The rank lists are empty: give at least one SFT rank and one RFT rank.")
    _check_budget_bytes(budget)
    smallest = pair_size(config, min(sft_ranks), min(rft_ranks), dtype, rest_bytes)
    if not fits(smallest.total_compressed_bytes, budget):
        advice = "raise the budget"
        if smallest.sft.rank + smallest.rft.rank > 2:
            advice += ", lower the smallest ranks"
        if dtype == "fp32":
            advice += ", or save the adapters in fp16 (--adapter-dtype fp16)"
        raise RanksweepError(
            f"Even the smallest pair (SFT rank {smallest.sft.rank}, RFT rank {smallest.rft.rank}) may zip to "
            f"{size_text(smallest.total_compressed_bytes)}, over the {size_text(budget)} budget: {advice}."
        )


def _largest_rft_rank(layout: _Layout, sft_rank: int, budget: int, dtype: str, rest_bytes: int) -> int:
    def fits_at(rft_rank: int) -> bool:
        return fits(_pair_size(layout, sft_rank, rft_rank, dtype, rest_bytes).total_compressed_bytes, budget)

    if not fits_at(1):
        return 0
    if fits_at(MAX_RANK):
        return MAX_RANK
    low, high = 1, 2
    while fits_at(high):  # size grows with rank, so double until it does not fit, then bisect
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits_at(middle) else (low, middle)
    return low


def largest_feasible_pairs(
    config, budget: int, dtype: str, rest_bytes: int = 0, sft_ranks=DEFAULT_SFT_RANKS
) -> list[PairSize]:
    """For each SFT rank, the pair with the largest RFT rank within budget (bytes); ranks with none are dropped."""
    layout = _layout(config, "all-linear")
    budget, dtype = _check_budget_bytes(budget), _check_dtype(dtype)
    pairs = []
    for sft_rank in sft_ranks:
        rft_rank = _largest_rft_rank(layout, _check_rank(sft_rank), budget, dtype, rest_bytes)
        if rft_rank:
            pairs.append(_pair_size(layout, sft_rank, rft_rank, dtype, rest_bytes))
    return pairs
