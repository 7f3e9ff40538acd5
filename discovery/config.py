"""``CampaignConfig``: everything that decides what a campaign does, as one frozen dataclass.

YAML is read only at the edge (:func:`load_yaml`, for ``disco run --config``); flags given on the
command line win over the file. The resolved config is saved in the archive (``meta.config`` and
on every row), and ``disco resume`` rebuilds it from there. It never holds an API key: only the
*name* of the environment variable that does.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class CampaignConfig:
    """One line per field; the defaults run an offline campaign on the embedded synthetic task."""

    # what to search and how long
    proposer: str = "evolve"            # who writes candidates: "evolve" (offline) or "openai"
    candidates: int = 6                 # stop when this many proposals have reached a final state
    seed: int = 0                       # the proposer's random seed (evolve is deterministic given it)
    # where and how candidates are scored
    task: str = "synthetic"             # inner-loop task (inner_loop.tasks)
    seeds: tuple[int, ...] = (0,)       # training seeds per candidate; fitness is their mean
    beta: float | None = None           # KL strength; None: the task's default, resolved at start
    baselines: tuple[str, ...] = ("dpo", "ipo", "lrml")  # evaluated first, on the same task/seeds
    metric: str = "win_rate"            # the per-seed metric the fitness averages
    fitness: str = "mean_metric"        # fitness function: a name in FITNESS or "module:function"
    workers: int = 1                    # candidates trained at once (>1: one process each)
    train_timeout: float = 600.0        # seconds per training run (one seed)
    validate_timeout: float = 20.0      # seconds for the sandbox validation of one candidate
    isolation: str = "auto"             # run_candidate's isolation for candidate code
    max_attempts: int = 2               # training starts per row before a crashing row is failed
    overrides: dict = dataclasses.field(default_factory=dict)  # TrainConfig/task overrides
    inspect: bool = True                # write plots + symbolic summary into each candidate folder
    dedupe: str = "training"            # skip a candidate that has the same "function" as an earlier
                                        # one, or the same "training" (gradients up to a factor > 0)
    # the language-model proposer
    base_url: str | None = None         # OpenAI-compatible endpoint; None: api.openai.com
    model: str = "gpt-4o-mini"          # model name as the endpoint knows it
    api_key_env: str = "OPENAI_API_KEY"  # NAME of the variable holding the key (never the key)
    temperature: float = 1.0            # sampling temperature of proposals
    max_tokens: int = 2048              # completion budget per proposal
    request_timeout: float = 120.0      # seconds per HTTP request
    max_retries: int = 5                # retries on 429, 5xx, timeouts and dropped connections
    retry_base_delay: float = 2.0       # first backoff in seconds, doubled per retry
    retry_max_delay: float = 60.0       # cap of one backoff (also caps a server's Retry-After)
    # an LLM judge as fitness (evaluation.fitness: fitness "mt_bench" or "alpaca_eval", on a task
    # that keeps its model, e.g. recipe:zephyr-gemma); request_timeout and max_retries apply too
    judge_base_url: str | None = None   # OpenAI-compatible judge endpoint; None: api.openai.com
    judge_model: str = "gpt-4"          # judge model name (FastChat's MT-Bench judge is gpt-4)
    judge_api_key_env: str = "OPENAI_API_KEY"  # NAME of the variable holding the judge's key
    fastchat_data: str | None = None    # FastChat's llm_judge/data folder (MT-Bench questions, prompts)
    mt_bench_questions: tuple[int, ...] = ()  # MT-Bench question ids to answer; empty: all 80
    alpaca_reference: str | None = None  # reference outputs, alpaca_eval's JSON/JSONL format
    alpaca_instructions: str | None = None  # JSON/JSONL of {instruction}; None: the reference's
    alpaca_judge_prompt: str | None = None  # judge prompt file; None: the installed alpaca_eval's
    max_new_tokens: int = 1024          # generated tokens per MT-Bench turn / AlpacaEval output
    # how much of the archive a prompt shows (bounds the prompt's length)
    n_best: int = 5                     # best finished candidates shown
    n_recent: int = 3                   # most recent candidates shown
    n_failures: int = 3                 # most recent invalid/failed candidates shown with errors
    max_code_chars: int = 1500          # code longer than this is cut in prompts
    max_error_chars: int = 400          # error messages longer than this are cut in prompts
    # seams ("module:function"), replaceable by tests and by future fitness functions
    trainer: str = "inner_loop.runner:run_candidate"
    validator: str = "objectives.validate:validate"
    fingerprinter: str = "objectives.fingerprint"      # module with fingerprint, find_duplicate, Fingerprint
    inspector: str = "objectives.inspection:inspect_objective"

    def __post_init__(self):
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "baselines", tuple(self.baselines))
        object.__setattr__(self, "overrides", dict(self.overrides or {}))
        object.__setattr__(self, "mt_bench_questions", tuple(int(q) for q in self.mt_bench_questions or ()))
        if self.candidates < 0 or self.workers < 1 or not self.seeds:
            raise ValueError("need candidates >= 0, workers >= 1 and at least one seed")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.dedupe not in ("function", "training"):
            raise ValueError(f"dedupe must be 'function' or 'training', not {self.dedupe!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "CampaignConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in d if k not in known]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, known, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(f"unknown campaign setting {', '.join(hints)}")
        return cls(**d)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["seeds"], d["baselines"] = list(self.seeds), list(self.baselines)
        d["mt_bench_questions"] = list(self.mt_bench_questions)
        return d

    def resolved(self) -> "CampaignConfig":
        """Fill in what defaults to "the task's": beta."""
        if self.beta is not None:
            return self
        return dataclasses.replace(self, beta=task_beta(self.task, self.overrides))


def task_beta(task: str, overrides: dict | None = None) -> float:
    """The task's default beta (building the task if needed; it is cached for training anyway)."""
    from inner_loop.runner import split_overrides
    from inner_loop.tasks import get_task
    _, task_overrides, _ = split_overrides(dict(overrides or {}))
    return float(get_task(task, progress=False, **task_overrides).beta)


def load_yaml(path: str | Path) -> dict:
    import yaml
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of campaign settings")
    return data
