"""``CampaignConfig``: everything that decides what a campaign does, as small frozen dataclasses.

::

    candidates, baselines        what to search and against what
    proposer   ProposerConfig    who writes candidates (evolve / an OpenAI-compatible endpoint)
    prompt     PromptLimits      how much of the archive one prompt shows
    training   TrainingConfig    the inner loop: task, seeds, beta, overrides, timeout, isolation
    fitness    FitnessConfig     how a trained candidate is scored (judge: JudgeConfig)
    execution  ExecutionConfig   workers, validation timeout, inspection, deduplication,
                                 the executor (local / ray) and its cluster settings

YAML is nested the same way and read only at the edge (:func:`load_yaml`, for ``disco run
--config``); flags and ``--set section.key=value`` win over the file. :meth:`CampaignConfig.from_dict`
also takes the flat keys of earlier versions (``task``, ``workers``, ``judge_model``, ...; see
:data:`FLAT`), printing one deprecation line that names the new keys, so older files and
archives keep working. The resolved config is saved in the archive (``meta.config`` and on every
row), and ``disco resume`` rebuilds it from there. It never holds an API key: only the *name* of
the environment variable that does.

The functions a campaign calls (validator, fingerprinter, inspector, trainer, fitness) are no
settings: they are objects, :class:`discovery.seams.Seams`.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from pathlib import Path
from typing import ClassVar

from inner_loop.overrides import UserError, check, check_seeds  # noqa: F401 - UserError re-exported

log = logging.getLogger("discovery.config")


class _Section:
    """Checks shared by the sections: ``RANGES`` (field -> a kind of :data:`KINDS`), ``OPTIONAL``
    (fields that may be None), ``CHOICES`` (field -> allowed values); messages name the field by
    its dotted path (``PREFIX``), e.g. ``training.timeout must be a number > 0``."""

    PREFIX: ClassVar[str] = ""
    RANGES: ClassVar[dict] = {}
    OPTIONAL: ClassVar[frozenset] = frozenset()
    CHOICES: ClassVar[dict] = {}
    SECTIONS: ClassVar[dict] = {}  # field -> section class (nested sections)

    def _check(self) -> None:
        for name, kind in self.RANGES.items():
            value = getattr(self, name)
            if not (name in self.OPTIONAL and value is None):
                check(self.PREFIX + name, value, kind)
        for name, choices in self.CHOICES.items():
            if getattr(self, name) not in choices:
                raise UserError(f"{self.PREFIX}{name} must be one of {', '.join(choices)}, "
                                f"not {getattr(self, name)!r}")
        for name, section in self.SECTIONS.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, section.from_dict(value))
            elif not isinstance(value, section):
                raise UserError(f"{self.PREFIX}{name} must be a mapping of settings, not {value!r}")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict):
        if not isinstance(d, dict):
            raise UserError(f"{cls.PREFIX.rstrip('.')} must be a mapping of settings, not {d!r}")
        unknown = [k for k in d if k not in cls.names()]
        if unknown:
            raise UserError(unknown_message([cls.PREFIX + k for k in unknown], all_keys(cls)))
        return cls(**d)

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, _Section):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = dict(value)
            out[f.name] = value
        return out


def all_keys(cls, prefix: str | None = None) -> list[str]:
    """Every dotted setting under ``cls`` (``training.seeds``, ``fitness.judge.model``, ...)."""
    prefix = cls.PREFIX if prefix is None else prefix
    out = []
    for name in cls.names():
        section = cls.SECTIONS.get(name)
        out += all_keys(section) if section else [prefix + name]
    return out


def unknown_message(keys: list[str], known: list[str]) -> str:
    hints = []
    for k in keys:
        close = difflib.get_close_matches(k, known, n=1)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"unknown campaign setting {', '.join(hints)}"


@dataclasses.dataclass(frozen=True)
class ProposerConfig(_Section):
    """Who writes candidates, and the endpoint of the language-model proposer."""

    PREFIX: ClassVar[str] = "proposer."
    RANGES: ClassVar[dict] = {"seed": "int", "temperature": ">= 0", "max_tokens": "int >= 1",
                              "request_timeout": "> 0", "max_retries": "int >= 0",
                              "retry_base_delay": ">= 0", "retry_max_delay": ">= 0", "islands": "int >= 1",
                              "proposals_per_request": "int >= 1", "sweep_constants": "int >= 0"}
    CHOICES: ClassVar[dict] = {"selection": ("islands", "random")}

    name: str = "evolve"                # "evolve" (offline symbolic evolution) or "openai"
    seed: int = 0                       # the proposer's random seed (evolve is deterministic given it)
    base_url: str | None = None         # OpenAI-compatible endpoint; None: api.openai.com
    model: str = "gpt-4o-mini"          # model name as the endpoint knows it
    api_key_env: str = "OPENAI_API_KEY"  # NAME of the variable holding the key (never the key)
    temperature: float = 1.0            # sampling temperature of proposals
    max_tokens: int = 2048              # completion budget per proposal
    request_timeout: float = 120.0      # seconds per HTTP request
    max_retries: int = 5                # retries on 429, 5xx, timeouts and dropped connections
    retry_base_delay: float = 2.0       # first backoff in seconds, doubled per retry
    retry_max_delay: float = 60.0       # cap of one backoff (also caps a server's Retry-After)
    selection: str = "islands"          # parents/inspirations: "islands" (per-island tournament, migration)
                                        # or "random" (uniform over the grammar: the search-quality baseline)
    islands: int = 3                    # islands of the population (candidates assigned round-robin)
    proposals_per_request: int = 1      # proposals asked for at once; each is screened before full seeds
    sweep_constants: int = 0            # > 0: a candidate that beats DPO gets this many variants of its
                                        # numeric literals trained without a model call
    lessons_model: bool = True          # the lessons summary is written by the LLM (openai proposer only)

    def __post_init__(self):
        self._check()

    def endpoint(self):
        """The proposer's endpoint for :mod:`discovery.openai_client`."""
        from discovery.openai_client import Endpoint
        return Endpoint(base_url=self.base_url, model=self.model, api_key_env=self.api_key_env,
                        request_timeout=self.request_timeout, max_retries=self.max_retries,
                        retry_base_delay=self.retry_base_delay, retry_max_delay=self.retry_max_delay)


@dataclasses.dataclass(frozen=True)
class PromptLimits(_Section):
    """How much of the archive one prompt shows (the prompt's length is bounded by these)."""

    PREFIX: ClassVar[str] = "prompt."
    RANGES: ClassVar[dict] = {"n_best": "int >= 0", "n_recent": "int >= 0", "n_failures": "int >= 0",
                              "max_code_chars": "int >= 1", "max_thought_chars": "int >= 1",
                              "max_error_chars": "int >= 1", "n_code": "int >= 0",
                              "max_history_rows": "int >= 1", "max_prompt_chars": "int >= 1",
                              "lessons_every": "int >= 0"}

    n_best: int = 5                     # best finished candidates above DPO shown with diagnostics
    n_recent: int = 3                   # most recent candidates shown with diagnostics
    n_failures: int = 3                 # most recent invalid/failed candidates shown with errors
    max_code_chars: int = 1500          # code longer than this is cut in prompts
    max_thought_chars: int = 400        # hypotheses longer than this are cut (at a word) in prompts
    max_error_chars: int = 400          # error messages longer than this are cut in prompts
    n_code: int = 4                     # entries shown with their full code (the selected parent first)
    max_history_rows: int = 40          # history table rows before older rows are grouped (never dropped)
    max_prompt_chars: int = 30000       # the user prompt's bound, whatever the archive's size
    lessons_every: int = 5              # a lessons summary every this many finished candidates (0: never)

    def __post_init__(self):
        self._check()


@dataclasses.dataclass(frozen=True)
class TrainingConfig(_Section):
    """The inner loop each candidate is trained with; fitness is over ``seeds``."""

    PREFIX: ClassVar[str] = "training."
    RANGES: ClassVar[dict] = {"beta": "> 0", "timeout": "> 0", "max_attempts": "int >= 1",
                              "screen_seeds": "int >= 0", "best_extra_seeds": "int >= 0",
                              "gpus_per_candidate": "int >= 1"}
    OPTIONAL: ClassVar[frozenset] = frozenset({"beta"})
    CHOICES: ClassVar[dict] = {"isolation": ("auto", "none", "process", "sandbox")}

    task: str = "synthetic"             # inner-loop task (inner_loop.tasks)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # training seeds per candidate; fitness is their mean
                                        # (5: the paired IPO - DPO 95% half-width is 0.087 of DPO's
                                        # effect over SFT; benchmarks/fitness_resolution.py)
    beta: float | None = None           # KL strength; None: the task's default, resolved at start
    overrides: dict = dataclasses.field(default_factory=dict)  # TrainConfig/task overrides
    timeout: float = 600.0              # seconds per training run (one seed)
    isolation: str = "auto"             # run_candidate's isolation for candidate code
    max_attempts: int = 2               # training starts per row (per stage) before a crashing row is failed
    screen_seeds: int = 1               # successive halving: > 0, a candidate first trains on the first
                                        # screen_seeds seeds and trains on the rest only when its paired
                                        # difference to DPO there is not clearly negative (0: off; as
                                        # many as seeds or more: no screening); baselines train on all.
                                        # 1 (the default): 1.19x the discovery per CPU-second of no
                                        # screening on the embedded task (benchmarks/halving.py)
    best_extra_seeds: int = 0           # a candidate that would become the best first trains this many
                                        # extra seeds (after the largest of seeds) and is scored on all
    gpus_per_candidate: int = 1         # > 1: each seed of a recipe task trains as one N-process job
                                        # (inner_loop.distributed: accelerate + the recipe's ZeRO-3 on
                                        # GPUs; on Ray one task asking for N GPUs, so on one node)

    def screens(self) -> bool:
        """Whether candidates are screened: 0 < screen_seeds < the number of seeds."""
        return 0 < self.screen_seeds < len(self.seeds)

    def extra_seeds(self) -> tuple[int, ...]:
        """The seeds a would-be best trains on besides ``seeds``: max+1, ..., max+best_extra_seeds."""
        top = max(self.seeds)
        return tuple(range(top + 1, top + 1 + self.best_extra_seeds))

    def __post_init__(self):
        object.__setattr__(self, "seeds", check_seeds(self.seeds, "training.seeds"))
        if not isinstance(self.overrides or {}, dict):
            raise UserError(f"training.overrides must be a mapping, not {self.overrides!r}")
        object.__setattr__(self, "overrides", dict(self.overrides or {}))
        self._check()


@dataclasses.dataclass(frozen=True)
class JudgeConfig(_Section):
    """An LLM judge as fitness (evaluation.fitness: ``mt_bench`` or ``alpaca_eval``, on a task that
    keeps its model, e.g. recipe:zephyr-gemma)."""

    PREFIX: ClassVar[str] = "fitness.judge."
    RANGES: ClassVar[dict] = {"request_timeout": "> 0", "max_retries": "int >= 0",
                              "max_new_tokens": "int >= 1"}

    base_url: str | None = None         # OpenAI-compatible judge endpoint; None: api.openai.com
    model: str = "gpt-4"                # judge model name (FastChat's MT-Bench judge is gpt-4)
    api_key_env: str = "OPENAI_API_KEY"  # NAME of the variable holding the judge's key
    request_timeout: float = 120.0      # seconds per HTTP request
    max_retries: int = 5                # retries on 429, 5xx, timeouts and dropped connections
    fastchat_data: str | None = None    # FastChat's llm_judge/data folder (MT-Bench questions, prompts)
    mt_bench_questions: tuple[int, ...] = ()  # MT-Bench question ids to answer; empty: all 80
    alpaca_reference: str | None = None  # reference outputs, alpaca_eval's JSON/JSONL format
    alpaca_instructions: str | None = None  # JSON/JSONL of {instruction}; None: the reference's
    alpaca_judge_prompt: str | None = None  # judge prompt file; None: the installed alpaca_eval's
    max_new_tokens: int = 1024          # generated tokens per MT-Bench turn / AlpacaEval output

    def __post_init__(self):
        questions = self.mt_bench_questions or ()
        if isinstance(questions, (str, bytes)) or not hasattr(questions, "__iter__"):
            raise UserError(f"fitness.judge.mt_bench_questions must be a list of integers, not {questions!r}")
        questions = tuple(questions)
        for q in questions:
            check("each of fitness.judge.mt_bench_questions", q, "int")
        object.__setattr__(self, "mt_bench_questions", questions)
        self._check()

    def endpoint(self):
        """The judge's endpoint for :mod:`discovery.openai_client`."""
        from discovery.openai_client import Endpoint
        return Endpoint(base_url=self.base_url, model=self.model, api_key_env=self.api_key_env,
                        request_timeout=self.request_timeout, max_retries=self.max_retries)


DEFAULT_METRIC = "reward_gain"          # fitness.metric when none is set (benchmarks/fitness_resolution.py)
MATCHED_KL_METRIC = "reward_at_kl"      # ... and when fitness.kl_budget is set (inner_loop.matched_kl)


@dataclasses.dataclass(frozen=True)
class FitnessConfig(_Section):
    """How a trained candidate is scored: ``function`` of the per-seed results."""

    PREFIX: ClassVar[str] = "fitness."
    SECTIONS: ClassVar[dict] = {"judge": JudgeConfig}
    RANGES: ClassVar[dict] = {"kl_budget": "> 0"}
    OPTIONAL: ClassVar[frozenset] = frozenset({"kl_budget"})

    function: str = "mean_metric"       # "mean_metric", or a judge of evaluation.fitness.JUDGES
    metric: str | None = None           # the per-seed metric mean_metric averages; None: DEFAULT_METRIC,
                                        # or MATCHED_KL_METRIC when kl_budget is set
    judge: JudgeConfig = dataclasses.field(default_factory=JudgeConfig)
    calibration: str | None = None      # a `disco calibrate --out` JSON: the noise floor the campaign
                                        # stores and shows (None: estimated from its own baselines)
    kl_budget: float | None = None      # fitness at matched KL: train each seed once per beta of kl_betas
                                        # (inner_loop.matched_kl) and score the gold reward at this KL
    kl_betas: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5)  # the beta sweep of matched-KL fitness

    def __post_init__(self):
        if self.metric is None:
            object.__setattr__(self, "metric", MATCHED_KL_METRIC if self.kl_budget is not None
                               else DEFAULT_METRIC)
        if not isinstance(self.metric, str) or not self.metric:
            raise UserError(f"fitness.metric must be a metric name, not {self.metric!r}")
        if self.calibration is not None and (not isinstance(self.calibration, str) or not self.calibration):
            raise UserError(f"fitness.calibration must be the path of a `disco calibrate --out` JSON "
                            f"file, not {self.calibration!r}")
        betas = self.kl_betas
        if isinstance(betas, (str, bytes)) or not hasattr(betas, "__iter__"):
            raise UserError(f"fitness.kl_betas must be a list of numbers > 0, not {betas!r}")
        betas = tuple(betas)
        for b in betas:
            check("each of fitness.kl_betas", b, "> 0")
        if len(set(betas)) < 2:
            raise UserError(f"fitness.kl_betas must hold at least two distinct betas (the reward at the "
                            f"budget is interpolated between them), not {list(betas)}")
        object.__setattr__(self, "kl_betas", betas)
        self._check()

    def describe(self) -> str:
        """Which fitness this is, in words: function, metric, and the matched-KL budget if any."""
        if self.function != "mean_metric":
            return f"{self.function} (LLM judge; fitness.metric unused)"
        words = f"mean_metric of {self.metric} over seeds"
        if self.kl_budget is not None:
            words += (f", at matched KL {self.kl_budget:g} (gold reward interpolated over betas "
                      f"{', '.join(f'{b:g}' for b in self.kl_betas)})")
        return words


@dataclasses.dataclass(frozen=True)
class ExecutionConfig(_Section):
    """How the campaign runs its steps, and where its training jobs run (:mod:`discovery.executors`)."""

    PREFIX: ClassVar[str] = "execution."
    RANGES: ClassVar[dict] = {"workers": "int >= 1", "validate_timeout": "> 0", "max_seed_attempts": "int >= 1",
                              "num_cpus": "> 0", "num_gpus": ">= 0"}
    OPTIONAL: ClassVar[frozenset] = frozenset({"num_cpus", "num_gpus"})
    CHOICES: ClassVar[dict] = {"dedupe": ("function", "training"), "executor": ("local", "ray")}

    workers: int = 1                    # candidates trained at once (>1: one process each); with the ray
                                        # executor at least as many as the cluster has room for
    validate_timeout: float = 20.0      # seconds for the sandbox validation of one candidate
    inspect: bool = True                # write plots + symbolic summary into each candidate folder
    dedupe: str = "training"            # skip a candidate that has the same "function" as an earlier
                                        # one, or the same "training" (gradients up to a factor > 0)
    executor: str = "local"             # where training runs: "local" (worker processes here) or "ray"
                                        # (each candidate-seed a Ray task; pip install 'disco-pop[ray]')
    ray_address: str | None = None      # the Ray cluster to join ("auto", "HOST:PORT", "ray://..."); None:
                                        # start a Ray instance on this machine
    storage: str | None = None          # ray: where each seed's whole output folder is copied (a folder
                                        # every node and this machine see, or an fsspec URL); None: only
                                        # files up to 8 MiB come back into the campaign folder
    max_seed_attempts: int = 3          # ray: starts of one seed when its worker process or node dies
    num_cpus: float | None = None       # ray: CPUs per seed task; None: the task's (1)
    num_gpus: float | None = None       # ray: GPUs per seed task; None: the task's (recipe:*: 1, else 0)

    def __post_init__(self):
        for name in ("ray_address", "storage"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise UserError(f"{self.PREFIX}{name} must be a non-empty string or null, not {value!r}")
        self._check()

    def seed_resources(self, task: str, gpus_per_candidate: int = 1) -> dict:
        """What one seed's Ray task asks for: ``num_cpus`` and ``num_gpus``, as set, else the task's
        (the embedded tasks 1 CPU and no GPU; ``recipe:*`` tasks 1 CPU and ``gpus_per_candidate`` GPUs)."""
        gpus = float(gpus_per_candidate) if str(task).startswith("recipe:") else 0.0
        return {"num_cpus": float(1.0 if self.num_cpus is None else self.num_cpus),
                "num_gpus": float(gpus if self.num_gpus is None else self.num_gpus)}


@dataclasses.dataclass(frozen=True)
class BudgetConfig(_Section):
    """Caps on what a campaign spends; at a cap it stops cleanly (``disco resume`` with a higher cap
    continues). None: no cap."""

    PREFIX: ClassVar[str] = "budget."
    RANGES: ClassVar[dict] = {"max_tokens": "int >= 1", "max_cost": "> 0", "max_wall_seconds": "> 0",
                              "max_train_seconds": "> 0"}
    OPTIONAL: ClassVar[frozenset] = frozenset({"max_tokens", "max_cost", "max_wall_seconds", "max_train_seconds"})

    max_tokens: int | None = None       # LLM tokens (prompt + completion) over the whole campaign
    max_cost: float | None = None       # money over the whole campaign, priced by `prices`
    prices: dict = dataclasses.field(default_factory=dict)  # model -> [price per 1M prompt tokens,
                                        # per 1M completion tokens]; a model missing here costs nothing
    max_wall_seconds: float | None = None   # wall time of the campaign (summed over its runs/resumes)
    max_train_seconds: float | None = None  # training seconds summed over every seed of every row

    def __post_init__(self):
        self._check()


# Keys of the flat config of earlier versions -> their nested places (some went to two)
FLAT = {
    "proposer": ("proposer.name",), "seed": ("proposer.seed",), "base_url": ("proposer.base_url",),
    "model": ("proposer.model",), "api_key_env": ("proposer.api_key_env",),
    "temperature": ("proposer.temperature",), "max_tokens": ("proposer.max_tokens",),
    "retry_base_delay": ("proposer.retry_base_delay",), "retry_max_delay": ("proposer.retry_max_delay",),
    "request_timeout": ("proposer.request_timeout", "fitness.judge.request_timeout"),
    "max_retries": ("proposer.max_retries", "fitness.judge.max_retries"),
    **{k: (f"prompt.{k}",) for k in ("n_best", "n_recent", "n_failures", "max_code_chars",
                                     "max_error_chars")},
    **{k: (f"training.{k}",) for k in ("task", "seeds", "beta", "overrides", "max_attempts", "isolation")},
    "train_timeout": ("training.timeout",),
    "fitness": ("fitness.function",), "metric": ("fitness.metric",),
    "judge_base_url": ("fitness.judge.base_url",), "judge_model": ("fitness.judge.model",),
    "judge_api_key_env": ("fitness.judge.api_key_env",),
    **{k: (f"fitness.judge.{k}",) for k in ("fastchat_data", "mt_bench_questions", "alpaca_reference",
                                            "alpaca_instructions", "alpaca_judge_prompt", "max_new_tokens")},
    **{k: (f"execution.{k}",) for k in ("workers", "validate_timeout", "inspect", "dedupe")},
}
# Seams that used to be dotted strings in the config: their default values are dropped quietly
DROPPED = {"trainer": "inner_loop.runner:run_candidate", "validator": "objectives.validate:validate",
           "fingerprinter": "objectives.fingerprint", "inspector": "objectives.inspection:inspect_objective"}


@dataclasses.dataclass(frozen=True)
class CampaignConfig(_Section):
    """The defaults run an offline campaign on the embedded synthetic task."""

    RANGES: ClassVar[dict] = {"candidates": "int >= 0"}
    SECTIONS: ClassVar[dict] = {"proposer": ProposerConfig, "prompt": PromptLimits,
                                "training": TrainingConfig, "fitness": FitnessConfig,
                                "execution": ExecutionConfig, "budget": BudgetConfig}

    candidates: int = 6                 # stop when this many proposals have reached a final state
    baselines: tuple[str, ...] = ("dpo", "ipo", "lrml")  # evaluated first, on the same task/seeds
    proposer: ProposerConfig = dataclasses.field(default_factory=ProposerConfig)
    prompt: PromptLimits = dataclasses.field(default_factory=PromptLimits)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    fitness: FitnessConfig = dataclasses.field(default_factory=FitnessConfig)
    execution: ExecutionConfig = dataclasses.field(default_factory=ExecutionConfig)
    budget: BudgetConfig = dataclasses.field(default_factory=BudgetConfig)

    def __post_init__(self):
        if isinstance(self.baselines, (str, bytes)) or not hasattr(self.baselines, "__iter__"):
            raise UserError("baselines must be a list of objective names")
        object.__setattr__(self, "baselines", tuple(self.baselines))
        self._check()

    @classmethod
    def from_dict(cls, d: dict, *, warn: bool = True) -> "CampaignConfig":
        """From nested settings (as :meth:`to_dict` writes them) or the flat keys of earlier versions
        (:data:`FLAT`; with ``warn``, one line on stderr names their new keys). A nested key wins
        over a flat one for the same setting."""
        return cls(**nested_settings(d, warn=warn))

    def with_changes(self, changes: dict, *, warn: bool = True) -> "CampaignConfig":
        """This config with ``changes`` (dotted ``section.key``, nested or flat keys) applied."""
        return CampaignConfig.from_dict(merge(self.to_dict(), nested_settings(changes, warn=warn)))

    def resolved(self) -> "CampaignConfig":
        """Fill in what defaults to "the task's": beta (from the task's data, nothing is built)."""
        if self.training.beta is not None:
            return self
        beta = task_beta(self.training.task, self.training.overrides)
        return dataclasses.replace(self, training=dataclasses.replace(self.training, beta=beta))


def task_beta(task: str, overrides: dict | None = None) -> float:
    """The task's default beta, read from its defaults (no model is built, no SFT trained)."""
    from inner_loop.tasks import task_defaults
    return float(task_defaults(task, dict(overrides or {})).beta)


def merge(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` applied, mappings merged key by key (a section's overrides too)."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def nested_settings(d: dict, *, warn: bool = True) -> dict:
    """``d`` (nested, dotted ``section.key`` or flat keys) as nested settings for
    :class:`CampaignConfig`; unknown keys get a "did you mean"."""
    from inner_loop.overrides import nest
    if not isinstance(d, dict):
        raise UserError(f"expected a mapping of campaign settings, not {d!r}")
    top = CampaignConfig.names()
    flat, nested, moved, unknown = {}, {}, [], []
    for key, value in d.items():
        head = str(key).split(".", 1)[0]
        if "." in str(key) and head in CampaignConfig.SECTIONS:
            nested = merge(nested, nest({key: value}))
        elif key in CampaignConfig.SECTIONS and isinstance(value, dict):
            nested = merge(nested, {key: value})
        elif key in top and key not in CampaignConfig.SECTIONS:
            nested[key] = value
        elif key in FLAT:
            for new in FLAT[key]:
                flat = merge(flat, nest({new: value}))
            moved.append(f"{key} -> {' and '.join(FLAT[key])}")
        elif key in DROPPED:
            if value not in (None, DROPPED[key]):
                raise UserError(f"{key} is no longer a campaign setting: the functions a campaign calls "
                                f"are objects (discovery.seams.Seams), not {value!r}")
            moved.append(f"{key} (dropped: seams are objects now)")
        else:
            unknown.append(str(key))
    if unknown:
        raise UserError(unknown_message(unknown, top + list(FLAT) + all_keys(CampaignConfig)))
    for name, section in CampaignConfig.SECTIONS.items():  # unknown nested keys, with their path
        if isinstance(nested.get(name), dict):
            _check_keys(section, nested[name])
    if moved and warn:
        log.warning("deprecated flat campaign settings, write them nested: %s", "; ".join(moved))
    return merge(flat, nested)


def _check_keys(section, d: dict) -> None:
    unknown = [k for k in d if k not in section.names()]
    if unknown:
        raise UserError(unknown_message([section.PREFIX + k for k in unknown], all_keys(CampaignConfig)))
    for name, sub in section.SECTIONS.items():
        if isinstance(d.get(name), dict):
            _check_keys(sub, d[name])


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
