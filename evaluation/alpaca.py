"""AlpacaEval 2 (Dubois et al. 2024): pairwise judging against reference outputs, and its metrics.

Judging follows alpaca_eval's ``weighted_alpaca_eval_gpt4_turbo`` annotator: the judge sees the two
outputs as model ``m`` and model ``M`` and answers one token; with the top-5 log-probabilities of
that token, ``preference = 2 - P(m) / (P(m) + P(M)) = 1 + P(second is better)``; without them the
token itself decides (``m`` -> 1, ``M`` -> 2). The order shown to the judge is swapped per example
with alpaca_eval's seeded rule (``utils.random_seeded_choice("is_switched_outputs" + instruction +
"0")``, seed 0 being its annotators' default) and the preference is un-swapped (``3 - p``); on all
nine DiscoPOP annotation files this reproduces every stored preference from the judge's raw log-probs.
The judge prompt is the file that annotator's ``configs.yaml`` names in the installed package, or
one the user gives (``--judge-prompt``).

The metrics are alpaca_eval's own: ``alpaca_eval.metrics.get_winrate`` (win_rate, standard_error,
n_wins, n_wins_base, n_draws, n_total, discrete_win_rate) on our annotation records, and the
leaderboard's ``avg_length`` (its ``main.py`` one-liner). The length-controlled win rate is fitted
with the package's GLM code (``glm_winrate.GLM_INFO`` formulas, ``make_dmatrix_for_model``,
``fit_LogisticRegressionCV``) but not through ``get_length_controlled_winrate``, which always
downloads ``df_gamed.csv`` from the HF hub (unreachable here), whatever GLM is asked for; only the
featurisation step around that download is mirrored here (``_glm_features``, pinned to the
package's own function by a test). Without the leaderboard's side files the GLM is
``length_controlled_minimal`` (no difficulty term, no regularisation to gamed baselines), which
runs 1.6-3.4 points above the DiscoPOP leaderboards' ``length_controlled_v1`` LC: it is reported
under its own name, not as the leaderboard's number. See ``length_controlled``.

alpaca_eval 0.6.6 imports ``pkg_resources``, hence the ``setuptools<81`` run-time pin in
pyproject.toml. It is imported on first use (1-2 s: it pulls in sklearn, patsy and datasets; its
``__init__`` also loads a ``.env`` from the working directory).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import yaml

from evaluation.judge import Judge, JudgeError, JudgmentCache, prompt_digest

log = logging.getLogger(__name__)

ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"   # alpaca_eval 2's default annotator config
SWITCH_COLUMN = "is_switched_outputs"   # alpaca_eval's seed prefix for the order swap
SWAP_SEED = 0                           # alpaca_eval annotator seed (checked on DiscoPOP annotations)
FIRST, SECOND = "m", "M"                # identifiers of output_1 / output_2 in the judge prompt
GLM_MINIMAL = "length_controlled_minimal"      # LC GLM without instruction difficulty
GLM_DIFFICULTY = "length_controlled_noreg"     # LC GLM with it, no gamed-baseline regulariser


def alpaca_eval_package():
    """The alpaca_eval package with its metrics loaded (imported here, on first use)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        import alpaca_eval.metrics.glm_winrate  # noqa: F401  (also imports alpaca_eval.utils, .constants)
    import alpaca_eval as package
    return package


# -------------------------------------------------------------------------------------- prompt
def find_prompt(path: str | Path | None = None) -> Path:
    """The judge prompt file: ``path`` if given, else the one alpaca_eval's annotator config names."""
    if path:
        return Path(path)
    configs = alpaca_eval_package().constants.EVALUATORS_CONFIG_DIR
    config = yaml.safe_load((configs / ANNOTATOR / "configs.yaml").read_text(encoding="utf-8"))
    return configs / config[ANNOTATOR]["prompt_template"]


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
    choose = alpaca_eval_package().utils.random_seeded_choice
    return choose(seed=SWITCH_COLUMN + instruction + str(seed), choices=[False, True])


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
def _plain(metrics: dict) -> dict:
    """numpy scalars -> Python numbers, so the package's results serialise to JSON."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in metrics.items()}


def annotations_frame(annotations: Sequence[dict]) -> pd.DataFrame:
    """Our annotation records as the DataFrame alpaca_eval's metrics take: one row per record in
    eval-set order (row label = eval-set index), a failed judgment's preference as NaN."""
    df = pd.DataFrame.from_records(list(annotations))
    df["preference"] = [np.nan if x is None else float(x) for x in df["preference"]]
    return df


def winrate_metrics(preferences: Sequence[float | None]) -> dict:
    """win_rate, standard_error, n_wins, n_wins_base, n_draws, n_total, discrete_win_rate, by
    ``alpaca_eval.metrics.get_winrate``: the weighted rate is the mean of ``preference - 1``, the
    discrete one rounds each preference to 1 or 2 first; failed judgments (None) are left out."""
    frame = annotations_frame([{"preference": p} for p in preferences])
    return _plain(alpaca_eval_package().metrics.get_winrate(frame))


def avg_length(outputs: Sequence[str]) -> int:
    """The leaderboard's avg_length (alpaca_eval/main.py): mean characters per model output, as int."""
    return int(np.mean([len(o) for o in outputs]))


def load_instruction_difficulty(path: str | Path) -> pd.Series:
    """alpaca_eval's instruction_difficulty.csv, read as its ``glm_winrate._get_instructions_difficulty``
    reads the hub copy: eval-set index -> difficulty."""
    return pd.read_csv(path, index_col=0).squeeze("columns")


def _glm_features(df: pd.DataFrame, difficulty: pd.Series | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Steps 2-3 of alpaca_eval's ``glm_winrate._get_featurized_data`` (its step 1 is the download):
    train features with the preference in [0, 1], and the same rows with no length difference.

    One departure: if all length differences are equal (std 0) the package divides by zero; here
    the length feature is then 0, so the length term drops out."""
    delta = df["output_1"].str.len() - df["output_2"].str.len()
    spread = delta.std()
    X = pd.DataFrame({"preference": df["preference"].astype(float).replace({0.0: 1.5}) - 1,
                      "std_delta_len": delta / spread if spread > 0 else delta * 0.0,
                      "not_gamed_baseline": True}, index=df.index)
    if difficulty is not None:
        missing = df.index.difference(difficulty.index)
        if len(missing):
            raise ValueError(f"no instruction difficulty for eval-set index {list(missing[:5])}")
        X["instruction_difficulty"] = difficulty.loc[df.index].to_numpy(dtype=float)
    X_test = X.drop(columns=["preference"]).assign(std_delta_len=0)
    return X, X_test


def length_controlled(annotations: Sequence[dict], instruction_difficulty: pd.Series | None = None) -> dict:
    """Length-controlled win rate by alpaca_eval's GLM code, without its downloaded files.

    The GLM (Dubois et al. 2024, eq. 2) models ``logit P(model wins) = a + b tanh(std_delta_len)
    [+ c instruction_difficulty]``, fitted on the soft preferences with an L1 penalty chosen by
    5-fold CV (``fit_LogisticRegressionCV``), and predicts each instruction with the length term
    set to 0; LC is the mean prediction. ``std_delta_len`` is the reference-minus-model length
    difference in characters over its standard deviation.

    * without a difficulty file: ``length_controlled_minimal``, so LC = sigmoid(a) for every row
      and ``lc_standard_error`` is None (the package's sem of a constant is 0, not an error bar);
    * with one: ``length_controlled_noreg`` (the difficulty term, looked up by eval-set index as
      the package does, no regularisation towards the two "gamed" baselines of ``df_gamed.csv``).

    The leaderboard's ``length_controlled_v1`` needs ``df_gamed.csv`` (the gamed baselines'
    annotations and difficulties). On the nine DiscoPOP runs the minimal GLM's LC is 1.61-3.42
    points above the leaderboard's, in the same order; it is not the leaderboard's number.
    """
    glm = alpaca_eval_package().metrics.glm_winrate
    name = GLM_MINIMAL if instruction_difficulty is None else GLM_DIFFICULTY
    info = glm.GLM_INFO[name]
    X, X_test = _glm_features(annotations_frame(annotations), instruction_difficulty)
    train, test = glm.make_dmatrix_for_model(X, X_test, formula=info["formula"])
    train = train[train["preference"].notna()]
    out = {"length_controlled_winrate": None, "lc_standard_error": None, "lc_glm": name, "lc_weights": None}
    if len(train) < info["kwargs"]["n_splits"]:
        log.warning("LC win rate needs >= %d judged rows, has %d", info["kwargs"]["n_splits"], len(train))
        return out
    import sklearn
    with sklearn.config_context(), warnings.catch_warnings():  # it turns on metadata routing globally
        warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")  # penalty="l1": pinned
        model = glm.fit_LogisticRegressionCV(train, "preference", is_ytrue_proba=True, **info["kwargs"])
    predicted = pd.Series(model.predict_proba(test)[:, 1])
    return dict(out, length_controlled_winrate=float(predicted.mean() * 100),
                lc_standard_error=float(predicted.sem() * 100) if instruction_difficulty is not None else None,
                lc_weights={k: float(v) for k, v in zip(test.columns, model.coef_[0])})


def leaderboard_row(annotations: list[dict], instruction_difficulty: pd.Series | None = None) -> dict:
    """Every leaderboard number computable from an annotations.json, plus failure counts."""
    row = winrate_metrics([a.get("preference") for a in annotations])
    row.update(length_controlled(annotations, instruction_difficulty))
    row["avg_length"] = avg_length([a["output_2"] for a in annotations])
    glm = alpaca_eval_package().metrics.glm_winrate
    if row["length_controlled_winrate"] is not None and glm.get_is_extreme_changes(
            row["win_rate"], row["length_controlled_winrate"]):
        log.warning("LC win rate %.1f is far from the win rate %.1f: the GLM may have failed",
                    row["length_controlled_winrate"], row["win_rate"])
    failures: dict[str, int] = {}
    for a in annotations:
        if a.get("failure"):
            failures[a["failure"]] = failures.get(a["failure"], 0) + 1
    row["failures"] = failures
    return row
