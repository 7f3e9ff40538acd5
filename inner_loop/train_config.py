"""What one training run takes and gives: :class:`TrainConfig` in, :class:`TrainResult` out.

Plain data beside the trainer (:mod:`inner_loop.trainer`, which imports TRL): the runner, the
tasks, the recipes and the commands read these without importing a training library.
:func:`split_overrides` says where each of a run's overrides goes.
"""

from __future__ import annotations

import dataclasses

DIRECT_MAX_VOCAB = 65_536  # "auto" log-probs: full logits up to this vocabulary, TRL's fused head above
LOGPROB_PATHS = ("auto", "direct", "fused")
RUNNER_OPTIONS = ("memory_mb", "eval_kwargs", "score_timeout")  # overrides that configure the runner itself


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (what DPOConfig needs, and nothing campaign-specific)."""

    beta: float = 0.1                   # KL strength handed to the objective
    learning_rate: float = 1e-5
    max_steps: int = -1                 # optimizer steps; -1: run num_epochs
    num_epochs: float = 1.0
    batch_size: int = 8                 # pairs per device per micro-batch
    grad_accum: int = 1
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int | None = None       # prompt + completion tokens (TRL truncates keep_start)
    precision: str = "auto"             # auto | fp32 | bf16
    gradient_checkpointing: bool | None = None  # None: per device and model size
    seed: int = 0
    logging_steps: int = 10
    threads: int | None = None          # torch intra-op threads for the run (None: leave as is)
    logprobs: str = "auto"              # auto | direct (own forward) | fused (TRL's chunked LM head)
    device: str = "auto"                # cpu | cuda | auto (the task's choice: run_candidate resolves it;
                                        # train_objective alone: where the model already is)

    def resolved(self, model) -> "TrainConfig":
        if self.logprobs not in LOGPROB_PATHS:
            raise ValueError(f"logprobs must be one of {', '.join(LOGPROB_PATHS)}, not {self.logprobs!r}")
        device = self.device if self.device != "auto" else model_device(model)
        device = resolve_device(device, "cpu")
        precision, checkpointing = device_defaults(model, device, batch_pairs=self.batch_size,
                                                   seq_len=self.max_length)
        vocab = getattr(getattr(model, "config", None), "vocab_size", None) or DIRECT_MAX_VOCAB + 1
        return dataclasses.replace(
            self, device=device, precision=precision if self.precision == "auto" else self.precision,
            gradient_checkpointing=(checkpointing if self.gradient_checkpointing is None
                                    else self.gradient_checkpointing),
            logprobs=(self.logprobs if self.logprobs != "auto"
                      else "direct" if vocab <= DIRECT_MAX_VOCAB else "fused"))


# -- the margins a run's loss saw (recorded by inner_loop.trainer, carried by TrainResult.margins) --
MARGIN_QUANTITY = "rho = (pc - rc) - (pr - rr), summed log-probs, beta not applied"
STEP_LEVELS = (0.0, 0.05, 0.5, 0.95, 1.0)  # min, p05, p50, p95, max of one optimizer step's pairs
POOLED_LEVELS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
MAX_MARGIN_STEPS = 1_000_000  # as many per-step rows as the runner keeps losses


def margins_record(per_step: list, pooled: list | None, n: int) -> dict:
    """The JSON record of a run's margins (``TrainResult.margins``): ``per_step``, one row of
    quantiles at ``step_levels`` (min, p05, p50, p95, max) per optimizer step, ``step`` naming those
    steps (1-based); ``pooled``, quantiles at ``pooled_levels`` of all ``n`` margins the run saw
    (None when it saw none)."""
    return {"quantity": MARGIN_QUANTITY, "step_levels": list(STEP_LEVELS),
            "step": list(range(1, len(per_step) + 1)), "per_step": per_step,
            "pooled_levels": list(POOLED_LEVELS), "pooled": pooled, "n": int(n)}


def clean_margins(raw) -> dict | None:
    """``raw`` (an isolated job's claim, parsed from its JSON) rebuilt from its numbers alone: a
    :func:`margins_record` whose rows have the right lengths and hold floats, or None when anything
    is malformed. What the job says here is displayed and compared, never scored (see
    :mod:`discovery.pilot`)."""
    def floats(row, n):
        if not isinstance(row, list) or len(row) != n:
            raise ValueError
        return [float(x) for x in row if isinstance(x, (int, float)) and not isinstance(x, bool)]

    if not isinstance(raw, dict):
        return None
    try:
        steps = raw.get("per_step")
        if not isinstance(steps, list) or len(steps) > MAX_MARGIN_STEPS:
            return None
        per_step = [floats(row, len(STEP_LEVELS)) for row in steps]
        pooled = raw.get("pooled")
        pooled = None if pooled is None else floats(pooled, len(POOLED_LEVELS))
        n = raw.get("n", 0)
        if any(len(r) != len(STEP_LEVELS) for r in per_step) or (pooled is not None and len(pooled) !=
                                                                   len(POOLED_LEVELS)):
            return None  # a non-number was dropped by floats()
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            return None
    except (ValueError, TypeError, OverflowError):
        return None
    return margins_record(per_step, pooled, n)


# the fields a run's overrides may set for training (beta and seed are run_candidate's own arguments)
TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig)) - {"beta", "seed"}


DEVICES = ("auto", "cpu", "cuda")


def model_device(model) -> str:
    """"cuda" when ``model``'s parameters are on a GPU, else "cpu"."""
    try:
        return "cuda" if next(model.parameters()).device.type == "cuda" else "cpu"
    except (StopIteration, AttributeError):
        return "cpu"


def resolve_device(requested: str | None, preferred: str = "cpu") -> str:
    """The device a run trains and scores on: ``requested`` (``cpu``, ``cuda`` or ``auto``/None:
    the task's ``preferred``), ``cuda`` only when one is visible. Asking for ``cuda`` without one
    raises; a task that prefers ``cuda`` falls back to the CPU."""
    import torch
    requested = requested or "auto"
    if requested not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but no CUDA device is visible (use device=cpu or auto)")
    want = preferred if requested == "auto" else requested
    return "cuda" if want == "cuda" and torch.cuda.is_available() else "cpu"


# bytes per parameter while training with AdamW: weights and gradients in the training dtype, two
# fp32 moments, and an fp32 master copy in bf16 mixed precision
def _state_bytes(n_params: int, precision: str) -> int:
    return n_params * ((2 + 2 + 8 + 4) if precision == "bf16" else (4 + 4 + 8))


def training_memory(model, *, precision: str, batch_pairs: int, seq_len: int, checkpointing: bool) -> int:
    """An estimate, in bytes, of what one DPO training step of ``model`` needs: weights, gradients
    and AdamW state (:func:`_state_bytes`), and the activations of ``2 * batch_pairs`` sequences of
    ``seq_len`` tokens (chosen and rejected) kept for the backward pass: per token and layer about
    34 * hidden bytes in 16-bit (Korthikanti et al. 2022, attention scores not kept: SDPA/flash),
    twice that in fp32, one layer's worth plus the layer inputs with checkpointing, and the fp32
    log-softmax of the LM head over one chunk of tokens. The reference log-probs are precomputed,
    so no second model is resident."""
    cfg = getattr(model, "config", None)
    hidden = int(getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", 0) or 0)
    layers = int(getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", 0) or 1)
    vocab = int(getattr(cfg, "vocab_size", 0) or 0)
    n = sum(p.numel() for p in model.parameters())
    tokens = 2 * batch_pairs * seq_len
    per_token_layer = 34 * hidden * (1 if precision == "bf16" else 2)
    acts = tokens * per_token_layer * (1 if checkpointing else layers)
    if checkpointing:
        acts += tokens * hidden * 2 * layers  # each layer's input, kept for the recompute
    head = min(tokens, 4096) * vocab * 4 * 2  # a chunk of fp32 logits and their gradient
    return _state_bytes(n, precision) + acts + head


MEMORY_HEADROOM = 0.85  # plan for this share of the free memory (fragmentation, the CUDA context, spikes)


def largest_batch(model, *, precision: str, seq_len: int, free_bytes: int,
                  batches=(1, 2, 4, 8, 16, 32, 64)) -> tuple[int, bool] | None:
    """(the largest of ``batches`` whose step fits in :data:`MEMORY_HEADROOM` of ``free_bytes``
    without gradient checkpointing, False), else the largest that fits with it (True); None when
    not even the smallest fits."""
    room = MEMORY_HEADROOM * free_bytes
    for checkpointing in (False, True):
        fits = [b for b in batches if training_memory(model, precision=precision, batch_pairs=b, seq_len=seq_len,
                                                      checkpointing=checkpointing) <= room]
        if fits:
            return max(fits), checkpointing
    return None


def device_defaults(model, device: str | None = None, *, batch_pairs: int = 8, seq_len: int | None = None,
                    free_bytes: int | None = None) -> tuple[str, bool]:
    """(precision, gradient checkpointing) for a run on ``device`` (None: CUDA when visible). On the
    CPU: fp32, no checkpointing. On a GPU: bf16 when supported, and gradient checkpointing only when
    the run would not fit in :data:`MEMORY_HEADROOM` of the device's free memory without it
    (:func:`training_memory`, at ``batch_pairs`` pairs of ``seq_len`` tokens, default 1024)."""
    import torch
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cuda":
        return "fp32", False
    precision = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info()[0]
    need = training_memory(model, precision=precision, batch_pairs=batch_pairs, seq_len=seq_len or 1024,
                           checkpointing=False)
    return precision, need > MEMORY_HEADROOM * free_bytes


def split_overrides(overrides: dict) -> tuple[dict, dict, dict]:
    """(training overrides, task overrides, runner options): TrainConfig fields train, runner
    options configure the runner, everything else goes to the task's builder."""
    train = {k: v for k, v in overrides.items() if k in TRAIN_FIELDS}
    runner = {k: v for k, v in overrides.items() if k in RUNNER_OPTIONS}
    task = {k: v for k, v in overrides.items() if k not in TRAIN_FIELDS and k not in RUNNER_OPTIONS}
    return train, task, runner


@dataclasses.dataclass
class TrainResult:
    """One candidate's outcome. ``status`` is "done" or "failed"; a failure has a ``reason``."""

    status: str
    reason: str | None = None
    metrics: dict | None = None          # the task's score (reward, kl, win_rate, ... ; or model_dir)
    losses: list[float] = dataclasses.field(default_factory=list)  # per optimizer step (job's log)
    steps: int = 0                       # optimizer steps completed
    seconds: dict = dataclasses.field(default_factory=dict)  # train, eval, total
    config: dict = dataclasses.field(default_factory=dict)   # resolved: reproduces the run
    step: int | None = None              # the step a failure happened at, when known
    # the margins the loss saw during training (inner_loop.trainer.margin_summary: per-step min, p05,
    # p50, p95, max of rho, and pooled quantiles); like ``losses``, the job's claim in isolated modes
    margins: dict | None = None

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
