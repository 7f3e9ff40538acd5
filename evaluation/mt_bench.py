"""MT-Bench (Zheng et al. 2023): two-turn answers from a model, single-answer grading by an LLM judge.

Data comes from the user's FastChat data folder, laid out as FastChat lays it out::

    DIR/judge_prompts.jsonl                      judge prompt templates (single-v1, single-math-v1, ...)
    DIR/mt_bench/question.jsonl                  80 questions, 8 categories, two turns each
    DIR/mt_bench/reference_answer/<model>.jsonl  reference answers (math, reasoning, coding)

The project carries none of those texts; templates are read at run time and filled with FastChat's
field names. Grading follows FastChat's ``gen_judgment.py`` (single mode): ``single-v1`` for turn 1,
``single-v1-multi-turn`` for turn 2, and the ``single-math-v1*`` forms with the reference answer for
the categories that need one. A judgment that cannot be parsed or obtained is a typed failure,
counted in the result and never averaged in.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import mean

from evaluation.judge import Judge, JudgeError, JudgmentCache, prompt_digest

# FastChat's sampling temperature per category (temperature 0 -> greedy decoding).
CATEGORY_TEMPERATURE = {
    "writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0,
    "coding": 0.0, "reasoning": 0.0, "stem": 0.1, "humanities": 0.1,
}
DEFAULT_TEMPERATURE = 0.7                          # FastChat's default for other categories
NEED_REF_CATEGORIES = ("math", "reasoning", "coding", "arena-hard-200")
JUDGE_MAX_TOKENS = 2048                            # FastChat's judge call: temperature 0, 2048 tokens
TWO_SCORE = re.compile(r"\[\[(\d+\.?\d*)\]\]")     # FastChat's rating regexes, tried in this order
ONE_SCORE = re.compile(r"\[(\d+\.?\d*)\]")


# ---------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class FastChatData:
    """Questions, judge prompts and reference answers read from a FastChat data folder."""

    questions: list[dict]               # {question_id, category, turns: [q1, q2], ...}
    prompts: dict[str, dict]            # name -> {system_prompt, prompt_template, output_format, ...}
    references: dict[int, list[str]]    # question_id -> reference turns
    reference_model: str | None


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_fastchat(root: str | Path, bench: str = "mt_bench",
                  reference_model: str | None = None) -> FastChatData:
    """Read ``root`` as FastChat's ``llm_judge/data`` folder (default reference model: gpt-4)."""
    root = Path(root)
    questions = read_jsonl(root / bench / "question.jsonl")
    prompts = {p["name"]: p for p in read_jsonl(root / "judge_prompts.jsonl")}
    ref_dir = root / bench / "reference_answer"
    files = sorted(ref_dir.glob("*.jsonl")) if ref_dir.is_dir() else []
    if reference_model is None and files:
        names = [f.stem for f in files]
        reference_model = "gpt-4" if "gpt-4" in names else names[0]
    references = {}
    if reference_model is not None:
        for row in read_jsonl(ref_dir / f"{reference_model}.jsonl"):
            references[row["question_id"]] = row["choices"][0]["turns"]
    return FastChatData(questions, prompts, references, reference_model)


def load_answers(path: str | Path) -> list[dict]:
    """FastChat model_answer JSONL; a later row for the same question replaces an earlier one."""
    by_id = {row["question_id"]: row for row in read_jsonl(path)}
    return [by_id[k] for k in sorted(by_id)]


# ---------------------------------------------------------------------------------- generation
def generate_answers(model, tokenizer, questions: list[dict], model_id: str,
                     max_new_tokens: int = 1024, seed: int = 0) -> list[dict]:
    """Answer both turns of each question with the tokenizer's chat template (FastChat's format)."""
    import torch

    rows = []
    device = next(model.parameters()).device
    for question in questions:
        temperature = CATEGORY_TEMPERATURE.get(question["category"], DEFAULT_TEMPERATURE)
        torch.manual_seed(seed)
        messages, turns = [], []
        for user_turn in question["turns"]:
            messages.append({"role": "user", "content": user_turn})
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                return_tensors="pt", return_dict=True)
            ids = {k: v.to(device) for k, v in ids.items()}
            sampling = ({"do_sample": True, "temperature": temperature} if temperature > 1e-4
                        else {"do_sample": False})
            with torch.no_grad():
                out = model.generate(**ids, max_new_tokens=max_new_tokens,
                                     pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                                     **sampling)
            text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
            text = text.strip()
            turns.append(text)
            messages.append({"role": "assistant", "content": text})
        rows.append({"question_id": question["question_id"], "answer_id": uuid.uuid4().hex,
                     "model_id": model_id, "choices": [{"index": 0, "turns": turns}],
                     "tstamp": time.time()})
    return rows


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------------------------- judging
def prompt_name(category: str, turn: int) -> str:
    """FastChat's choice of single-answer prompt for a category and turn (1 or 2)."""
    base = "single-math-v1" if category in NEED_REF_CATEGORIES else "single-v1"
    return base + ("-multi-turn" if turn == 2 else "")


def judge_messages(prompt: dict, question: dict, answer_turns: list[str],
                   reference_turns: list[str] | None, turn: int) -> list[dict]:
    """Fill a FastChat single-answer template with FastChat's field names."""
    q, a = question["turns"], answer_turns
    if turn == 1:
        fields = {"question": q[0], "answer": a[0]}
        if reference_turns is not None:
            fields["ref_answer_1"] = reference_turns[0]
    else:
        fields = {"question_1": q[0], "question_2": q[1], "answer_1": a[0], "answer_2": a[1]}
        if reference_turns is not None:
            fields.update(ref_answer_1=reference_turns[0], ref_answer_2=reference_turns[1])
    messages = []
    if prompt.get("system_prompt"):
        messages.append({"role": "system", "content": prompt["system_prompt"]})
    messages.append({"role": "user", "content": prompt["prompt_template"].format(**fields)})
    return messages


def parse_rating(text: str) -> float | None:
    """``[[rating]]`` first, then ``[rating]``, as FastChat does; None when neither is there."""
    match = TWO_SCORE.search(text) or ONE_SCORE.search(text)
    return float(match.group(1)) if match else None


@dataclass(frozen=True)
class Judgment:
    """One graded turn: a score, or a failure kind (``unparseable``, ``timeout``, ``http`` ...)."""

    question_id: int
    category: str
    turn: int
    model: str
    judge: str
    prompt: str
    score: float | None
    failure: str | None = None
    reason: str = ""
    judgment: str = ""
    cached: bool = False


def judge_answers(judge: Judge, data: FastChatData, answers: list[dict],
                  cache: JudgmentCache | None = None, turns=(1, 2), parallel: int = 1,
                  question_ids: set[int] | None = None) -> list[Judgment]:
    """Grade every (question, turn) of ``answers``; cached replies are reused, never re-bought."""
    cache = JudgmentCache(None) if cache is None else cache
    questions = {q["question_id"]: q for q in data.questions}
    tasks = []
    for row in answers:
        question = questions.get(row["question_id"])
        if question is None or (question_ids and row["question_id"] not in question_ids):
            continue
        for turn in turns:
            tasks.append((question, row, turn))

    def run(task) -> Judgment:
        question, row, turn = task
        name = prompt_name(question["category"], turn)
        if name not in data.prompts:
            raise KeyError(f"{name!r} is not in judge_prompts.jsonl")
        ref = None
        if question["category"] in NEED_REF_CATEGORIES:
            ref = data.references.get(question["question_id"])
            if ref is None:
                raise KeyError(f"no reference answer for question {question['question_id']}")
        messages = judge_messages(data.prompts[name], question, row["choices"][0]["turns"], ref, turn)
        key = (question["question_id"], turn, row["model_id"], judge.name, name,
               prompt_digest(messages))
        common = dict(question_id=question["question_id"], category=question["category"],
                      turn=turn, model=row["model_id"], judge=judge.name, prompt=name)
        hit = cache.get(key)
        if hit is None:
            try:
                reply = judge.complete(messages, max_tokens=JUDGE_MAX_TOKENS, temperature=0.0)
            except JudgeError as e:
                return Judgment(**common, score=None, failure=e.kind, reason=e.reason)
            hit = cache.put(key, {"judgment": reply.text, "usage": reply.usage})
            cached = False
        else:
            cached = True
        score = parse_rating(hit["judgment"])
        failure = None if score is not None else "unparseable"
        reason = "" if score is not None else "no [[rating]] or [rating] in the judgment"
        return Judgment(**common, score=score, failure=failure, reason=reason,
                        judgment=hit["judgment"], cached=cached)

    if parallel > 1:
        with ThreadPoolExecutor(parallel) as pool:
            return list(pool.map(run, tasks))
    return [run(t) for t in tasks]


def summarise(judgments: list[Judgment]) -> dict:
    """Mean score overall, per turn and per category over the graded turns; failures counted apart."""
    ok = [j for j in judgments if j.score is not None]
    by_turn, by_category = defaultdict(list), defaultdict(list)
    for j in ok:
        by_turn[j.turn].append(j.score)
        by_category[j.category].append(j.score)
    return {
        "score": mean(j.score for j in ok) if ok else None,
        "per_turn": {str(t): mean(v) for t, v in sorted(by_turn.items())},
        "per_category": {c: mean(v) for c, v in sorted(by_category.items())},
        "n_judged": len(ok),
        "n_failed": len(judgments) - len(ok),
        "failures": dict(Counter(j.failure for j in judgments if j.failure)),
        "n_cached": sum(j.cached for j in judgments),
        "models": sorted({j.model for j in judgments}),
        "judge": judgments[0].judge if judgments else None,
    }


def judgment_rows(judgments: list[Judgment]) -> list[dict]:
    return [asdict(j) for j in judgments]
