"""Task ``recipe:imdb``: DiscoPOP's IMDb held-out experiment (positive movie-review continuation).

The SFT policy is GPT-2 fine-tuned on IMDb reviews (``lvwerra/gpt2-imdb``), a base language model
with no chat template: a prompt is the opening words of a review, a completion its continuation.
A candidate objective trains it on preference pairs (``ZHZisZZ/imdb_preference``) and the trained
policy is scored on held-out review prefixes by a gold reward, a sentiment classifier's
probability that the text is positive. The recipe file is ``inner_loop/recipe_files/imdb.yaml``
(its comments say which settings are the paper's and which are ours); this module is its config
class (:class:`ImdbRecipe`) and task class (:class:`ImdbTask`), picked by the file's ``kind: imdb``.

Data. Each row of the training split (``split``, default ``train``) is::

    {"prompt": str, "responses": [str, str], "scores": [float, float], "chosen": 0 or 1}

``responses[chosen]`` is the preferred continuation, the other the rejected one. ``scores`` are
checked but not used: the dataset's labels were drawn from a Bradley-Terry model on them, so the
chosen reply is not always the higher-scored one, and the label is what the pair says. Each row
becomes ``{"prompt", "chosen", "rejected"}`` text, tokenised by
:func:`inner_loop.recipe_task.tokenize_text_pairs` (prompt and reply tokenised apart and joined as
ids, eos after each reply; the prompt keeps its last ``max_prompt_length`` tokens, a reply is cut
to ``max_length`` minus the prompt's, and how many were cut is logged). A malformed row is refused
with a :class:`~inner_loop.overrides.UserError` naming the dataset, split, row and what is wrong.

Held-out prompts: the first ``eval_prompts`` distinct prompts of ``eval_split`` (default
``test``) of ``eval_dataset`` (default: ``dataset``), in the dataset's order, tokenised as in
training. A single JSONL file has no test split: pass ``eval_dataset=`` then.

Gold reward. ``gold_reward(completions, prompts=None)`` is, per completion, the softmax
probability of the class named ``positive_label`` (looked up in the classifier's
``config.id2label``; an absent label is an error listing the labels) under the sequence
classifier ``reward_model`` (default ``siebert/sentiment-roberta-large-english``), applied to the
decoded text of prompt + completion (the ids joined and decoded with special tokens skipped: the
whole review, as the classifier would read one, not the continuation alone), in batches of
``reward_batch_size``, truncated to ``reward_max_length`` classifier tokens. In [0, 1]. Without
``prompts``, completions are prompt-major over ``heldout_prompts`` (completion ``i`` belongs to
prompt ``i // k``), as :func:`inner_loop.metrics.evaluate_policy` passes them. The classifier
runs on the policy's device, in float32. It is loaded when the pairs are first built, before any
training, so a wrong id or label fails in seconds rather than after three epochs.

Score. :meth:`ImdbTask.score` first keeps the policy (``RecipeTask.score``: saved with its
tokenizer to ``model_dir``, by default ``out_dir/model``), then calls
:func:`inner_loop.metrics.evaluate_policy` with ``eval_samples_per_prompt`` completions per prompt
of at most ``max_new_tokens`` tokens, sampled at temperature 1 with no top-k and no top-p
(:mod:`inner_loop.sampling`), the SFT model sampling with the same random numbers; the metrics are
merged: ``reward`` (mean P(positive)), ``ref_reward`` (the SFT model's), ``reward_gain`` (their
paired difference), ``win_rate`` (vs the SFT model's completion of the same prompt and sample
index), ``kl`` (exact KL(pi || pi_ref) of whole completions: at every prefix of the policy's
samples, the full next-token KL summed over the completion's tokens; ``kl_per_token`` and the
reverse direction ``kl_ref_pi_per_token`` beside it), ``per_prompt`` values, and ``model_dir``,
``pairs`` and the training-loss summary.

Hub ids and local paths. ``model``, ``dataset``, ``eval_dataset`` and ``reward_model`` each take a
hub id or a local path (a model folder; a dataset folder of ``train.jsonl`` + ``test.jsonl``, a
``save_to_disk`` folder, or a JSONL file). Training a registry objective (in this process) works
with hub ids once they are in the Hugging Face cache or can be downloaded; the SFT model's folder
(:attr:`ImdbTask.sft_path`, which keys the cached reference and which an isolated job copies) is
then its cache snapshot. An isolated run (source code) needs the SFT model local or cached.

Running it::

    disco train --recipe imdb --model PATH --dataset PATH --objective lrml --out runs/imdb
    disco train --task recipe:imdb --set model=PATH --set dataset=PATH --objective my_loss.py
    disco heldout CAMPAIGN_DIR --tasks recipe:imdb:model=PATH,dataset=PATH --metric reward_gain
    disco sweep --task recipe:imdb --set model=PATH --set dataset=PATH --objectives dpo lrml \\
        --betas 0.025 0.05 0.1 0.25 0.5 1.0 --seeds 0 --x kl --out runs/imdb-sweep

``disco sweep`` trains every objective at every beta and plots mean ``reward`` against mean ``kl``
(or ``--x kl_ref_pi_per_token``), with the SFT model at KL 0 and its ``ref_reward``
(:mod:`evaluation.frontier`). ``--set reward_model=PATH`` (or ``eval_prompts=``, ...) works in
each of them; without ``--set model``/``dataset`` the recipe's hub ids are used.
"""

from __future__ import annotations

import dataclasses
import logging
from functools import cached_property
from pathlib import Path

from inner_loop.overrides import UserError, check
from inner_loop.recipe_base import Recipe, RecipeTask, load_rows, tokenize_text_pairs

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ImdbRecipe(Recipe):
    """The IMDb recipe: :class:`~inner_loop.recipe_task.Recipe` plus its evaluation settings."""

    kind: str = "imdb"
    max_grad_norm: float = 1.0            # gradient clipping (a TrainConfig field: reaches DPOConfig)
    eval_dataset: str | None = None       # None: ``dataset``
    eval_split: str = "test"
    eval_prompts: int = 256               # distinct held-out prompts scored
    eval_samples_per_prompt: int = 4
    max_new_tokens: int = 60              # completion length at evaluation
    eval_batch_size: int = 64             # sequences per sampling / KL forward batch
    eval_threads: int | None = 1          # torch threads while scoring (None: as is); 1 suits a shared CPU
    reward_model: str = "siebert/sentiment-roberta-large-english"
    positive_label: str = "POSITIVE"
    reward_batch_size: int = 64
    reward_max_length: int = 512          # classifier tokens per text (RoBERTa's limit)

    def __post_init__(self):
        for name in ("eval_prompts", "eval_samples_per_prompt", "max_new_tokens", "eval_batch_size",
                     "reward_batch_size", "reward_max_length"):
            check(f"imdb recipe field {name}", getattr(self, name), "int >= 1")
        if self.eval_threads is not None:
            check("imdb recipe field eval_threads", self.eval_threads, "int >= 1")


def pair_of(row, where: str) -> dict:
    """One imdb_preference row -> ``{"prompt", "chosen", "rejected"}`` (``where`` names the row in
    an error)."""
    def bad(what: str):
        return UserError(f"{where}: {what} (expected prompt: str, responses: [str, str], "
                         "scores: [number, number], chosen: 0 or 1)")
    if not isinstance(row, dict):
        raise bad(f"a row must be an object, not {type(row).__name__}")
    missing = [k for k in ("prompt", "responses", "scores", "chosen") if k not in row]
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    prompt, responses, scores, chosen = row["prompt"], row["responses"], row["scores"], row["chosen"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise bad(f"prompt must be a non-empty string, not {prompt!r}"[:300])
    if not isinstance(responses, (list, tuple)) or len(responses) != 2 or not all(isinstance(r, str)
                                                                                 for r in responses):
        raise bad(f"responses must be a list of 2 strings, not {responses!r}"[:300])
    if (not isinstance(scores, (list, tuple)) or len(scores) != 2
            or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores)):
        raise bad(f"scores must be a list of 2 numbers, not {scores!r}"[:300])
    if isinstance(chosen, bool) or not isinstance(chosen, int) or chosen not in (0, 1):
        raise bad(f"chosen must be 0 or 1 (an index into responses), not {chosen!r}")
    return {"prompt": prompt, "chosen": responses[chosen], "rejected": responses[1 - chosen]}


class ImdbTask(RecipeTask):
    """Recipe ``imdb`` as a task: GPT-2 on plain-text pairs, scored by the sentiment classifier."""

    def __init__(self, config: ImdbRecipe):
        super().__init__(config)
        self.max_completion_len = config.max_new_tokens

    # -- model and tokenizer --------------------------------------------------------------------
    @cached_property
    def tokenizer(self):
        """The model's own tokenizer; GPT-2 has no pad token, so pad = eos (no chat template)."""
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(self.config.model)
        if tokenizer.eos_token_id is None:
            raise UserError(f"the tokenizer of {self.config.model} has no eos token: replies need one to end")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    @property
    def sft_path(self) -> Path:
        """The SFT model's folder: the local path, or a hub id's snapshot in the Hugging Face cache."""
        path = Path(self.config.model)
        if path.is_dir():
            return path
        try:
            from huggingface_hub import snapshot_download
            return Path(snapshot_download(self.config.model, local_files_only=True))
        except Exception:  # noqa: BLE001 - not cached (or not a hub id): say what to do
            raise ValueError(f"{self.config.model!r} is neither a local model folder nor in the Hugging Face "
                             "cache (download it once and pass model=PATH)") from None

    # -- data -----------------------------------------------------------------------------------
    @cached_property
    def train_pairs(self):
        c = self.config
        rows = load_rows(c.dataset, c.split)
        text = [pair_of(row, f"{c.dataset} split {c.split!r}, row {i}") for i, row in enumerate(rows)]
        if not text:
            raise UserError(f"{c.dataset} split {c.split!r} has no rows")
        pairs = tokenize_text_pairs(text, self.tokenizer, c.max_prompt_length, c.max_length)
        eos = self.tokenizer.eos_token_id
        cut = sum(1 for a, b in zip(pairs["chosen_ids"], pairs["rejected_ids"]) if a[-1] != eos or b[-1] != eos)
        if cut:
            log.warning("%d of %d pairs have a reply cut to max_length=%d", cut, len(pairs), c.max_length)
        self.heldout_prompts  # noqa: B018 - fail now, not after training, on a bad eval split
        self.reward_classifier  # noqa: B018 - the same for a wrong reward model or label
        return pairs

    @cached_property
    def heldout_prompts(self) -> list[list[int]]:
        """Token ids of the first ``eval_prompts`` distinct prompts of the eval split."""
        c = self.config
        dataset = c.eval_dataset or c.dataset
        if c.eval_dataset is None and Path(dataset).is_file():
            raise UserError(f"{dataset} is one file, with no {c.eval_split!r} split for held-out prompts: "
                            "pass eval_dataset=PATH (or a folder holding train.jsonl and test.jsonl)")
        rows = load_rows(dataset, c.eval_split)
        prompts: dict[str, None] = {}
        for i, row in enumerate(rows):
            prompt = row.get("prompt") if isinstance(row, dict) else None
            if not isinstance(prompt, str) or not prompt.strip():
                raise UserError(f"{dataset} split {c.eval_split!r}, row {i}: prompt must be a non-empty string, "
                                f"not {prompt!r}"[:300])
            prompts.setdefault(prompt)
            if len(prompts) == c.eval_prompts:
                break
        if not prompts:
            raise UserError(f"{dataset} split {c.eval_split!r} has no rows")
        if len(prompts) < c.eval_prompts:
            log.warning("%s split %r has %d distinct prompts, fewer than eval_prompts=%d: scoring those",
                        dataset, c.eval_split, len(prompts), c.eval_prompts)
        ids = [self.tokenizer(p)["input_ids"] for p in prompts]
        return [p[-c.max_prompt_length:] if c.max_prompt_length else p for p in ids]

    # -- gold reward ----------------------------------------------------------------------------
    @cached_property
    def reward_classifier(self):
        """(tokenizer, model in eval mode, index of the positive class) of ``reward_model``."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        c = self.config
        tokenizer = AutoTokenizer.from_pretrained(c.reward_model)
        model = AutoModelForSequenceClassification.from_pretrained(c.reward_model, dtype=torch.float32).eval()
        labels = {int(i): str(name) for i, name in (model.config.id2label or {}).items()}
        index = [i for i, name in labels.items() if name.lower() == c.positive_label.lower()]
        if len(index) != 1:
            raise UserError(f"reward model {c.reward_model} has no class {c.positive_label!r} "
                            f"(its labels: {', '.join(labels[i] for i in sorted(labels))}); set positive_label=")
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
            tokenizer.pad_token = tokenizer.eos_token
            model.config.pad_token_id = tokenizer.eos_token_id
        return tokenizer, model, index[0]

    def reward_to(self, device) -> None:
        """Move the gold reward classifier to ``device`` (score() puts it beside the policy)."""
        _, model, _ = self.reward_classifier
        model.to(device)

    def positive_probability(self, texts: list[str]):
        """P(``positive_label`` | text) per text, a float32 CPU tensor."""
        import torch
        tokenizer, model, index = self.reward_classifier
        device = next(model.parameters()).device
        out = []
        step = self.config.reward_batch_size
        with torch.no_grad():
            for start in range(0, len(texts), step):
                batch = tokenizer(texts[start:start + step], padding=True, truncation=True,
                                  max_length=self.config.reward_max_length, return_tensors="pt").to(device)
                logits = model(**batch).logits.float()
                out.append(logits.softmax(-1)[:, index].cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def texts(self, completions, prompts=None) -> list[str]:
        """The decoded prompt + completion of each completion (prompt-major over the held-out
        prompts when ``prompts`` is None)."""
        from inner_loop.sampling import prompts_of
        completions = [list(map(int, c)) for c in completions]
        prompts = prompts_of(completions, self.heldout_prompts, prompts)
        return [self.tokenizer.decode(list(p) + c, skip_special_tokens=True) for p, c in zip(prompts, completions)]

    def gold_reward(self, completions, prompts=None):
        """P(positive) of each decoded prompt + completion (module docstring)."""
        return self.positive_probability(self.texts(completions, prompts))

    # -- score ----------------------------------------------------------------------------------
    def score(self, policy, *, seed: int, out_dir: str | None, losses: list[float],
              model_dir: str | None = None) -> dict:
        """Keep the policy (``RecipeTask.score``), then score it against the SFT model on the
        held-out prompts with :func:`inner_loop.metrics.evaluate_policy`; both sets of metrics."""
        from inner_loop.metrics import evaluate_policy
        c = self.config
        kept = super().score(policy, seed=seed, out_dir=out_dir, losses=losses, model_dir=model_dir)
        self.reward_to(next(policy.parameters()).device)
        metrics = evaluate_policy(policy, self, n_samples_per_prompt=c.eval_samples_per_prompt, seed=seed,
                                  max_completion_len=c.max_new_tokens, batch_size=c.eval_batch_size,
                                  threads=c.eval_threads)
        return {**metrics, **kept}
