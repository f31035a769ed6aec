"""Batched generation with a plain decode loop: greedy answers for grading, sampled ones for RFT data.

Prompts are tokenized as they are (no chat template), left-padded, and grouped by length so a batch
carries little padding. Each batch is prefilled once; the loop then feeds one token per live row,
drops finished rows from the KV cache, and stops when every row has produced `stop` or EOS.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterator

from trainers.hardware import autocast, bf16_is_fast
from trainers.training import head_is_plain

DEFAULT_STOP = "</answer>"


def greedy(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    stop: str = DEFAULT_STOP,
    batch_size: int = 64,
    give_up: Callable[[str], bool] | None = None,
    on_batch: Callable[[list[int], list[str]], None] | None = None,
) -> list[str]:
    """Greedy completion of each prompt (the text after it, cut right after `stop`), in input order.

    `give_up(text)`: a row whose text it calls hopeless stops there (trainers.grading.answer_is_hopeless).
    `on_batch(prompt_indices, their_completions)` is called after each batch (progress reporting).
    """
    import torch

    def pick(logits):
        return logits.argmax(dim=-1)

    completions: list[str] = [""] * len(prompts)
    with torch.inference_mode(), eval_mode(model):
        for indices in _length_batches(tokenizer, prompts, batch_size):
            texts = _decode_batch(model, tokenizer, [prompts[i] for i in indices], 1, max_new_tokens, stop, pick,
                                  give_up=give_up)
            for i, text in zip(indices, texts):
                completions[i] = text
            if on_batch is not None:
                on_batch(indices, texts)
    return completions


def sample(
    model,
    tokenizer,
    prompts: list[str],
    *,
    k: int,
    temperature: float,
    max_new_tokens: int,
    stop: str = DEFAULT_STOP,
    seed: int,
    batch_size: int = 128,
    bf16: bool | None = None,
    give_up: Callable[[str], bool] | None = None,
    on_batch: Callable[[list[int], list[list[str]]], None] | None = None,
) -> list[list[str]]:
    """k temperature-sampled completions per prompt, reproducible for a given seed, batch size and bf16 choice.

    The decode loop greedy grading uses: the prefix all prompts share (a few-shot prompt) is encoded once
    (SharedPrefix), each prompt's own tail is prefilled once and its KV cache copied k times, and rows
    leave the batch as they finish. Plain softmax sampling at `temperature` (no top-k / top-p), so the
    chains are draws from the model itself. `batch_size` counts sequences decoded together (batch_size // k
    prompts, at least one); a row is done when it closes `stop`, emits EOS or reaches `max_new_tokens`.
    bench/rft_generation.py measured this loop against HF `generate(num_return_sequences=k)`, which
    prefills every prompt k times (docs/benchmarks.md).
    `bf16`: bfloat16 autocast; None = on a GPU that runs bf16 fast, never on a CPU: autocast casts every
    weight on every call, and at decode's few rows per step that made sampling 2.7x slower than float32 on
    an avx512_bf16 CPU (108 s against 39 s for 32 chains; training, with its wide batches, is 1.5x faster).
    `give_up(text)`: a row whose text it calls hopeless stops there (trainers.grading.answer_is_hopeless).
    `on_batch(prompt_indices, their_completions)` is called after each batch (progress reporting).
    """
    import torch

    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not temperature > 0:
        raise ValueError(f"temperature must be greater than 0, got {temperature}")
    completions: list[list[str]] = [[] for _ in prompts]
    if not prompts:
        return completions
    device = _device(model)
    use_bf16 = (device.type == "cuda" and bf16_is_fast(device)) if bf16 is None else bf16
    generator = torch.Generator(device=device).manual_seed(seed)

    def pick(logits):
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    with torch.inference_mode(), eval_mode(model), autocast(device, use_bf16):
        ids = tokenizer(prompts, add_special_tokens=True)["input_ids"]
        shared = SharedPrefix.length(ids)
        prefix = SharedPrefix(core_model(model), ids[0][:shared]) if shared else None
        for indices in _length_batches(tokenizer, prompts, max(1, batch_size // k)):
            texts = _decode_batch(model, tokenizer, [prompts[i] for i in indices], k, max_new_tokens, stop, pick,
                                  prefix, give_up)
            for n, i in enumerate(indices):
                completions[i] = texts[n * k : (n + 1) * k]
            if on_batch is not None:
                on_batch(indices, [completions[i] for i in indices])
    return completions


class StopRule:
    """Whether a row is done: its text has closed `stop` (a full decode only for rows whose new token could end
    it), or `give_up(text)` says its answer can no longer parse (asked only once a row has written the tag that
    `stop` closes: `<answer>` for `</answer>`)."""

    def __init__(self, tokenizer, stop: str, give_up: Callable[[str], bool] | None = None):
        self.tokenizer, self.stop = tokenizer, stop
        self.opening = "<" + stop[2:] if stop.startswith("</") else ""
        self.give_up = give_up if self.opening else None
        self.span = len(stop.encode("utf-8")) if stop else 0
        self.last_char = stop[-1] if stop else ""
        self._can_end: dict[int, bool] = {}
        self._can_open: dict[int, bool] = {}
        self._answer_from: dict[int, int] = {}  # row -> index of a token at or before its `<answer>`

    def closed(self, tokens: list[int]) -> bool:
        """True when the row's tokens so far contain `stop` ending in their last token."""
        if not self.stop or not tokens:
            return False
        last = tokens[-1]
        if last not in self._can_end:
            self._can_end[last] = self.last_char in self.tokenizer.decode([last])
        # Each token holds at least one byte, so a stop string that just completed lies in the last few tokens.
        return self._can_end[last] and self.stop in self.tokenizer.decode(tokens[-self.span :])

    def done(self, row: int, tokens: list[int]) -> bool:
        """closed(tokens), or the row has opened an answer that `give_up` rules out."""
        if self.closed(tokens):
            return True
        if self.give_up is None or not tokens:
            return False
        if row not in self._answer_from:
            last = tokens[-1]
            if last not in self._can_open:
                self._can_open[last] = ">" in self.tokenizer.decode([last])
            start = max(0, len(tokens) - len(self.opening))
            if not (self._can_open[last] and self.opening in self.tokenizer.decode(tokens[start:])):
                return False
            self._answer_from[row] = start
        return self.give_up(self.tokenizer.decode(tokens[self._answer_from[row] :]))


def _length_batches(tokenizer, prompts: list[str], batch_size: int) -> Iterator[list[int]]:
    """Prompt indices grouped longest-first, so rows in one batch need little left padding."""
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=True)["input_ids"]] if prompts else []
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


class eval_mode:
    """Turn dropout off for the duration and restore the caller's train/eval state afterwards."""

    def __init__(self, model):
        self.model = model
        self.was_training = model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def _device(model):
    return next(model.parameters()).device


def core_model(model):
    """The transformers model to call; a PeftModel's LoRA layers live inside it, so they still apply."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _eos_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    ids.discard(None)
    return ids


def _forward_names(core) -> tuple[str, bool]:
    """The KV-cache keyword of this transformers version and whether logits can be limited to the last token."""
    params = inspect.signature(core.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    return cache_kw, "logits_to_keep" in params


class SharedPrefix:
    """The KV cache of the token prefix every prompt of a call shares (a few-shot prompt), computed once.

    Each batch then starts from a copy of it and prefills only its prompts' own tails: for RFT sampling's
    357-token few-shot prompt that prefill was a quarter of the sampling time.
    """

    def __init__(self, core, ids: list[int]):
        import torch
        from transformers import DynamicCache

        self.ids = ids
        self.cache = DynamicCache(config=core.config)
        cache_kw, _ = _forward_names(core)
        decoder = core.get_decoder()  # the cache is all that is kept: no logits for the prefix's positions
        decoder(input_ids=torch.tensor([ids], device=_device(core)), use_cache=True, **{cache_kw: self.cache})

    @staticmethod
    def length(rows: list[list[int]]) -> int:
        """Tokens all rows share from the start, leaving each row at least one token of its own."""
        first, length = rows[0], min(len(row) for row in rows) - 1
        for row in rows[1:]:
            n = 0
            while n < length and row[n] == first[n]:
                n += 1
            length = n
        return max(length, 0)


def _decode_batch(model, tokenizer, prompts: list[str], repeats: int, max_new_tokens: int, stop: str, pick,
                  prefix: SharedPrefix | None = None, give_up: Callable[[str], bool] | None = None) -> list[str]:
    """Generate for one batch: `repeats` continuations per prompt, rows ordered prompt by prompt.

    With `prefix`, every prompt starts with prefix.ids: the batch starts from a copy of its cache, and each
    row is laid out as [prefix][left padding][own tail], the padding masked out.
    """
    import torch
    from transformers import DynamicCache

    core = core_model(model)
    device = _device(model)
    cache_kw, can_trim_logits = _forward_names(core)
    eos = _eos_ids(model, tokenizer)
    extra = {"logits_to_keep": 1} if can_trim_logits else {}
    shared = len(prefix.ids) if prefix else 0
    tails = [ids[shared:] for ids in tokenizer(prompts, add_special_tokens=True)["input_ids"]]
    width = max(len(t) for t in tails)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # Left padding: a row's first real token gets position `shared` (0 without a prefix, exactly as HF
    # generate numbers it); padding is masked out.
    input_ids = torch.tensor([[pad] * (width - len(t)) + t for t in tails], device=device)
    mask = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in tails], device=device)
    positions = ((mask.cumsum(-1) - 1).clamp(min=0) + shared) * mask
    if prefix is None:
        cache = DynamicCache(config=core.config)
    else:
        cache = copy.deepcopy(prefix.cache)
        cache.batch_repeat_interleave(len(prompts))
        mask = torch.cat([mask.new_ones((len(prompts), shared)), mask], dim=-1)
    logits = _last_logits(core, input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                          **{cache_kw: cache}, **extra)
    if repeats > 1:
        # The k samples of a prompt share its prefill: copy the cache rather than re-encode the prompt.
        cache.batch_repeat_interleave(repeats)
        mask = mask.repeat_interleave(repeats, dim=0)
        positions = positions.repeat_interleave(repeats, dim=0)
        logits = logits.repeat_interleave(repeats, dim=0)
    last_position = positions[:, -1:]

    rows = mask.shape[0]
    generated: list[list[int]] = [[] for _ in range(rows)]
    live = list(range(rows))  # output row of each row still in the cache
    rule = StopRule(tokenizer, stop, give_up)
    for step in range(max_new_tokens):
        tokens = pick(logits)
        keep = []
        for slot, (row, token) in enumerate(zip(live, tokens.tolist())):
            if token in eos:
                continue
            generated[row].append(token)
            if not rule.done(row, generated[row]):
                keep.append(slot)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(live):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, last_position, tokens = mask[index], last_position[index], tokens[index]
            live = [live[slot] for slot in keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        last_position = last_position + 1
        logits = _last_logits(core, input_ids=tokens[:, None], attention_mask=mask, position_ids=last_position,
                              use_cache=True, **{cache_kw: cache})
    return [_cut(tokenizer.decode(ids, skip_special_tokens=True), stop) for ids in generated]


def _last_logits(core, **inputs):
    """Next-token logits of each row's last position, the LM head applied to those positions alone.

    The head gets a contiguous (rows, hidden) matrix: given the last position of a (rows, length, hidden)
    batch whose layout torch cannot fold into a matrix (what a bf16 model with LoRA layers produced on a CPU),
    matmul copied the 49k-wide head once per row: 3.6 GB and seconds per prefill of 64 rows (docs/benchmarks.md).
    """
    decoder, head = core.get_decoder(), core.get_output_embeddings()
    if decoder is not core and head is not None and head_is_plain(core):
        inputs.pop("logits_to_keep", None)
        hidden = decoder(**inputs).last_hidden_state
        return head(hidden[:, -1, :].contiguous())
    return core(**inputs).logits[:, -1, :]


def _cut(text: str, stop: str) -> str:
    """Keep the text up to and including the first `stop`."""
    if not stop:
        return text
    at = text.find(stop)
    return text if at < 0 else text[: at + len(stop)]
