"""Attention over a prompt prefix that every row of a batch shares, kept once instead of once per row.

Rejection sampling puts hundreds of questions behind the same few-shot prompt. With a plain KV cache,
each of B rows carries its own copy of that prefix, and every decode step copies and reads B copies;
for the 135M model a 250-token prefix is ~11 MB per row in float32, so at B = 64 the cache traffic
outweighs the weights. Here the prefix's keys and values are computed once (batch 1) and each layer
attends to them and to the row's own cache in one softmax, split in two matmuls.

It plugs into transformers through its public attention registry (`AttentionInterface`,
`AttentionMaskInterface`, `set_attn_implementation`); the prefix travels as a keyword argument of the
model's forward, which transformers hands to every attention call.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

IMPLEMENTATION = "ranksweep_shared_prefix"
KWARG = "shared_prefix"


@dataclass
class SharedPrefix:
    """Per-layer keys and values of the shared prefix, [kv_heads, P, head_dim] each, filled by a recording pass."""

    length: int
    keys: dict[int, object] = field(default_factory=dict)
    values: dict[int, object] = field(default_factory=dict)
    recording: bool = True


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention to the shared prefix (when given) and to the row's own keys, as one softmax."""
    import torch

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    prefix: SharedPrefix | None = kwargs.pop(KWARG, None)
    if prefix is None or prefix.recording:
        if prefix is not None:  # the prefix pass itself: batch 1, plain causal attention; keep its keys
            prefix.keys[module.layer_idx], prefix.values[module.layer_idx] = key[0], value[0]
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    scale = scaling if scaling is not None else dim**-0.5
    # Query heads of one KV head side by side: [B, kv_heads, groups * q_len, dim].
    q = query.reshape(batch, kv_heads, groups * q_len, dim)
    own = torch.matmul(q, key.transpose(-1, -2)).float() * scale  # [B, kv, g*q, T]
    if attention_mask is None:  # transformers skips the mask when it is plainly causal
        if q_len > 1:
            causal = torch.ones(q_len, key.shape[2], dtype=torch.bool, device=query.device).tril(key.shape[2] - q_len)
            own = own.masked_fill(~causal.repeat(groups, 1), float("-inf"))
    else:
        mask = attention_mask[:, :, -q_len:, :].expand(batch, 1, q_len, key.shape[2])
        mask = mask.unsqueeze(2).expand(batch, 1, groups, q_len, key.shape[2]).reshape(batch, 1, groups * q_len, -1)
        own = own.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else own + mask
    pk, pv = prefix.keys[module.layer_idx], prefix.values[module.layer_idx]  # [kv, P, dim]
    # One matmul per KV head over all rows: the prefix is read once per step, not once per row.
    q_by_head = q.transpose(0, 1).reshape(kv_heads, batch * groups * q_len, dim)
    shared = torch.matmul(q_by_head, pk.transpose(-1, -2)).float() * scale  # [kv, B*g*q, P]
    shared = shared.reshape(kv_heads, batch, groups * q_len, -1).transpose(0, 1)  # [B, kv, g*q, P]
    probs = torch.softmax(torch.cat([shared, own], dim=-1), dim=-1).to(value.dtype)
    p_shared, p_own = probs[..., : prefix.length], probs[..., prefix.length :]
    out_shared = torch.matmul(p_shared.transpose(0, 1).reshape(kv_heads, batch * groups * q_len, -1), pv)
    out = out_shared.reshape(kv_heads, batch, groups * q_len, dim).transpose(0, 1) + torch.matmul(p_own, value)
    # Back to transformers' layout: [B, q_len, heads, dim].
    return out.reshape(batch, heads, q_len, dim).transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(IMPLEMENTATION, _attention)
    # The rows' own keys need the same boolean padding/causal mask SDPA gets.
    AttentionMaskInterface.register(IMPLEMENTATION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


@contextmanager
def shared_prefix_attention(core):
    """Run `core` (a transformers model) with the shared-prefix attention for the duration."""
    _register()
    before = core.config._attn_implementation
    core.set_attn_implementation(IMPLEMENTATION)
    try:
        yield
    finally:
        core.set_attn_implementation(before)
