"""Train a policy with TRL 1.16's DPOTrainer and any :class:`~objectives.base.Objective`.

TRL has no per-pair loss hook: ``DPOTrainer._compute_loss`` picks the loss with an inline
if/elif on ``loss_type``. Two ways in were weighed:

* re-implement ``_compute_loss`` (about 250 lines in TRL 1.16, most of them metrics and the
  ld_alpha / f-divergence / PEFT / MoE branches): every TRL release would need a re-port, and the
  copy would drift from the metrics TRL logs;
* **keep TRL's whole ``_compute_loss``** with ``loss_type=["sigmoid"]`` and ``loss_weights=[0.0]``,
  read the policy's per-token log-probs from the fused LM head's output with a forward hook on the
  model, and add ``objective(...).mean()`` to the (zero-weighted) TRL loss.

We take the second. TRL still tokenises nothing we hand it, still logs every metric it logs for
DPO (rewards, margins, accuracies, log-probs, entropy), and the override is three small methods:

* ``compute_loss``: hook, ``super().compute_loss``, add the objective, refuse a non-finite loss
  (raises :class:`NonFiniteLoss` before backward, so a NaN never reaches the weights);
* ``_prepare_dataset``: a dataset that is already tokenised (``prompt_ids``/``chosen_ids``/
  ``rejected_ids``) is passed through, so a campaign tokenises once and not per candidate;
* ``_precompute_ref_logps``: a dataset that already carries ``ref_chosen_logps`` /
  ``ref_rejected_logps`` is passed through, so no reference model is loaded or run at all.
  Without those columns TRL computes them once with the initial policy (the recipes' path).

Where the policy's log-probs come from (``TrainConfig.logprobs``):

* ``"fused"``: the path above. TRL's chunked LM head never materialises the [tokens, vocab]
  logits, which matters for a 256k-vocabulary Gemma at 1024 tokens (8 GB of float32 logits for a
  batch of 4 pairs), and TRL logs all its metrics;
* ``"direct"``: ``compute_loss`` runs the forward itself (logits, log-softmax, gather), skips
  TRL's ``_compute_loss`` and logs the reward metrics (rewards/chosen, rejected, margins,
  accuracies; logps) itself. On the synthetic task's small model it cuts a candidate's training
  by about a sixth (1.41 s to 1.18 s for 16 steps of 64 pairs: TRL's chunked head and its
  per-token entropy and logit statistics cost more than a plain log-softmax at this size), and
  it relies on less of TRL: only the collator's batch keys;
* ``"auto"`` (default): direct for vocabularies up to ``DIRECT_MAX_VOCAB``, fused above.

Both paths agree with TRL's built-in losses (tests/inner_loop/test_parity.py runs each).

On both, the objective (the candidate's code) never gets a tensor of the policy's autograd graph:
from one, plain attribute access (``.grad_fn.next_functions[..][0].variable``) reaches the model's
parameters, and a loss that edited them through ``.data`` forged its fitness. It is called on
detached leaf copies of the four log-prob tensors; ``torch.autograd.grad`` takes its gradients with
respect to the two policy copies, and the loss handed to the Trainer is the surrogate
``sum(pc * g_pc) + sum(pr * g_pr)``, shifted to the objective's value, whose backward gives the real
log-probs exactly those gradients (times the Trainer's 1/grad_accum), so parity is unchanged. The
objective's exceptions and wrong shapes, and any in-place change it makes to a parameter, gradient,
buffer or optimizer state (their version counters and storage pointers are compared around the
call; a write through ``.data`` moves neither, so this is the second line, not the first) raise
:class:`ObjectiveFault`: the candidate fails with the reason; so does a non-finite gradient of the
objective (a finite loss can have one), which then never reaches the weights.

The zero-weighted sigmoid term adds one logsigmoid per pair; 0 * finite is exactly 0, so parity
with TRL's built-in losses is exact up to float summation order (tests/inner_loop/test_parity.py).
What we rely on in TRL is pinned by tests/inner_loop/test_trainer.py::test_trl_internals_we_rely_on:
the version range, the method names and signatures, ``loss_weights`` semantics, the
``FusedCausalLMOutput.log_probs`` field and the batch keys ``completion_mask`` /
``ref_chosen_logps`` / ``ref_rejected_logps``.

The margins the loss sees are recorded as it trains (:class:`_StepLosses`, :func:`margin_summary`):
per optimizer step the min, p05, p50, p95 and max of rho = (pc - rc) - (pr - rr) over the step's
pairs (summed log-probs, beta not applied), and quantiles over the whole run. They are detached
copies of tensors the loss computes anyway (no extra forward pass), reduced once per step after the
optimizer has stepped, so they change nothing in training (tests/inner_loop/test_margins.py).

Multi-process runs (several ranks under ``torchrun`` or ``accelerate launch``:
:mod:`inner_loop.distributed`) train exactly as one process would with the same global batch: each
optimizer step's loss and margins are those of the global batch (:class:`_StepLosses` gathers every
rank's share), TRL's reference log-probs are cached where every rank reads them
(:meth:`ObjectiveDPOTrainer._precompute_ref_logps`), and after a run whose weights were sharded
(DeepSpeed ZeRO-3, FSDP) the whole trained state dict is gathered onto rank 0's model
(:data:`FULL_STATE_ATTR`, which :meth:`inner_loop.recipe_base.RecipeTask.score` saves from).

Precision and checkpointing are chosen per device (:func:`device_defaults`; a model loaded in 16 bits,
as a bf16 recipe loads its own, is cast to float32 in place when the run's precision is fp32): on CPU fp32 without
gradient checkpointing (TRL's defaults, bf16 + checkpointing, cost 590 ms/step against 69 ms/step
on a small model); on GPU bf16, with checkpointing only for models above ~1B parameters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import math
import sys
import tempfile
import time
from typing import Any

import torch
import trl
from datasets import Dataset
from packaging.version import Version
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from trl import DPOConfig, DPOTrainer

from inner_loop.job_output import JOB_LOG, JOB_RESULT, WEIGHTS, untie
from inner_loop.train_config import (  # noqa: F401 - the run's data, re-exported beside the trainer
    DIRECT_MAX_VOCAB, LOGPROB_PATHS, POOLED_LEVELS, STEP_LEVELS, TrainConfig,
    TrainResult, device_defaults, margins_record)
from objectives.base import Objective

REEXPORTED = (DIRECT_MAX_VOCAB, LOGPROB_PATHS, TrainResult, device_defaults)
TRL_RANGE = (Version("1.16.0"), Version("1.17.0"))  # the internals below were read in this range
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")  # TRL's names, which every task writes
# after a multi-process run that sharded the weights, rank 0's model carries the whole trained state dict
# under this attribute (inner_loop.recipe_base.RecipeTask.score saves from it; it names it literally)
FULL_STATE_ATTR = "disco_full_state_dict"

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    """The objective produced a NaN or inf loss; raised before the backward pass."""

    def __init__(self, step: int, value: float):
        self.step, self.value = step, value
        super().__init__(f"non-finite loss ({value}) at step {step}")


class ObjectiveFault(RuntimeError):
    """The objective raised, returned the wrong shape, or changed the model's state (a tensor's
    version counter or storage moved during the call); ``str()`` is the candidate's reason."""

    def __init__(self, step: int, reason: str):
        self.step = step
        super().__init__(f"{reason} at step {step}")


@dataclasses.dataclass
class TrainOutcome:
    """What one training run did; ``status`` is "done" or "failed" (then ``reason`` and ``step``).
    ``margins``: the margins the loss saw during training (:func:`margin_summary`)."""

    status: str
    losses: list[float]
    steps: int
    seconds: float
    reason: str | None = None
    step: int | None = None
    log_history: list[dict] = dataclasses.field(default_factory=list)
    margins: dict | None = None


# -- the margins training visits -------------------------------------------------------------------
# rho = (pc - rc) - (pr - rr) of every training pair, on summed completion log-probs, beta not
# applied: DPO's loss is softplus(-beta * rho), so these are the margins a pointwise loss is
# evaluated at. Length-normalised objectives (ipo_norm) see rho divided per token instead; the
# summed rho is recorded for every objective, so two runs' records always compare the same quantity.
MAX_POOLED = 2**20  # pooled quantiles are over the run's first this many margins (4 MiB of float32)


def margin_summary(per_step: list[list[float]], pooled: torch.Tensor | None) -> dict:
    """:func:`~inner_loop.train_config.margins_record` of per-step quantile rows and the run's
    margins (up to :data:`MAX_POOLED` of them), whose quantiles at ``POOLED_LEVELS`` it takes."""
    if pooled is None or not pooled.numel():
        return margins_record(per_step, None, 0)
    levels = torch.tensor(POOLED_LEVELS, dtype=torch.float64)
    return margins_record(per_step, torch.quantile(pooled.double(), levels).tolist(), pooled.numel())


class _StepLosses(TrainerCallback):
    """Collects the mean micro-batch loss of every optimizer step, and the quantiles of the margins
    its micro-batches saw (detached copies, after the step: nothing here touches training)."""

    def __init__(self, trainer: "ObjectiveDPOTrainer"):
        self.trainer = trainer
        self.losses: list[float] = []
        self.margins: list[list[float]] = []
        self._pooled: list[torch.Tensor] = []
        self._pooled_n = 0

    def on_step_end(self, args, state, control, **kwargs):
        micro, rho = self.trainer._micro_losses, self.trainer._micro_margins
        loss = float(torch.stack(micro).mean()) if micro else None
        flat = torch.cat(rho).double().cpu() if rho else None
        micro.clear()
        rho.clear()
        if _world_size() > 1:  # each rank saw its share of the step's pairs: the step is all of them
            loss, flat = _whole_step(loss, flat)
        if loss is not None:
            self.losses.append(loss)
        if flat is not None:
            levels = torch.tensor(STEP_LEVELS, dtype=torch.float64)
            self.margins.append(torch.quantile(flat, levels).tolist())
            if self._pooled_n < MAX_POOLED:
                keep = flat[:MAX_POOLED - self._pooled_n].float()
                self._pooled.append(keep)
                self._pooled_n += keep.numel()

    def summary(self) -> dict:
        return margin_summary(self.margins, torch.cat(self._pooled) if self._pooled else None)


def _world_size() -> int:
    """The number of processes training together (1 unless torch.distributed is initialised)."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _whole_step(loss: float | None, rho: torch.Tensor | None) -> tuple[float | None, torch.Tensor | None]:
    """(the step's loss, its margins) over every rank's share of a multi-process step (a collective:
    every rank calls it once per step). Equal shares (accelerate's even batches) make the mean of
    the ranks' mean losses the mean over the global batch, as one process computes it."""
    shares = [None] * _world_size()
    torch.distributed.all_gather_object(shares, (loss, None if rho is None else rho.tolist()))
    losses = [x for x, _ in shares if x is not None]
    margins = [m for _, r in shares if r for m in r]
    return (sum(losses) / len(losses) if losses else None,
            torch.tensor(margins, dtype=torch.float64) if margins else None)


class TimeLimitExceeded(RuntimeError):
    """The run used up its time budget (checked between optimizer steps)."""


class _TimeLimit(TrainerCallback):
    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if time.perf_counter() - self.start > self.seconds:
            raise TimeLimitExceeded(f"timeout: {self.seconds:g} s used up after step {state.global_step}")


class ObjectiveDPOTrainer(DPOTrainer):
    """DPOTrainer whose loss is ``objective(pc, pr, rc, rr, beta).mean()`` (see the module docstring)."""

    record_margins = True  # keep the margins each training step saw (a test turns it off to compare)

    def __init__(self, *args, objective: Objective, logprobs: str = "fused", **kwargs):
        cfg = kwargs.get("args")
        if cfg is None:
            raise ValueError("pass args=DPOConfig(...) built by dpo_config()")
        if list(cfg.loss_type) != ["sigmoid"] or list(cfg.loss_weights or []) != [0.0]:
            raise ValueError("ObjectiveDPOTrainer needs loss_type=['sigmoid'] and loss_weights=[0.0]")
        if cfg.ld_alpha is not None or cfg.f_divergence_type != "reverse_kl" or cfg.use_weighting:
            raise ValueError("ld_alpha, f-divergences and WPO weighting change the log-probs TRL scores; "
                             "the objective would not see them")
        if logprobs not in ("direct", "fused"):
            raise ValueError(f"logprobs must be 'direct' or 'fused', not {logprobs!r}")
        self.objective, self.logprobs = objective, logprobs
        self._captured: list[Any] = []
        self._micro_losses: list[torch.Tensor] = []
        self._micro_margins: list[torch.Tensor] = []  # rho of each training micro-batch (detached)
        self._tracked: list | None = None
        super().__init__(*args, **kwargs)
        self._hook = self.model.register_forward_hook(self._capture)

    # -- the three overrides -------------------------------------------------------------------
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if all(c in dataset.column_names for c in TOKEN_COLUMNS):
            return dataset  # tokenised once by the task or the recipe, not per candidate
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def _precompute_ref_logps(self, dataset, name, batch_size):
        if all(c in dataset.column_names for c in REF_COLUMNS):
            return dataset  # reference log-probs were computed once, before the campaign
        if self.accelerator.num_processes > 1 and not dataset.cache_files:
            dataset = self._shared_on_disk(dataset, name)
        return super()._precompute_ref_logps(dataset, name, batch_size)

    def _shared_on_disk(self, dataset, name: str):
        """``dataset`` saved once by rank 0 in its output folder and read back by every rank. TRL
        caches the reference log-probs in a file named beside the dataset's own files, which every
        rank then reads; an in-memory dataset has none, so each rank would name its own random
        temporary file and the ranks that did not write one fail. (One node: the ranks share /tmp.)"""
        from pathlib import Path

        from accelerate.utils import broadcast_object_list
        from datasets import load_from_disk
        folder = [str(Path(self.args.output_dir).resolve() / f"pairs-{name}")]
        broadcast_object_list(folder, from_process=0)
        if self.accelerator.is_main_process:
            dataset.save_to_disk(folder[0])
        self.accelerator.wait_for_everyone()
        return load_from_disk(folder[0])

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.logprobs == "direct" and not return_outputs:
            loss = self._direct_loss(model, inputs)
            outputs = None
        else:
            self._captured.clear()
            result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                          num_items_in_batch=num_items_in_batch)
            trl_loss, outputs = result if return_outputs else (result, None)
            if not self._captured:
                raise RuntimeError("the policy forward did not return log_probs: TRL's fused LM head changed")
            loss = trl_loss + self._objective_loss(inputs, self._captured[0])[0]
            self._captured.clear()
        if self.model.training:
            if not torch.isfinite(loss.detach()).all():
                raise NonFiniteLoss(self.state.global_step + 1, float(loss.detach()))
            self._micro_losses.append(loss.detach().float())
        return (loss, outputs) if return_outputs else loss

    # -- helpers -------------------------------------------------------------------------------
    def _capture(self, module, args, output):
        if getattr(output, "log_probs", None) is not None and not self._captured:
            self._captured.append(output.log_probs)

    def _direct_loss(self, model, inputs) -> torch.Tensor:
        """The policy forward without TRL's fused head: full logits, log-softmax, gather."""
        ids = inputs["input_ids"]
        logits = model(input_ids=ids, attention_mask=inputs["attention_mask"], use_cache=False).logits
        per_token = torch.gather(logits[:, :-1].float().log_softmax(-1), 2, ids[:, 1:, None])[..., 0]
        loss, logps = self._objective_loss(inputs, per_token)
        self._log_rewards(logps, torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]]))
        return loss

    def _log_rewards(self, logps: torch.Tensor, ref: torch.Tensor) -> None:
        """TRL's reward metrics (beta * log-ratio), for the direct path that skips TRL's own."""
        mode = "train" if self.model.training else "eval"
        with torch.no_grad():
            rewards = self.beta * (logps.detach() - ref.to(logps))
            chosen, rejected = rewards.chunk(2)
            pc, pr = logps.detach().chunk(2)
            for key, value in (("rewards/chosen", chosen.mean()), ("rewards/rejected", rejected.mean()),
                               ("rewards/accuracies", (chosen > rejected).float().mean()),
                               ("rewards/margins", (chosen - rejected).mean()),
                               ("logps/chosen", pc.mean()), ("logps/rejected", pr.mean())):
                self._metrics[mode][key].append(float(value))

    def _objective_loss(self, inputs, per_token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean objective loss, summed completion log-probs [2B]) from per-token log-probs.

        The objective never sees a tensor of the policy's autograd graph: from one, plain attribute
        access (``.grad_fn.next_functions[..][0].variable``) reaches the model's parameters. It is
        called on detached leaf copies; its gradients with respect to them are taken here and fed
        back through a surrogate, ``sum(pc * dL/dpc) + sum(pr * dL/dpr)``, whose backward gives the
        real log-probs exactly those gradients (a product by the upstream gradient, which the
        Trainer's backward supplies, 1 or 1/grad_accum) and whose value is the objective's loss."""
        mask = inputs["completion_mask"][..., 1:]  # per_token[t] scores token t + 1
        per_token = per_token[:, -mask.size(1):].float()
        logps = (per_token * mask).sum(dim=1)
        summed = logps
        ref = torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]]).to(logps)
        if self.record_margins and self.model.training:  # this step's margins (summed; a detached copy)
            with torch.no_grad():
                ratio = logps.detach() - ref
                self._micro_margins.append(torch.sub(*ratio.chunk(2)))
        if self.objective.length_normalized:  # per-token means, as TRL's ipo
            n = mask.sum(dim=1).clamp(min=1).to(logps)
            logps, ref = logps / n, ref / n
        pc, pr = logps.chunk(2)
        grad = torch.is_grad_enabled() and logps.requires_grad
        leaves = [x.detach().clone().requires_grad_(grad) for x in (pc, pr)]
        leaves += [x.detach().clone() for x in ref.chunk(2)]
        step = self.state.global_step + 1
        before = self._state_versions()
        try:
            losses = self.objective(*leaves, self.beta)
            if not isinstance(losses, torch.Tensor) or losses.shape != pc.shape:
                shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
                raise ObjectiveFault(step, f"the objective returned shape {shape}, expected {tuple(pc.shape)}")
            loss = losses.mean()
            grads = [None, None]
            if grad and loss.requires_grad:
                grads = list(torch.autograd.grad(loss, leaves[:2], allow_unused=True))
        except ObjectiveFault:
            raise
        except Exception as err:  # noqa: BLE001 - the candidate's code failed, not ours
            if is_out_of_memory(err):
                raise
            raise ObjectiveFault(step, f"the objective raised {type(err).__name__}: {str(err)[:300]}") from err
        changed = self._changed(before)
        if changed:
            raise ObjectiveFault(step, f"the objective modified the model's {changed}")
        loss = loss.detach().to(logps.dtype)
        if not grad:
            return loss, summed
        grads = [g.to(x.dtype) if g is not None else torch.zeros_like(x) for x, g in zip((pc, pr), grads)]
        if not bool(torch.isfinite(torch.cat([loss.reshape(1), *grads])).all()):  # one sync a step
            if not torch.isfinite(loss):
                raise NonFiniteLoss(step, float(loss))
            raise ObjectiveFault(step, "the objective's gradient is not finite")
        surrogate = (pc * grads[0]).sum() + (pr * grads[1]).sum()
        return surrogate - surrogate.detach() + loss, summed  # value: exactly the objective's loss

    def _state_versions(self) -> list[tuple[str, torch.Tensor, int, int]]:
        """(what, tensor, version, data pointer) of every parameter, gradient, buffer and optimizer
        state tensor: an in-place write bumps the version, a swapped storage moves the pointer.
        (A write through ``.data`` or a raw storage bumps neither: the guard is a second line; the
        first is that the objective gets no tensor that leads to these.)"""
        if self._tracked is None:
            self._tracked = (list(self.model.named_parameters()), list(self.model.named_buffers()))
        params, buffers = self._tracked
        tensors = [(f"parameters ({n})", p) for n, p in params]
        tensors += [(f"gradients ({n})", p.grad) for n, p in params if p.grad is not None]
        tensors += [(f"buffers ({n})", b) for n, b in buffers]
        states = getattr(self.optimizer, "state", None) or {}
        tensors += [("optimizer state", t) for state in states.values() for t in state.values()
                    if isinstance(t, torch.Tensor)]
        return [(what, t, t._version, t.data_ptr()) for what, t in tensors]

    def _changed(self, before) -> str | None:
        """What of the model's state differs from ``before`` (None: nothing)."""
        now = self._state_versions()
        if len(now) != len(before):
            return "gradients or optimizer state (tensors added or removed)"
        for (what, t, version, ptr), (_, t2, version2, ptr2) in zip(before, now):
            if t is not t2 or version != version2 or ptr != ptr2:
                return what
        return None


# transformers 5 renamed gradient_checkpointing (a deprecated alias that warns) to activation_checkpointing
_CHECKPOINTING = ("activation_checkpointing" if "activation_checkpointing" in
                  {f.name for f in dataclasses.fields(DPOConfig)} else "gradient_checkpointing")


class _BarOnly(ProgressCallback):
    """Transformers' progress bar without its log dicts: they stay in ``state.log_history`` (and the
    result), instead of being printed through the bar into the user's terminal or a run's log."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def _quiet_logs(trainer) -> None:
    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(_BarOnly)


def dpo_config(config: TrainConfig, output_dir: str, *, progress: bool = False, **extra) -> DPOConfig:
    """The DPOConfig for ``config`` (already :meth:`TrainConfig.resolved`)."""
    return DPOConfig(
        output_dir=output_dir, beta=config.beta, learning_rate=config.learning_rate,
        max_steps=config.max_steps, num_train_epochs=config.num_epochs,
        per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        lr_scheduler_type=config.lr_scheduler, warmup_steps=config.warmup_ratio,  # float < 1: a ratio
        weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        max_length=config.max_length, bf16=config.precision == "bf16", fp16=False,
        **{_CHECKPOINTING: bool(config.gradient_checkpointing)}, seed=config.seed, data_seed=config.seed,
        loss_type=["sigmoid"], loss_weights=[0.0], precompute_ref_log_probs=True,
        disable_dropout=True, logging_steps=config.logging_steps, save_strategy="no", report_to="none",
        disable_tqdm=not progress, dataloader_num_workers=0,
        use_cpu=config.device != "cuda" or not torch.cuda.is_available(),
        **extra)


def check_trl_version() -> None:
    v = Version(trl.__version__)
    if not TRL_RANGE[0] <= v < TRL_RANGE[1]:
        raise RuntimeError(f"inner_loop.trainer was written against TRL {TRL_RANGE[0]}..<{TRL_RANGE[1]}, "
                           f"found {v}: re-run tests/inner_loop/test_trainer.py before trusting it")


def is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def train_objective(model, tokenizer, dataset: Dataset, objective: Objective, config: TrainConfig, *,
                    output_dir: str | None = None, progress: bool = False, time_limit: float | None = None,
                    **dpo_kwargs) -> TrainOutcome:
    """Train ``model`` in place on pre-tokenised pairs with ``objective``; never raises for the
    candidate's faults (non-finite loss, out of memory, ``time_limit`` seconds used up, checked
    between steps): those come back as ``status="failed"`` with a reason."""
    check_trl_version()
    config = config.resolved(model)
    if config.precision == "fp32" and any(p.dtype != torch.float32 for p in model.parameters() if p.is_floating_point()):
        model.float()  # fp32 trains fp32 weights (in place), also of a model loaded in 16 bits (a bf16 recipe's)
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(model, tokenizer, dataset, objective, config, output_dir, progress, time_limit, dpo_kwargs)
    finally:
        torch.set_num_threads(threads)


def _train(model, tokenizer, dataset, objective, config, output_dir, progress, time_limit, dpo_kwargs):
    if gc.get_freeze_count() == 0:
        # Trainer.train() calls gc.collect() (accelerate's free_memory); over the heap of torch,
        # transformers and the dataset that costs ~0.3 s a candidate. Frozen once, the long-lived
        # objects are not scanned again (and a forked sandbox child shares them copy-on-write).
        gc.collect()
        gc.freeze()
    with tempfile.TemporaryDirectory(prefix="disco-trainer-") as tmp:
        args = dpo_config(config, output_dir or tmp, progress=progress, **dpo_kwargs)
        trainer = ObjectiveDPOTrainer(model=model, args=args, train_dataset=dataset,
                                      processing_class=tokenizer, objective=objective,
                                      logprobs=config.logprobs)
        _quiet_logs(trainer)
        recorder = _StepLosses(trainer)
        trainer.add_callback(recorder)
        if time_limit:
            trainer.add_callback(_TimeLimit(time_limit))
        start = time.perf_counter()
        status, reason, step = "done", None, None
        try:
            with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its logs: keep stdout for results
                trainer.train()
        except (NonFiniteLoss, ObjectiveFault) as err:
            status, reason, step = "failed", str(err), err.step
        except TimeLimitExceeded as err:
            status, reason, step = "failed", str(err), trainer.state.global_step
        except Exception as err:  # noqa: BLE001 - only memory errors are the candidate's fault
            if not is_out_of_memory(err):
                raise
            status, reason, step = "failed", f"out of memory: {str(err)[:200]}", trainer.state.global_step + 1
        finally:
            trainer._hook.remove()
        if status == "done" and trainer.accelerator.num_processes > 1:
            _gather_sharded_weights(trainer, model)
        seconds = time.perf_counter() - start
        losses = recorder.losses
        if status == "done" and not all(math.isfinite(x) for x in losses):  # belt and braces
            bad = next(i for i, x in enumerate(losses) if not math.isfinite(x))
            status, reason, step = "failed", f"non-finite loss ({losses[bad]}) at step {bad + 1}", bad + 1
        return TrainOutcome(status=status, losses=losses, steps=trainer.state.global_step, seconds=seconds,
                            reason=reason, step=step, log_history=list(trainer.state.log_history),
                            margins=recorder.summary())


def _gather_sharded_weights(trainer, model) -> None:
    """After a multi-process run whose weights are sharded (DeepSpeed ZeRO-3, FSDP), the whole
    trained state dict (gathered as ``Trainer.save_model`` gathers it; a collective: every rank
    calls this) on rank 0's ``model`` as :data:`FULL_STATE_ATTR`. Replicated runs (DDP, ZeRO-1/2)
    hold the whole weights in every rank's model already: nothing to do."""
    if trainer.is_deepspeed_enabled:
        if trainer.accelerator.state.deepspeed_plugin.zero_stage != 3:
            return
        state = trainer.accelerator.get_state_dict(trainer.deepspeed)
    elif trainer.is_fsdp_enabled:
        state = trainer.accelerator.get_state_dict(trainer.model)
    else:
        return
    if trainer.accelerator.is_main_process:
        setattr(model, FULL_STATE_ATTR, state)


# -- the isolated job ---------------------------------------------------------------------------
# the job's files: WEIGHTS, JOB_RESULT (its result line) and JOB_LOG (its stdout and stderr: untrusted
# text, of which the runner copies a capped tail), named in inner_loop.job_output, the parent's reader


def train_job(spec: dict) -> dict:
    """Train one candidate from files and write the policy weights (safetensors) and the loss log
    to ``spec["out"]``; JSON in, JSON out. It runs the candidate's code: the runner calls it only
    inside isolation (``objectives.sandbox.call("inner_loop.trainer:train_job", spec)`` or a child
    process). It lives here, with the heavy imports at module level, so that the sandbox's warm
    zygote imports TRL once and every forked job starts with it loaded.

    ``spec``: objective (:meth:`objectives.candidate.Candidate.to_dict`: the source or registry
    name, with the kind validation measured, so the code is not probed again here), inputs (a
    folder with ``sft/``, ``tokenizer/`` and ``pairs/`` written by the trusted parent), out, train
    (TrainConfig fields), progress.
    """
    from pathlib import Path

    from datasets import load_from_disk
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from objectives.base import ObjectiveError
    from objectives.candidate import Candidate

    inputs, out = Path(spec["inputs"]), Path(spec["out"])
    try:
        objective = Candidate.from_dict(spec["objective"]).load()
    except (ObjectiveError, TypeError, KeyError) as err:
        result = {"status": "failed", "reason": f"objective did not load: {err}", "losses": [], "steps": 0}
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(inputs / "tokenizer"))
        # in memory: a dataset without ref log-probs (a recipe) makes TRL map it, and a map over an
        # on-disk dataset writes its cache next to it, in the read-only inputs folder
        pairs = load_from_disk(str(inputs / "pairs"), keep_in_memory=True)
        model = AutoModelForCausalLM.from_pretrained(str(inputs / "sft"), dtype=torch.float32)
        # the job's prints (warnings, TRL's messages) go to a log the runner hands to the run's train.log
        with contextlib.ExitStack() as stack:
            if not spec.get("progress", False):
                log_file = stack.enter_context(open(out / JOB_LOG, "a", errors="replace"))
                stack.enter_context(contextlib.redirect_stdout(log_file))
                stack.enter_context(contextlib.redirect_stderr(log_file))
            outcome = train_objective(model, tokenizer, pairs, objective, TrainConfig(**spec["train"]),
                                      output_dir=str(out / "trainer"), progress=spec.get("progress", False))
        result = {"status": outcome.status, "reason": outcome.reason, "step": outcome.step,
                  "losses": outcome.losses, "steps": outcome.steps, "train_seconds": outcome.seconds,
                  "margins": outcome.margins}
        if outcome.status == "done":
            state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
            save_file(untie(state), str(out / WEIGHTS))
    (out / JOB_RESULT).write_text(json.dumps(result))
    return result
