"""``CampaignConfig``: everything that decides what a campaign does, as one frozen dataclass.

YAML is read only at the edge (:func:`load_yaml`, for ``disco run --config``); flags given on the
command line win over the file. The resolved config is saved in the archive (``meta.config`` and
on every row), and ``disco resume`` rebuilds it from there. It never holds an API key: only the
*name* of the environment variable that does.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from pathlib import Path


class UserError(ValueError):
    """A mistake in what a person asked for (a flag, a name, a file): ``disco`` prints it as one
    line, ``disco: error: <message>``, and exits 2 (``disco --debug`` shows the traceback)."""


def check(name: str, value, kind: str, wording: str | None = None) -> None:
    """Raise :class:`UserError` unless ``value`` is of ``kind``, one of ``KINDS`` (e.g. ``"> 0"``
    for a number above zero, ``"int >= 1"`` for a positive integer); the message names the range."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_number = (is_int or isinstance(value, float)) and not (isinstance(value, float) and math.isnan(value))
    ok, words = KINDS[kind]
    if not ((is_int if kind.startswith("int") else is_number) and ok(value)):  # NaN is no number
        raise UserError(f"{name} must be {wording or words}, not {value!r}")


KINDS = {
    "number": (lambda v: True, "a number"),
    "> 0": (lambda v: v > 0, "a number > 0"),
    ">= 0": (lambda v: v >= 0, "a number >= 0"),
    "int": (lambda v: True, "an integer"),
    "int >= 0": (lambda v: v >= 0, "an integer >= 0"),
    "int >= 1": (lambda v: v >= 1, "an integer >= 1"),
}

# the valid range of every numeric field of CampaignConfig (None: not set, allowed where listed)
RANGES = {
    "candidates": "int >= 0", "seed": "int", "beta": "> 0", "workers": "int >= 1",
    "train_timeout": "> 0", "validate_timeout": "> 0", "max_attempts": "int >= 1",
    "temperature": ">= 0", "max_tokens": "int >= 1", "request_timeout": "> 0", "max_retries": "int >= 0",
    "retry_base_delay": ">= 0", "retry_max_delay": ">= 0", "max_new_tokens": "int >= 1",
    "n_best": "int >= 0", "n_recent": "int >= 0", "n_failures": "int >= 0",
    "max_code_chars": "int >= 1", "max_error_chars": "int >= 1",
}
OPTIONAL = {"beta"}
CHOICES = {"dedupe": ("function", "training"), "isolation": ("auto", "none", "process", "sandbox")}


def check_seeds(seeds, name: str = "seeds") -> tuple[int, ...]:
    """``seeds`` as a tuple of distinct integers, at least one; else a :class:`UserError`."""
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise UserError(f"{name} must be a list of integers, not {seeds!r}")
    seeds = tuple(seeds)
    for s in seeds:
        check(f"each of {name}", s, "int")
    if not seeds:
        raise UserError(f"{name} must hold at least one integer seed")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{name} must be distinct (a repeated seed counts one run twice), not {list(seeds)}")
    return seeds


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
        object.__setattr__(self, "seeds", check_seeds(self.seeds))
        for name, kind in RANGES.items():
            if not (name in OPTIONAL and getattr(self, name) is None):
                check(name, getattr(self, name), kind)
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise UserError(f"{name} must be one of {', '.join(choices)}, not {getattr(self, name)!r}")
        if isinstance(self.baselines, str) or not isinstance(self.overrides or {}, dict):
            raise UserError("baselines must be a list of objective names and overrides a mapping")
        object.__setattr__(self, "baselines", tuple(self.baselines))
        object.__setattr__(self, "overrides", dict(self.overrides or {}))
        questions = tuple(self.mt_bench_questions or ())
        for q in questions:
            check("each of mt_bench_questions", q, "int")
        object.__setattr__(self, "mt_bench_questions", questions)

    @classmethod
    def from_dict(cls, d: dict) -> "CampaignConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in d if k not in known]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, known, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise UserError(f"unknown campaign setting {', '.join(hints)}")
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
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of campaign settings")
    return data


CONFIG_YAML = "config.yaml"


def save_yaml(config: CampaignConfig, directory: str | Path) -> Path:
    """Write ``DIR/config.yaml``: the resolved config, for people (the archive keeps its own copy,
    which is what ``disco resume`` reads; ``disco run --config DIR/config.yaml`` repeats it)."""
    import yaml
    path = Path(directory) / CONFIG_YAML
    path.write_text("# The resolved settings of this campaign, written by `disco run` / `disco resume`.\n"
                    "# Editing this file changes nothing: `disco resume DIR` reads archive.sqlite. To start\n"
                    "# a new campaign like this one: disco run --config DIR/config.yaml --out NEW_DIR\n"
                    + yaml.safe_dump(config.to_dict(), sort_keys=False, default_flow_style=False))
    return path
