"""AlpacaEval 2 (Dubois et al. 2024): pairwise judging against reference outputs, and its metrics.

Judging follows alpaca_eval's ``weighted_alpaca_eval_gpt4_turbo`` annotator: the judge sees the two
outputs as model ``m`` and model ``M`` and answers one token; with the top-5 log-probabilities of
that token, ``preference = 2 - P(m) / (P(m) + P(M)) = 1 + P(second is better)``; without them the
token itself decides (``m`` -> 1, ``M`` -> 2). The order shown to the judge is swapped per example
with alpaca_eval's seeded rule (``random.Random("is_switched_outputs" + instruction + "0")``, seed 0
being its annotators' default) and the preference is un-swapped (``3 - p``); on all nine DiscoPOP
annotation files this reproduces every stored preference from the judge's raw log-probs.

The judge prompt is alpaca_eval's ``alpaca_eval_clf.txt``, read at run time from the installed
``alpaca_eval`` package (located, not imported: alpaca_eval 0.6.6 imports ``pkg_resources``, which
current setuptools no longer ships, so ``import alpaca_eval`` fails) or from a file the user gives.
For the same reason the metrics below are alpaca_eval's formulas re-implemented, not called.

Metrics reproduce ``alpaca_eval.metrics.get_winrate`` (win_rate, standard_error, n_wins,
n_wins_base, n_draws, n_total, discrete_win_rate) and the leaderboard's ``avg_length``. The
length-controlled win rate is a GLM fitted here without alpaca_eval's downloaded side files; see
``length_controlled`` for which GLM and how far it is from the leaderboard.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
from pathlib import Path
from typing import Sequence

import numpy as np

from evaluation.judge import Judge, JudgeError, JudgmentCache, prompt_digest

PROMPT_IN_PACKAGE = "evaluators_configs/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt"
SWITCH_COLUMN = "is_switched_outputs"   # alpaca_eval's seed prefix for the order swap
SWAP_SEED = 0                           # alpaca_eval annotator seed (checked on DiscoPOP annotations)
FIRST, SECOND = "m", "M"                # identifiers of output_1 / output_2 in the judge prompt


# -------------------------------------------------------------------------------------- prompt
def find_prompt(path: str | Path | None = None) -> Path:
    """The judge prompt file: ``path`` if given, else the one shipped in the alpaca_eval package."""
    if path:
        return Path(path)
    spec = importlib.util.find_spec("alpaca_eval")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("no judge prompt: `pip install alpaca_eval` or pass --judge-prompt FILE")
    found = Path(list(spec.submodule_search_locations)[0]) / PROMPT_IN_PACKAGE
    if not found.exists():
        raise FileNotFoundError(f"{found} is missing from the installed alpaca_eval")
    return found


def chatml_to_messages(text: str) -> list[dict]:
    """Split a ChatML prompt (``<|im_start|>role\\n...<|im_end|>``) into chat messages."""
    messages = []
    for block in text.strip().split("<|im_start|>")[1:]:
        role, _, rest = block.partition("\n")
        messages.append({"role": role.strip(), "content": rest.split("<|im_end|>", 1)[0].strip()})
    if not messages:
        raise ValueError("the judge prompt has no <|im_start|>role blocks")
    return messages


def fill(messages: list[dict], fields: dict[str, str]) -> list[dict]:
    """Replace ``{key}`` placeholders literally (the template has other braces, so no str.format)."""
    out = []
    for m in messages:
        content = m["content"]
        for key, value in fields.items():
            content = content.replace("{" + key + "}", value)
        out.append({"role": m["role"], "content": content})
    return out


def is_swapped(instruction: str, seed: int = SWAP_SEED) -> bool:
    """alpaca_eval's per-example order swap, seeded by the instruction text."""
    return random.Random(SWITCH_COLUMN + instruction + str(seed)).choices([False, True], k=1)[0]


def preference_from_logprobs(top: dict[str, float]) -> float | None:
    """``2 - P(m)/(P(m)+P(M))`` from one token's top log-probs; None if neither token is there."""
    lp = [top.get(FIRST, -math.inf), top.get(SECOND, -math.inf)]
    if max(lp) == -math.inf:
        return None
    denominator = max(lp) + math.log(sum(math.exp(x - max(lp)) for x in lp))
    return 2.0 - math.exp(lp[0] - denominator)


def preference_from_text(text: str) -> float | None:
    token = text.strip()
    return {FIRST: 1.0, SECOND: 2.0}.get(token)


# ------------------------------------------------------------------------------------- judging
def pair_outputs(model_outputs: list[dict], reference_outputs: list[dict]) -> list[dict]:
    """Join model and reference outputs by instruction into alpaca_eval's annotation rows."""
    refs = {r["instruction"]: r for r in reference_outputs}
    rows = []
    for o in model_outputs:
        ref = refs.get(o["instruction"])
        if ref is None:
            raise KeyError(f"no reference output for instruction {o['instruction'][:60]!r}")
        rows.append({"dataset": o.get("dataset", ref.get("dataset")), "instruction": o["instruction"],
                     "output_1": ref["output"], "generator_1": ref.get("generator", "reference"),
                     "output_2": o["output"], "generator_2": o.get("generator", "model")})
    return rows


def annotate(judge: Judge, rows: list[dict], prompt_path: str | Path | None = None,
             cache: JudgmentCache | None = None, temperature: float = 1.0,
             seed: int = SWAP_SEED) -> list[dict]:
    """Add ``preference`` (1 = output_1 better, 2 = output_2 better) to each row by asking the judge.

    The temperature default is the weighted annotator's (1); it does not change the log-probs, and
    without log-probs a sampled token is an unbiased draw of the same preference. Failed rows carry
    ``preference: None`` and a ``failure`` kind and are left out of the metrics (and counted).
    """
    cache = JudgmentCache(None) if cache is None else cache
    path = find_prompt(prompt_path)
    template = chatml_to_messages(path.read_text(encoding="utf-8"))
    out = []
    for row in rows:
        swapped = is_swapped(row["instruction"], seed)
        shown = (row["output_2"], row["output_1"]) if swapped else (row["output_1"], row["output_2"])
        messages = fill(template, {"instruction": row["instruction"],
                                   "output_1": shown[0], "output_2": shown[1]})
        key = ("alpaca", row["generator_2"], judge.name, path.name, prompt_digest(messages))
        result = dict(row, annotator=judge.name, is_switched_outputs=swapped, preference=None)
        hit = cache.get(key)
        if hit is None:
            try:
                reply = judge.complete(messages, max_tokens=1, temperature=temperature,
                                       logprobs=True, top_logprobs=5)
            except JudgeError as e:
                out.append(dict(result, failure=e.kind, reason=e.reason))
                continue
            top = reply.top_logprobs[0] if reply.top_logprobs else None
            hit = cache.put(key, {"text": reply.text, "top_logprobs": top, "usage": reply.usage})
        raw = (preference_from_logprobs(hit["top_logprobs"]) if hit.get("top_logprobs") else None)
        raw = raw if raw is not None else preference_from_text(hit["text"])
        if raw is None:
            out.append(dict(result, failure="unparseable", reason=f"judge said {hit['text']!r}"))
            continue
        out.append(dict(result, preference=3.0 - raw if swapped else raw))
    return out


def generate_outputs(model, tokenizer, instructions: list[dict], generator: str, max_new_tokens: int = 2048,
                     temperature: float = 0.0, seed: int = 0) -> list[dict]:
    """One reply per ``{instruction[, dataset]}`` with the tokenizer's chat template (greedy by
    default: a fitness should not move with the sampling noise), as model_outputs.json rows."""
    import torch

    device = next(model.parameters()).device
    rows = []
    for item in instructions:
        torch.manual_seed(seed)
        ids = tokenizer.apply_chat_template([{"role": "user", "content": item["instruction"]}],
                                            add_generation_prompt=True, return_tensors="pt", return_dict=True)
        ids = {k: v.to(device) for k, v in ids.items()}
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id, **sampling)
        text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        rows.append({"dataset": item.get("dataset"), "instruction": item["instruction"], "output": text,
                     "generator": generator})
    return rows


def write_model_outputs(path: str | Path, rows: list[dict]) -> None:
    """alpaca_eval's model_outputs.json: a list of {instruction, output, generator[, dataset]}."""
    keep = ("dataset", "instruction", "output", "generator")
    records = [{k: r[k] for k in keep if r.get(k) is not None} for r in rows]
    Path(path).write_text(json.dumps(records, indent=2, ensure_ascii=False), encoding="utf-8")


# ------------------------------------------------------------------------------------- metrics
def _sem(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def _head2head(preferences: np.ndarray) -> dict:
    """alpaca_eval's describe_head2head on preferences in [1, 2] (0 and 1.5 are draws)."""
    n_draws = int(np.sum((preferences == 1.5) | (preferences == 0)))
    p = np.where(preferences == 0, 1.5, preferences)
    p = p[(p >= 1) & (p <= 2)] - 1                 # drops NaN and out-of-range values
    return {"win_rate": float(p.mean() * 100), "standard_error": _sem(p) * 100,
            "n_wins": int(np.sum(p > 0.5)), "n_wins_base": int(np.sum(p < 0.5)),
            "n_draws": n_draws, "n_total": int(len(p))}


def winrate_metrics(preferences: Sequence[float | None]) -> dict:
    """win_rate, standard_error, n_wins, n_wins_base, n_draws, n_total, discrete_win_rate.

    As ``alpaca_eval.metrics.get_winrate``: the weighted rate is the mean of ``preference - 1``;
    the discrete one first rounds each preference to 1 or 2 (exactly 1.5 stays a half-win).
    """
    p = np.array([np.nan if x is None else float(x) for x in preferences], dtype=float)
    out = _head2head(p)
    discrete = np.where(p == 1.5, 0.0, np.round(p))  # round-half-even, as pandas' round
    out["discrete_win_rate"] = _head2head(discrete)["win_rate"]
    return out


def avg_length(outputs: Sequence[str]) -> int:
    """The leaderboard's avg_length: mean characters per model output, truncated to an int."""
    return int(np.mean([len(o) for o in outputs]))


def load_instruction_difficulty(path: str | Path) -> np.ndarray:
    """alpaca_eval's instruction_difficulty.csv: row index (eval-set position) -> difficulty."""
    import pandas as pd
    return pd.read_csv(path, index_col=0).squeeze("columns").sort_index().to_numpy(dtype=float)


def _fit_logistic(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Unpenalised logistic regression on soft labels y in [0, 1] (mean cross-entropy)."""
    from scipy.optimize import minimize

    def loss(w):
        z = X @ w
        value = np.mean(y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z))
        grad = X.T @ (1 / (1 + np.exp(-z)) - y) / len(y)
        return value, grad

    return minimize(loss, np.zeros(X.shape[1]), jac=True, method="L-BFGS-B").x


def length_controlled(annotations: list[dict], instruction_difficulty: np.ndarray | None = None) -> dict:
    """Length-controlled win rate from a GLM that needs no downloaded file.

    alpaca_eval's ``length_controlled_v1`` models ``logit P(model wins) = a + b tanh(std_delta_len)
    + c instruction_difficulty`` (Dubois et al. 2024, eq. 2), with ``std_delta_len`` the
    baseline-minus-model length difference in characters over its standard deviation, and predicts
    with the length term set to 0. Its instruction difficulties and its regularisation towards two
    "gamed" baselines come from files on the HF hub. Here:

    * without a difficulty file: ``length_controlled_minimal`` (alpaca_eval's own name for the GLM
      with the difficulty term dropped), so LC = sigmoid(a) and there is no lc_standard_error;
    * with one: ``length_controlled_noreg`` (difficulty term, no regularisation to the gamed
      baselines).

    Both are fitted by unpenalised maximum likelihood on the soft preferences (alpaca_eval picks an
    L1 penalty by 5-fold CV, which with 2-3 weights and 800 rows lands close to unpenalised).
    On the DiscoPOP annotations the minimal GLM runs 1.6-3.4 points above the leaderboard's LC.
    """
    p = np.array([np.nan if a.get("preference") is None else float(a["preference"])
                  for a in annotations])
    p = np.where(p == 0, 1.5, p)
    delta = np.array([len(a["output_1"]) - len(a["output_2"]) for a in annotations], dtype=float)
    spread = np.std(delta, ddof=1) if len(delta) > 1 else 0.0
    std_delta = delta / spread if spread > 0 else np.zeros_like(delta)
    columns = [np.tanh(std_delta)]
    if instruction_difficulty is not None:
        if len(instruction_difficulty) != len(annotations):
            raise ValueError(f"{len(instruction_difficulty)} difficulties for {len(annotations)} rows")
        columns.append(np.asarray(instruction_difficulty, dtype=float))
    columns.append(np.ones(len(p)))
    X = np.stack(columns, axis=1)
    train = (p >= 1) & (p <= 2)
    w = _fit_logistic(X[train], p[train] - 1)
    X_test = X.copy()
    X_test[:, 0] = 0.0                               # no length difference
    predicted = 1 / (1 + np.exp(-(X_test @ w)))
    glm = "length_controlled_noreg" if instruction_difficulty is not None else "length_controlled_minimal"
    names = ["np.tanh(std_delta_len)"] + (["instruction_difficulty"] if instruction_difficulty is not None
                                          else []) + ["not_gamed_baseline"]
    return {"length_controlled_winrate": float(predicted.mean() * 100),
            "lc_standard_error": _sem(predicted) * 100 if instruction_difficulty is not None else None,
            "lc_glm": glm, "lc_weights": dict(zip(names, map(float, w)))}


def leaderboard_row(annotations: list[dict], instruction_difficulty: np.ndarray | None = None) -> dict:
    """Every leaderboard number computable from an annotations.json, plus failure counts."""
    row = winrate_metrics([a.get("preference") for a in annotations])
    row.update(length_controlled(annotations, instruction_difficulty))
    row["avg_length"] = avg_length([a["output_2"] for a in annotations])
    failures: dict[str, int] = {}
    for a in annotations:
        if a.get("failure"):
            failures[a["failure"]] = failures.get(a["failure"], 0) + 1
    row["failures"] = failures
    return row
