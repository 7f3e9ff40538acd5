"""Sampling from, and scoring completions under, a small causal LM on CPU.

Two operations, shared by the synthetic task's build (preference pairs, reference log-probs) and
by :mod:`inner_loop.metrics` (evaluation):

* :func:`sample_completions`: ancestral sampling at temperature 1 with no top-k and no top-p,
  batched, with the model's KV cache. Prompts are grouped by length, so a batch never needs
  padding or position ids; its attention mask is all ones, passed explicitly so that the model
  need not guess (a row that has ended is fed eos, which may be the pad token: transformers then
  warns "We strongly recommend passing in an attention_mask"). The mask changes nothing computed.
  Uniforms are drawn from the caller's ``torch.Generator`` (the global RNG is never touched), so
  a call is deterministic given the generator's seed.
* :func:`teacher_forced`: one forward over ``prompt + completion`` sequences, right-padded
  (causal attention: real tokens never see the padding after them), returning the per-token
  log-softmax at every completion position and the mask of real completion tokens.

Both run tiny models, whose ops are too small to gain from intra-op threads: under CPU contention
(a shared 2-core box) two OpenMP threads made evaluation 20x slower than one (31 s against 1.5 s
measured), so callers wrap them in :func:`torch_threads` (``evaluate_policy`` and the build do).

A completion is the list of generated token ids, ending with ``eos`` when the model produced it
within ``max_new_tokens`` (it is then part of the completion and is scored like any token).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Iterator, Sequence

import torch


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``torch.set_num_threads(n)`` (None: leave it), restoring it afterwards."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def sample_completions(model, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
                       eos_token_id: int, generator: torch.Generator, n_per_prompt: int = 1,
                       batch_size: int = 512) -> list[list[int]]:
    """``n_per_prompt`` completions per prompt, prompt-major: result[i * n + j] is sample j of prompt i."""
    expanded = [list(p) for p in prompts for _ in range(n_per_prompt)]
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(expanded):
        by_length[len(p)].append(i)
    device = next(model.parameters()).device
    out: list[list[int]] = [[] for _ in expanded]
    was_training = model.training
    model.eval()
    try:
        for length in sorted(by_length):
            rows = by_length[length]
            for start in range(0, len(rows), batch_size):
                idx = rows[start:start + batch_size]
                ids = torch.tensor([expanded[i] for i in idx], dtype=torch.long, device=device)
                # one uniform per (row, step), drawn up front: the stream used does not depend on
                # when the batch stops, so later batches see the same numbers whatever happens here
                u = torch.rand(len(idx), max_new_tokens, generator=generator).to(device)
                for i, completion in zip(idx, _sample_batch(model, ids, u, eos_token_id)):
                    out[i] = completion
    finally:
        model.train(was_training)
    return out


def cache_key(output) -> str:
    """The name of the KV cache in a model's ``output``, which is also the keyword that passes it
    back: ``cache`` from transformers 5.x on (where ``past_key_values`` is a deprecated alias that
    warns), ``past_key_values`` before. Read from the output, so a wrapper model works too."""
    keys = output.keys() if hasattr(output, "keys") else ()
    return "cache" if "cache" in keys else "past_key_values"


def _sample_batch(model, ids: torch.Tensor, u: torch.Tensor, eos: int) -> list[list[int]]:
    """Sample from equal-length prompts ``ids`` [B, L] with uniforms ``u`` [B, T] (inverse CDF)."""
    b, steps = u.shape
    tokens = torch.full((b, steps), eos, dtype=torch.long, device=ids.device)
    done = torch.zeros(b, dtype=torch.bool, device=ids.device)
    lengths = torch.full((b,), steps, dtype=torch.long, device=ids.device)
    # no padding anywhere (equal-length prompts; an ended row's eos feed is discarded): all ones
    attention = torch.ones((b, ids.size(1) + steps), dtype=torch.long, device=ids.device)
    out = model(input_ids=ids, attention_mask=attention[:, :ids.size(1)], use_cache=True)
    cache = cache_key(out)
    for t in range(steps):
        probs = out.logits[:, -1].float().softmax(-1)
        cdf = probs.cumsum(-1)
        nxt = torch.searchsorted(cdf, (u[:, t:t + 1] * cdf[:, -1:]).contiguous()).squeeze(1)
        nxt = nxt.clamp(max=probs.size(-1) - 1)
        tokens[:, t] = torch.where(done, torch.full_like(nxt, eos), nxt)
        just_ended = ~done & (nxt == eos)
        lengths[just_ended] = t + 1
        done |= just_ended
        if bool(done.all()) or t == steps - 1:
            break
        out = model(input_ids=tokens[:, t:t + 1], attention_mask=attention[:, :ids.size(1) + t + 1],
                    use_cache=True, **{cache: out[cache]})
    return [row[:n].tolist() for row, n in zip(tokens, lengths.tolist())]


def padded_batches(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                   pad_token_id: int, batch_size: int) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(rows, input_ids, attention_mask, completion_mask), each [B, L], over right-padded batches."""
    for start in range(0, len(prompts), batch_size):
        rows = slice(start, min(start + batch_size, len(prompts)))
        seqs = [list(p) + list(c) for p, c in zip(prompts[rows], completions[rows])]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.bool)
        for i, (seq, p) in enumerate(zip(seqs, prompts[rows])):
            ids[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention[i, :len(seq)] = 1
            mask[i, len(p):len(seq)] = True
        yield rows, ids, attention, mask


@torch.no_grad()
def teacher_forced(model, ids: torch.Tensor, attention: torch.Tensor,
                   mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-softmax [B, L-1, V] float32, mask [B, L-1]): position t scores token t + 1 of ``ids``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        logits = model(input_ids=ids.to(device), attention_mask=attention.to(device),
                       use_cache=False).logits[:, :-1]
    finally:
        model.train(was_training)
    return logits.float().log_softmax(-1).cpu(), mask[:, 1:]


@torch.no_grad()
def completion_logps(model, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                     pad_token_id: int, batch_size: int = 256) -> torch.Tensor:
    """Sum over completion tokens of log p(token | prefix), one float per sequence (TRL's logps)."""
    sums = torch.zeros(len(prompts))
    for rows, ids, attention, mask in padded_batches(list(prompts), list(completions), pad_token_id, batch_size):
        logp, m = teacher_forced(model, ids, attention, mask)
        picked = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
        sums[rows] = (picked * m).sum(-1)
    return sums


def prompts_of(completions, heldout_prompts, prompts=None) -> list:
    """One prompt per completion: ``prompts`` as given, else ``heldout_prompts`` in the prompt-major
    order :func:`sample_completions` draws (completion ``i`` of ``k`` per prompt belongs to prompt
    ``i // k``). A count that does not fit raises ``ValueError``."""
    if prompts is None:
        n = len(heldout_prompts)
        if not n or len(completions) % n:
            raise ValueError(f"{len(completions)} completions are not k per held-out prompt ({n})")
        k = len(completions) // n
        prompts = [heldout_prompts[i // k] for i in range(len(completions))]
    if len(prompts) != len(completions):
        raise ValueError("one prompt per completion")
    return list(prompts)
