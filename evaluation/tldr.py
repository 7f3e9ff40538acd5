"""Judging the TL;DR recipe's summaries (task ``recipe:tldr``, :mod:`inner_loop.tldr`) pairwise, as
the DiscoPOP paper did: the trained policy against the human-preferred reference summary, and
against the SFT model.

The judge works as alpaca_eval's weighted annotator (:func:`evaluation.alpaca.annotate`): it sees
the post and two summaries named ``m`` and ``M`` (the order swapped per post by alpaca_eval's seeded
rule, and un-swapped afterwards) and answers one token; the preference comes from that token's
log-probabilities when the endpoint returns them, else from the token. The prompt
(``evaluation/prompts/tldr_pairwise.txt``) is ours: a summary should be concise and faithful to the
post, and its length is not a merit. The paper's judge was GPT-4; any OpenAI-compatible model works.

Numbers (:func:`judge_outputs`): the win rate against the references (``win_rate``, its standard
error ``win_rate_se``, the length-controlled ``lc_win_rate``) and against the SFT model
(``win_rate_vs_sft``, ...), as fractions in [0, 1] (alpaca_eval writes percent; the leaderboard file
keeps its rows as it writes them), by alpaca_eval's own metrics code; the length-controlled rate is
its GLM without instruction difficulty (``length_controlled_minimal``). A failed judgment is counted
(``n_failed``) and never averaged in; a comparison with no judgment at all is an error.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from evaluation import alpaca
from evaluation.judge import Judge, JudgmentCache
from inner_loop.tldr import MODEL_OUTPUTS, OUTPUTS_SUBDIR, REFERENCE_OUTPUTS, SFT_OUTPUTS

PROMPT = Path(__file__).resolve().parent / "prompts" / "tldr_pairwise.txt"
CACHE = "judgments.jsonl"
LEADERBOARD = "leaderboard.json"
ANNOTATIONS = {"vs_human": "annotations_vs_human.json", "vs_sft": "annotations_vs_sft.json"}
SUFFIX = {"vs_human": "", "vs_sft": "_vs_sft"}   # metric name suffix per comparison


class TldrJudgeError(ValueError):
    """The outputs cannot be judged (missing files) or no judgment came back."""


def outputs_folder(path: str | Path) -> Path:
    """The folder holding the three output files: ``path`` itself or its ``tldr/`` (a run folder)."""
    path = Path(path)
    for folder in (path, path / OUTPUTS_SUBDIR):
        if (folder / MODEL_OUTPUTS).is_file():
            return folder
    raise TldrJudgeError(f"no {MODEL_OUTPUTS} in {path} or {path / OUTPUTS_SUBDIR}: train recipe tldr with --out "
                         "first (its score writes the summaries there)")


def _read(folder: Path, name: str) -> list[dict]:
    path = folder / name
    if not path.is_file():
        raise TldrJudgeError(f"{path} is missing (recipe tldr writes {MODEL_OUTPUTS}, {SFT_OUTPUTS} and "
                             f"{REFERENCE_OUTPUTS} together)")
    return json.loads(path.read_text(encoding="utf-8"))


def _failures(annotations: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in annotations:
        if a.get("preference") is None:
            out[a.get("failure", "?")] = out.get(a.get("failure", "?"), 0) + 1
    return out


def _percent(x):
    return None if x is None else x / 100.0


def judge_outputs(folder: str | Path, judge: Judge, *, prompt_path: str | Path | None = None,
                  cache: JudgmentCache | str | Path | None = None, temperature: float = 1.0) -> dict:
    """Judge the policy's summaries in ``folder`` (a run folder or its ``tldr/``) against the references
    and against the SFT model's; write ``annotations_vs_human.json``, ``annotations_vs_sft.json`` and
    ``leaderboard.json`` there and return the metrics (module docstring). ``cache``: a
    :class:`~evaluation.judge.JudgmentCache` or its path (default ``folder/judgments.jsonl``)."""
    folder = outputs_folder(folder)
    model = _read(folder, MODEL_OUTPUTS)
    references = {"vs_human": _read(folder, REFERENCE_OUTPUTS), "vs_sft": _read(folder, SFT_OUTPUTS)}
    if not model:
        raise TldrJudgeError(f"{folder / MODEL_OUTPUTS} has no outputs")
    if not isinstance(cache, JudgmentCache):
        cache = JudgmentCache(cache or folder / CACHE)
    prompt = Path(prompt_path) if prompt_path else PROMPT
    digest = hashlib.sha256(json.dumps([o["instruction"] for o in model]).encode()).hexdigest()[:12]
    metrics: dict = {"n_eval": len(model), "n_judged": 0, "n_failed": 0, "failures": {},
                     "per_prompt": {"prompt_set": f"tldr:{digest}"}, "judge": judge.name}
    board: dict = {"judge": judge.name, "prompt": str(prompt), "outputs": str(folder)}
    for comparison, reference in references.items():
        annotations = alpaca.annotate(judge, alpaca.pair_outputs(model, reference), prompt, cache,
                                      temperature=temperature)
        (folder / ANNOTATIONS[comparison]).write_text(json.dumps(annotations, indent=2, ensure_ascii=False),
                                                      encoding="utf-8")
        failures = _failures(annotations)
        judged = len(annotations) - sum(failures.values())
        if judged == 0:
            first = next(a for a in annotations if a.get("preference") is None)
            raise TldrJudgeError(f"every judgment {comparison.replace('_', ' ')} failed ({failures}); the first: "
                                 f"{first.get('reason', '?')}"[:500])
        row = alpaca.leaderboard_row(annotations)
        board[comparison] = row
        s = SUFFIX[comparison]
        metrics.update({f"win_rate{s}": _percent(row["win_rate"]), f"win_rate{s}_se": _percent(row["standard_error"]),
                        f"lc_win_rate{s}": _percent(row["length_controlled_winrate"])})
        metrics["n_judged"] += judged
        metrics["n_failed"] += len(annotations) - judged
        if failures:
            metrics["failures"][comparison] = failures
        else:  # the same posts in the same order for every run: paired by prompt in comparisons
            metrics["per_prompt"][f"win_rate{s}"] = [a["preference"] - 1.0 for a in annotations]
    metrics["avg_length"] = alpaca.avg_length([o["output"] for o in model])
    metrics["lc_glm"] = alpaca.GLM_MINIMAL
    board["metrics"] = {k: v for k, v in metrics.items() if k != "per_prompt"}
    (folder / LEADERBOARD).write_text(json.dumps(board, indent=2), encoding="utf-8")
    return metrics


def judge_run(metrics: dict, judge: Judge, **kwargs) -> dict:
    """The post-run judge of a ``recipe:tldr`` run (:mod:`evaluation.heldout`): judge the outputs its
    score wrote (``metrics["outputs_dir"]``); the returned metrics are merged into the run's."""
    if not metrics.get("outputs_dir"):
        raise TldrJudgeError("the run's metrics name no outputs_dir: was it trained with recipe tldr?")
    return judge_outputs(metrics["outputs_dir"], judge, **kwargs)


def format_metrics(metrics: dict, folder: str | Path) -> str:
    """The terminal's table of :func:`judge_outputs`' metrics."""
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    lines = [f"TL;DR summaries in {folder}: {metrics['n_eval']} posts, judged by {metrics['judge']}",
             f"{'':<22}{'win rate':>10}{'± se':>8}{'LC win rate':>13}"]
    for name, s in (("vs human reference", ""), ("vs SFT model", "_vs_sft")):
        lines.append(f"{name:<22}{pct(metrics[f'win_rate{s}']):>10}{100 * metrics[f'win_rate{s}_se']:>8.1f}"
                     f"{pct(metrics[f'lc_win_rate{s}']):>13}")
    lines.append(f"avg length {metrics['avg_length']} characters; {metrics['n_judged']} judgments, "
                 f"{metrics['n_failed']} failed (left out)" + (f": {metrics['failures']}" if metrics["failures"] else ""))
    lines.append(f"LC: alpaca_eval's {metrics['lc_glm']} GLM (no instruction difficulty)")
    return "\n".join(lines)
