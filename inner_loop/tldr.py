"""The DiscoPOP paper's held-out summarisation recipe (task ``recipe:tldr``): DPO-style training of a
base language model on Reddit TL;DR preference pairs, and summaries of held-out posts for a judge.

What the paper did, and what this module carries over: zephyr-7b-gemma-sft trained on 10% of
``CarperAI/openai_summarize_comparisons`` (the first rows of its train split, as ``train[:10%]``
takes them), prompts written as ``post + "\\n\\nTL;DR:"``, summaries sampled at temperature 0.7 with
at most 256 new tokens and cut at the first newline, then judged pairwise (alpaca_eval's format, a
GPT-4 annotator) against the human-preferred reference summary and against the SFT model.

Data. Two row schemas are read, both into ``(post, chosen summary, rejected summary)`` by
:func:`normalise_row`:

* CarperAI/openai_summarize_comparisons: ``prompt`` (``"SUBREDDIT: r/...\\nTITLE: ...\\nPOST: ..."``,
  possibly already ending in ``TL;DR:``, which is removed), ``chosen``, ``rejected`` (summaries,
  possibly starting with ``TL;DR:``, which is removed);
* openai/summarize_from_feedback (``comparisons``): ``info`` {post, title, subreddit}, ``summaries``
  (two ``{text}``), ``choice`` (the index of the preferred one); the post is written in CarperAI's
  ``SUBREDDIT/TITLE/POST`` layout.

Training pairs are plain text (no chat template: :func:`inner_loop.recipe_task.tokenize_text_pairs`):
prompt ``post + "\\n\\nTL;DR:"``, replies ``" " + summary`` (one space after the colon, as the summaries
are written after ``TL;DR:`` in the data), each followed by eos.

Evaluation prompts (:meth:`TldrTask.eval_rows`): the comparisons data repeats a post once per pair
of summaries, and alpaca_eval, given a repeated instruction, pairs every output with every reference
of that instruction; so the eval split is de-duplicated by post, the first occurrence wins (its
order in the split), and its ``chosen`` summary is the reference. That reference is the summary the
labeller preferred in that comparison, written by a person or a model ("human" names the
preference, not necessarily the writer). ``eval_size`` distinct posts are kept (our choice: 512).

Scoring (:meth:`TldrTask.score`) keeps the model (:class:`~inner_loop.recipe_task.RecipeTask`),
samples one summary per eval post from the trained policy and from the SFT model (the same settings
and seed, so the same random stream; the SFT summaries are computed once per process per seed) and
writes, in alpaca_eval's ``model_outputs.json`` format, ``tldr/model_outputs.json`` (generator
``policy``), ``tldr/sft_outputs.json`` (``sft``) and ``tldr/reference_outputs.json`` (``human``)
under ``out_dir`` (without one, inside the saved model folder). The ``instruction`` of every row is
the post. Judging is :mod:`evaluation.tldr` (``disco eval tldr``), a layer above.
"""

from __future__ import annotations

import dataclasses
import json
from functools import cached_property
from pathlib import Path

from inner_loop.overrides import UserError, check
from inner_loop.recipe_base import Recipe, RecipeTask, load_rows, tokenize_text_pairs

TLDR = "TL;DR:"
PROMPT_SUFFIX = "\n\nTL;DR:"
OUTPUTS_SUBDIR = "tldr"
MODEL_OUTPUTS, SFT_OUTPUTS, REFERENCE_OUTPUTS = "model_outputs.json", "sft_outputs.json", "reference_outputs.json"
GENERATORS = {"model": "policy", "sft": "sft", "reference": "human"}


@dataclasses.dataclass(frozen=True)
class TldrRecipe(Recipe):
    """A TL;DR recipe file (kind ``tldr``): :class:`Recipe`'s fields and the evaluation's."""

    train_fraction: float = 0.1      # the paper's: the first 10% of the train split
    eval_split: str = "test"
    eval_size: int = 512             # distinct eval posts (our choice)
    temperature: float = 0.7         # the paper's sampling settings
    max_new_tokens: int = 256
    generation_batch_size: int = 16  # ours: throughput only (it fixes how random numbers are drawn)

    def __post_init__(self):
        check("train_fraction", self.train_fraction, "> 0")
        if self.train_fraction > 1:
            raise UserError(f"train_fraction must be a number in (0, 1], not {self.train_fraction!r}")
        check("temperature", self.temperature, "> 0")
        for name in ("eval_size", "max_new_tokens", "generation_batch_size"):
            check(name, getattr(self, name), "int >= 1")


# -- data ----------------------------------------------------------------------------------------

def _strip_tldr_end(text: str) -> str:
    text = text.rstrip()
    if text.endswith(TLDR):
        text = text[: -len(TLDR)].rstrip()
    return text


def _strip_tldr_start(text: str) -> str:
    text = text.strip()
    if text.startswith(TLDR):
        text = text[len(TLDR):].strip()
    return text


def _reddit_post(info: dict) -> str:
    if not isinstance(info.get("post"), str):
        raise ValueError("info has no post")
    head = [f"SUBREDDIT: r/{info['subreddit']}"] if info.get("subreddit") else []
    head += [f"TITLE: {info['title']}"] if info.get("title") else []
    return "\n".join(head + [f"POST: {info['post'].strip()}"])


def normalise_row(row: dict) -> tuple[str, str, str]:
    """``(post, chosen summary, rejected summary)`` of a CarperAI or openai/summarize_from_feedback row;
    a :class:`~inner_loop.overrides.UserError` (a ValueError) naming the row's keys for any other."""
    try:
        if all(isinstance(row.get(k), str) for k in ("prompt", "chosen", "rejected")):
            return _strip_tldr_end(row["prompt"]), _strip_tldr_start(row["chosen"]), _strip_tldr_start(row["rejected"])
        if isinstance(row.get("info"), dict) and isinstance(row.get("summaries"), list) and "choice" in row:
            texts = [s["text"] for s in row["summaries"]]
            choice = int(row["choice"])
            if len(texts) != 2 or choice not in (0, 1):
                raise ValueError("needs two summaries and a choice of 0 or 1")
            return _reddit_post(row["info"]), _strip_tldr_start(texts[choice]), _strip_tldr_start(texts[1 - choice])
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"unrecognised TL;DR row ({err}): {_keys(row)}") from None
    raise UserError(f"unrecognised TL;DR row {_keys(row)}: expected prompt/chosen/rejected strings "
                     "(CarperAI/openai_summarize_comparisons) or info/summaries/choice "
                     "(openai/summarize_from_feedback comparisons)")


def _keys(row) -> str:
    return f"with keys {sorted(row)}" if isinstance(row, dict) else f"of type {type(row).__name__}"


def prompt_text(post: str) -> str:
    """The paper's prompt: the post, a blank line, ``TL;DR:``."""
    return post + PROMPT_SUFFIX


def fraction_count(n: int, fraction: float) -> int:
    """How many of ``n`` rows ``split[:P%]`` keeps (datasets' default "closest" rounding: Python's
    round), at least one."""
    percent = round(fraction * 100, 9)
    return max(1, min(n, int(round(percent * n / 100.0))))


def dedup_posts(triples, limit: int | None = None) -> list[tuple[str, str]]:
    """``(post, reference)`` per distinct post in order of first occurrence (the first ``limit``);
    reference = the chosen summary of the post's first row."""
    seen: dict[str, str] = {}
    for post, chosen, _ in triples:
        if limit is not None and len(seen) >= limit:
            break
        seen.setdefault(post, chosen)
    return list(seen.items())


# -- generation ----------------------------------------------------------------------------------

class _StopAtNewline:
    """Stop a sequence once its last generated token's text holds a newline (any tokenizer: a
    newline is one byte, never split across tokens). transformers' ``stop_strings`` needs a
    tokenizer that can spell its static prefix, which a word-level one cannot."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.memo: dict[int, bool] = {}

    def has_newline(self, token: int) -> bool:
        if token not in self.memo:
            self.memo[token] = "\n" in self.tokenizer.decode([token], skip_special_tokens=True)
        return self.memo[token]

    def __call__(self, input_ids, scores, **kwargs):
        import torch
        return torch.tensor([self.has_newline(int(t)) for t in input_ids[:, -1]], device=input_ids.device)


def generate_summaries(model, tokenizer, prompts: list[str], *, seed: int, temperature: float,
                       max_new_tokens: int, batch_size: int, max_prompt_length: int | None
                       ) -> list[tuple[str, bool]]:
    """One sampled summary per prompt (pure sampling: top_k 0, top_p 1), cut at the first newline:
    ``(summary, stopped_at_newline)``. Prompts keep their last ``max_prompt_length`` tokens (as in
    training) and are left-padded in batches; ``torch.manual_seed(seed)`` once, before the first."""
    import torch
    from transformers import StoppingCriteriaList

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stop = _StopAtNewline(tokenizer)
    model.eval()
    torch.manual_seed(seed)
    out = []
    for start in range(0, len(prompts), batch_size):
        ids = [tokenizer(p)["input_ids"] for p in prompts[start:start + batch_size]]
        if max_prompt_length:
            ids = [x[-max_prompt_length:] for x in ids]
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
        with torch.no_grad():
            generated = model.generate(input_ids=input_ids, attention_mask=mask, do_sample=True,
                                       temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                                       stopping_criteria=StoppingCriteriaList([stop]), pad_token_id=pad,
                                       eos_token_id=tokenizer.eos_token_id)
        for row in generated[:, width:]:
            text = tokenizer.decode(row, skip_special_tokens=True)
            summary, newline, _ = text.partition("\n")
            out.append((summary.strip(), bool(newline)))
    return out


def _write(path: Path, posts: list[str], outputs: list[str], generator: str) -> None:
    rows = [{"instruction": p, "output": o, "generator": generator} for p, o in zip(posts, outputs)]
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")


def _free_accelerator_memory() -> None:
    import torch
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- the task ------------------------------------------------------------------------------------

class TldrTask(RecipeTask):
    """Recipe ``tldr`` as a task: plain-text TL;DR pairs; scoring writes summaries for the judge."""

    def __init__(self, config: TldrRecipe):
        super().__init__(config)
        self._sft_summaries: dict[int, list[tuple[str, bool]]] = {}  # seed -> SFT model's summaries

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(self.config.model)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def train_triples(self) -> list[tuple[str, str, str]]:
        """The first ``train_fraction`` of the train split, normalised."""
        rows = load_rows(self.config.dataset, self.config.split)
        n = fraction_count(len(rows), self.config.train_fraction)
        return [normalise_row(rows[i]) for i in range(n)]

    @cached_property
    def train_pairs(self):
        pairs = [{"prompt": prompt_text(post), "chosen": " " + chosen, "rejected": " " + rejected}
                 for post, chosen, rejected in self.train_triples()]
        return tokenize_text_pairs(pairs, self.tokenizer, self.config.max_prompt_length, self.config.max_length)

    @cached_property
    def eval_rows(self) -> list[tuple[str, str]]:
        """``(post, reference summary)`` for the first ``eval_size`` distinct posts of the eval split."""
        rows = load_rows(self.config.dataset, self.config.eval_split)
        kept = dedup_posts((normalise_row(r) for r in rows), self.config.eval_size)
        if not kept:
            raise UserError(f"the {self.config.eval_split!r} split of {self.config.dataset} has no rows")
        return kept

    def _summaries(self, model, seed: int) -> list[tuple[str, bool]]:
        c = self.config
        return generate_summaries(model, self.tokenizer, [prompt_text(p) for p, _ in self.eval_rows], seed=seed,
                                  temperature=c.temperature, max_new_tokens=c.max_new_tokens,
                                  batch_size=c.generation_batch_size, max_prompt_length=c.max_prompt_length)

    def sft_summaries(self, seed: int, device=None) -> list[tuple[str, bool]]:
        """The SFT model's summaries with ``seed`` (the same for every objective: kept per seed)."""
        if seed not in self._sft_summaries:
            sft = self.load_sft()
            if device is not None:
                sft = sft.to(device)
            self._sft_summaries[seed] = self._summaries(sft, seed)
            del sft
            _free_accelerator_memory()
        return self._sft_summaries[seed]

    def score(self, policy, *, seed: int, out_dir: str | None, losses: list[float],
              model_dir: str | None = None) -> dict:
        """Save the policy (:meth:`RecipeTask.score`), then write the policy's, the SFT model's and the
        references' outputs for the eval posts (module docstring); metrics: the folder, counts, lengths."""
        metrics = super().score(policy, seed=seed, out_dir=out_dir, losses=losses, model_dir=model_dir)
        posts = [p for p, _ in self.eval_rows]
        mine = self._summaries(policy, seed)
        sft = self.sft_summaries(seed, device=next(policy.parameters()).device)
        folder = (Path(out_dir) if out_dir else Path(metrics["model_dir"])) / OUTPUTS_SUBDIR
        folder.mkdir(parents=True, exist_ok=True)
        _write(folder / MODEL_OUTPUTS, posts, [s for s, _ in mine], GENERATORS["model"])
        _write(folder / SFT_OUTPUTS, posts, [s for s, _ in sft], GENERATORS["sft"])
        _write(folder / REFERENCE_OUTPUTS, posts, [r for _, r in self.eval_rows], GENERATORS["reference"])
        tokens = [len(self.tokenizer(s, add_special_tokens=False)["input_ids"]) for s, _ in mine]
        n = len(mine)
        return {**metrics, "n_eval": n, "outputs_dir": str(folder.resolve()),
                "avg_summary_chars": sum(len(s) for s, _ in mine) / n, "avg_summary_tokens": sum(tokens) / n,
                "frac_stopped_at_newline": sum(stopped for _, stopped in mine) / n,
                "sft_avg_summary_chars": sum(len(s) for s, _ in sft) / n}

