"""Run one candidate objective: train the task's SFT policy with it, then score the policy.

``run_candidate(objective, task="synthetic", ...) -> TrainResult`` is the inner loop's one entry
point. A failure (non-finite loss, out of memory, killed, timed out, code that does not load) is a
``TrainResult(status="failed", reason=...)``, never an exception in the caller.

Isolation (``isolation=``):

* ``"none"``: train in this process. Only for trusted code (registry names); the timeout is
  cooperative (checked between steps).
* ``"process"``: train in a fresh ``python -m inner_loop.runner`` child started by
  :func:`objectives.launcher.launch` with a scrubbed environment, ``RLIMIT_AS`` (``memory_mb``),
  ``RLIMIT_FSIZE`` and a hard timeout (the process group is SIGKILLed). It contains crashes,
  memory bombs and hangs; it is **not** a security boundary (same uid, network open).
* ``"sandbox"``: train through :func:`objectives.sandbox.call` (fork from a warm zygote, uid 65534,
  no network, rlimits, scrubbed environment; see that module's threat model).
* ``"auto"``: :func:`objectives.candidate.isolation_for` decides: ``"none"`` for a trusted
  candidate (a registry name), ``"sandbox"`` for anything else. The mode used is saved in
  ``TrainResult.config["isolation"]``.

Threat model of the isolated modes. The candidate's code runs, during training, with the rights of
the training job. It can do anything the job can: read the SFT weights and training pairs, burn
its CPU/memory/time budget, write its output folder, and write whatever it likes as its "loss log"
or "weights". So the job is trusted with nothing that decides fitness, and given nothing that
does not train:

* the job's inputs (:func:`job_inputs`, root-owned, read-only to the job: the sandbox gets only
  the job folder as ``writable``) hold the SFT model, the tokenizer and the pairs cut to an
  allow-list of training columns (token ids, reference log-probs): no gold reward or other column;
* the loss never touches the model: the trainer calls it on detached leaf copies of the log-probs
  and feeds its gradients back itself, so no ``grad_fn`` walk leads to a parameter; a loss that
  still changes a parameter, gradient, buffer or optimizer state in place (version counters, as a
  second line) fails the candidate (:mod:`inner_loop.trainer`);
* the job writes only the policy weights (``policy.safetensors``: tensors, no pickle) and its loss
  log to a fresh folder, a tmpfs with a quota of twice the weights + 32 MiB where this process may
  mount one (:func:`objectives.shared_dirs.shared_dir`, unmounted by its ``remove_shared``); the
  trusted parent ignores everything else there;
* the parent trusts no path in that folder (:func:`read_job_file`): it opens the weights with
  O_NOFOLLOW | O_NONBLOCK (no symlink is followed, a FIFO does not block), reads only a regular
  file with one link (no hard link to another file) of at most the SFT model's float32 size plus
  a header allowance, from that one descriptor into memory, and parses the bytes
  (``safetensors.torch.load``); the process mode's ``job.json`` and log are read the same way;
* the parent rebuilds the model from the task's own SFT config and loads those tensors, names and
  shapes matching exactly (no code or config is taken from the job), then computes the metrics
  itself (the task's ``score``: :func:`inner_loop.metrics.evaluate_policy` for the synthetic task).
  Loading and scoring run under a deadline (``score_timeout``, default ``timeout``), checked
  between the steps of loading and before every module's forward of the policy, so weights that
  make scoring slow (subnormal floats) fail the candidate with a timeout; any error while scoring a
  job's weights fails it too;
* non-finite weights fail the candidate, and so does any non-finite metric (finite but absurd
  weights, x 1e30, give a NaN KL), named in the reason;
* the loss log and the margins the loss saw (``TrainResult.margins``, rebuilt from the job's numbers
  by :func:`~inner_loop.train_config.clean_margins`) are reported as the job's claims; they feed no
  score (:mod:`discovery.pilot` compares them only beside the parent's own metrics).

Not protected against: a candidate that trains a policy to game the gold reward (that is the
search working, and the held-out evaluation's job to catch); in ``"process"`` mode, anything a
same-uid process can do (read files, open sockets); kernel or torch exploits in any mode (a
crafted safetensors header is parsed by the safetensors library); a loss that reaches the model
by a way other than its arguments (the sandbox and the screen's business) and writes through
``.data`` or a raw storage, which no version counter records.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from inner_loop.job_output import (JOB_RESULT, WEIGHTS, Deadline, Rejected, keep_job_log, load_policy,
                                   read_job_file, save_policy)
from inner_loop.train_config import TrainConfig, TrainResult, clean_margins, resolve_device, split_overrides
from objectives import launcher, sandbox, shared_dirs
from objectives.base import ObjectiveError
from objectives.candidate import Candidate, isolation_for, resolve

log = logging.getLogger(__name__)

ISOLATIONS = ("auto", "none", "process", "sandbox")  # objectives.candidate.isolation_for decides "auto"
JOB = "inner_loop.trainer:train_job"
MAX_RESULT_BYTES = 64 * 2**20  # job.json (a loss log of up to a million floats)
MAX_OUTPUT_BYTES = 16 * 2**30  # RLIMIT_FSIZE of an isolated job
JOB_SLACK_MB = 32     # the sandboxed job folder's quota on top of twice the weights (job.json, trainer/)
REPO = Path(__file__).resolve().parent.parent


def _failed(reason: str, **kw) -> TrainResult:
    return TrainResult(status="failed", reason=reason, **kw)


# -- inputs for an isolated job ------------------------------------------------------------------

_INPUTS: dict[str, Path] = {}


@atexit.register
def _remove_job_inputs() -> None:
    """The inputs folders are copies made for this process's jobs: nothing else needs them."""
    for path in _INPUTS.values():
        shutil.rmtree(path, ignore_errors=True)


def job_inputs(task_obj) -> Path:
    """A world-readable, root-owned folder with the task's SFT model, tokenizer and pairs, written
    once per task per process: the uid-65534 job reads it, and cannot change it."""
    key = str(getattr(task_obj, "path", id(task_obj)))
    if key in _INPUTS and _INPUTS[key].is_dir():
        return _INPUTS[key]
    path = _shared_dir("disco-inputs-", writable=False)
    shutil.copytree(task_obj.sft_path, path / "sft")
    task_obj.tokenizer.save_pretrained(str(path / "tokenizer"))
    _training_columns(task_obj.train_pairs).save_to_disk(str(path / "pairs"))
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    _INPUTS[key] = path
    return path


def _training_columns(pairs):
    """Only the columns the job's trainer reads (an allow-list): token ids, reference log-probs,
    and the text only where there are no token ids. Gold rewards and the like stay with the parent."""
    from inner_loop.trainer import REF_COLUMNS, TOKEN_COLUMNS
    tokens = [c for c in TOKEN_COLUMNS if c in pairs.column_names]
    keep = tokens + [c for c in REF_COLUMNS if c in pairs.column_names]
    if not tokens:
        keep += [c for c in ("prompt", "chosen", "rejected") if c in pairs.column_names]
    return pairs.select_columns(keep)


def weights_bytes(sft_path) -> int:
    """The bytes of the job's float32 copy of the SFT weights, from the safetensors headers in
    ``sft_path`` (no tensor is read); falls back to twice the folder's size."""
    total, found = 0, False
    for f in Path(sft_path).glob("*.safetensors"):
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n)) if 0 < n < 2**27 else {}
        for name, meta in header.items():
            if name != "__metadata__":
                found = True
                numel = 1
                for d in meta.get("shape", []):
                    numel *= int(d)
                total += numel * (8 if meta.get("dtype") in ("F64", "I64", "U64") else 4)
    if found:
        return total
    return 2 * sum(f.stat().st_size for f in Path(sft_path).rglob("*") if f.is_file())


# -- isolation back ends ------------------------------------------------------------------------

def _shared_dir(prefix: str, writable: bool, quota_mb: int | None = None) -> Path:
    """A fresh folder the isolated job can reach (:func:`objectives.shared_dirs.shared_dir`): under
    /tmp whatever $TMPDIR says, absolute. The sandbox child sees the host's /tmp (read-only, plus its
    writable= folders) but not /var/tmp, /dev/shm or /root, and runs in its own folder. ``quota_mb``:
    a tmpfs of that size is mounted there (as root)."""
    return Path(shared_dirs.shared_dir(prefix, writable=writable, quota_mb=int(quota_mb) if quota_mb else None))


def _remove_shared(path: Path) -> None:
    """Unmount (a quota tmpfs) and remove a folder made by :func:`_shared_dir`."""
    try:
        shared_dirs.remove_shared(str(path))
    except Exception as err:  # noqa: BLE001 - a folder left behind is not the candidate's result
        log.warning("could not remove job folder %s: %s", path, err)
    shutil.rmtree(path, ignore_errors=True)


def _fresh_job_dir(world_writable: bool, quota_mb: int | None = None) -> Path:
    # world-writable for the sandbox child (uid 65534), which must write here; nothing else does
    return _shared_dir("disco-job-", writable=world_writable, quota_mb=quota_mb if world_writable else None)


def _run_process(spec: dict, timeout: float, memory_mb: int | None, progress: bool) -> dict:
    job = Path(spec["out"])
    (job / "spec.json").write_text(json.dumps(spec))
    env = launcher.environment(keep=("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES"), extra={
        "HOME": str(job), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(job / "hf"), "TOKENIZERS_PARALLELISM": "false",
        "TQDM_DISABLE": "" if progress else "1"})
    cmd = launcher.python("inner_loop.runner", "--job", str(job / "spec.json"))
    if memory_mb:
        cmd += ["--memory-mb", str(int(memory_mb))]
    with open(job / "stderr.log", "wb") as err_log:
        # death with the parent, except from a worker thread (the signal fires when that thread ends)
        child = launcher.launch(cmd, env=env, cwd=job, timeout=timeout, stdout=subprocess.DEVNULL,
                                stderr=None if progress else err_log,
                                die_with_parent=threading.current_thread() is threading.main_thread())
        try:
            rc = child.wait()
        finally:
            child.cancel()  # whatever the job started is killed with it (a no-op once it is reaped)
        if child.timed_out:
            return {"status": "failed", "reason": f"timeout: job killed after {timeout:g} s"}
    # the job (same uid) controls these files: read them as the weights are, never blocking
    if rc == 0:
        try:
            return json.loads(read_job_file(job / JOB_RESULT, MAX_RESULT_BYTES))
        except (Rejected, ValueError) as err:
            return {"status": "failed", "reason": f"unusable {JOB_RESULT}: {err}"}
    try:
        tail = "" if progress else read_job_file(job / "stderr.log", 600, tail=True).decode(errors="replace")
    except Rejected:
        tail = ""
    if rc < 0:
        name = signal.Signals(-rc).name
        hint = " (likely out of memory)" if -rc == signal.SIGKILL else ""
        return {"status": "failed", "reason": f"job killed by {name}{hint}"}
    if any(s in tail for s in ("MemoryError", "can't allocate memory", "out of memory", "failed to map segment")):
        return {"status": "failed", "reason": f"out of memory: {tail.strip().splitlines()[-1][:200]}"}
    last = tail.strip().splitlines()[-1] if tail.strip() else ""
    return {"status": "failed", "reason": f"job exited with code {rc}: {last[:300]}"}


def _run_sandbox(spec: dict, timeout: float, memory_mb: int | None) -> dict:
    kwargs = {"timeout": timeout}
    if memory_mb:
        kwargs["memory_mb"] = int(memory_mb)
    try:
        return sandbox.call(JOB, spec, writable=(spec["out"],), **kwargs)
    except sandbox.SandboxError as err:
        kind = getattr(err, "kind", "error")
        reason = getattr(err, "reason", str(err))
        return {"status": "failed", "reason": f"sandbox {kind}: {reason}"}


def _non_finite(metrics: dict) -> list[str]:
    """The metrics that are NaN or infinite (standard errors aside: one prompt gives a NaN one)."""
    import math
    return [k for k, v in metrics.items() if isinstance(v, float) and not k.endswith("_se")
            and not math.isfinite(v)]


def _score(policy, task_obj, *, seed: int, out_dir: str | None, losses: list[float], eval_kwargs: dict,
           deadline: Deadline, trusted: bool) -> dict:
    """The policy's metrics, under ``deadline``; raises :class:`Rejected` for a non-finite metric, a
    timeout, or (``trusted=False``: the weights came from a job) any error while scoring."""
    try:
        with deadline.watch(policy):
            deadline.check()
            metrics = task_obj.score(policy, seed=seed, out_dir=out_dir, losses=losses, **eval_kwargs)
    except Rejected:
        raise
    except Exception as err:  # noqa: BLE001
        if trusted:
            raise
        raise Rejected(f"scoring the policy failed: {type(err).__name__}: {str(err)[:300]}") from err
    bad = _non_finite(metrics)
    if bad:
        raise Rejected(f"non-finite metrics: {', '.join(f'{k}={metrics[k]}' for k in bad)}")
    return metrics


# -- the entry point ------------------------------------------------------------------------------

def run_candidate(objective: Candidate | str, task: str = "synthetic", beta: float | None = None, seed: int = 0,
                  out_dir: str | None = None, isolation: str = "auto", timeout: float = 600.0,
                  progress: bool = False, kind: str | None = None, **overrides: Any) -> TrainResult:
    """Train the task's SFT policy with ``objective`` and score it with the task's ``score``; see the
    module docstring for isolation and the threat model. ``objective``: anything
    :func:`objectives.candidate.resolve` takes (a :class:`~objectives.candidate.Candidate`, a
    registry name, a ``.py`` path or source); ``kind``: its kind when already measured (validation),
    passed on to the job so that it does not probe the code again. ``overrides``: TrainConfig
    fields (learning_rate, max_steps, batch_size, ...), ``memory_mb``, ``score_timeout`` and
    ``eval_kwargs`` (to the task's ``score``) for the runner, anything else for the task's builder."""
    from dataclasses import asdict

    from inner_loop.tasks import get_task

    start = time.perf_counter()
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
    train_over, task_over, runner_opts = split_overrides(overrides)
    try:
        candidate = resolve(objective, kind=kind)
    except (KeyError, ObjectiveError) as err:
        named = objective.name if isinstance(objective, Candidate) else objective
        return _failed(f"unknown objective: {err}", config={"objective": named, "task": task})
    mode = isolation_for(candidate, isolation)
    task_obj = get_task(task, progress=progress, **task_over)
    train_cfg = TrainConfig(**{**task_obj.train_defaults, **train_over,
                               "beta": task_obj.default_beta if beta is None else beta, "seed": seed})
    try:
        train_cfg = dataclasses.replace(train_cfg, device=resolve_device(train_cfg.device, task_obj.device))
    except ValueError as err:
        return _failed(str(err), config={"objective": candidate.name, "task": task})
    task_config = getattr(task_obj, "config", None)
    config = {"objective": candidate.name if candidate.trusted else "<source>",
              "objective_source": None if candidate.trusted else candidate.source,
              "task": task, "task_overrides": task_over,
              "task_config": asdict(task_config) if dataclasses.is_dataclass(task_config) else None,
              "train": asdict(train_cfg), "isolation": mode, "timeout": timeout, **runner_opts}
    seconds: dict = {}
    score_timeout = float(runner_opts.get("score_timeout") or timeout)
    deadline = None

    if mode == "none":
        outcome, policy = _train_here(candidate, task_obj, train_cfg, timeout, progress)
    else:
        quota = -(-2 * weights_bytes(task_obj.sft_path) // 2**20) + JOB_SLACK_MB if mode == "sandbox" else None
        job = _fresh_job_dir(world_writable=(mode == "sandbox"), quota_mb=quota)
        spec = {"objective": candidate.to_dict(), "inputs": str(job_inputs(task_obj)), "train": asdict(train_cfg),
                "out": str(job), "progress": progress}
        try:
            if mode == "process":
                outcome = _run_process(spec, timeout, runner_opts.get("memory_mb"), progress)
            else:
                outcome = _run_sandbox(spec, timeout, runner_opts.get("memory_mb"))
            policy = None
            if outcome.get("status") == "done":
                deadline = Deadline(score_timeout)  # from here on: the job's output, under a deadline
                try:
                    policy = load_policy(task_obj, job, deadline)
                    if train_cfg.device == "cuda":  # the parent scores where the task runs
                        policy = policy.to("cuda")
                except Exception as err:  # noqa: BLE001 - bad weights are the candidate's failure
                    outcome = {**outcome, "status": "failed", "reason": f"unusable weights: {err}"}
        finally:
            keep_job_log(job, out_dir)
            _remove_shared(job)
    seconds["train"] = float(outcome.get("train_seconds") or 0.0)
    losses = [float(x) for x in outcome.get("losses", [])][:1_000_000]
    common = dict(losses=losses, steps=int(outcome.get("steps") or 0), config=config,
                  step=outcome.get("step"), seconds=seconds, margins=clean_margins(outcome.get("margins")))
    if mode == "none" and _rank() > 0:  # one of a multi-process run's other ranks: rank 0 scores and writes
        return TrainResult(status=str(outcome.get("status")), reason=outcome.get("reason"), **common)
    metrics = None
    if outcome.get("status") == "done":
        t = time.perf_counter()
        try:
            metrics = _score(policy, task_obj, seed=seed, out_dir=out_dir, losses=losses,
                             eval_kwargs=runner_opts.get("eval_kwargs") or {},
                             deadline=deadline or Deadline(score_timeout), trusted=(mode == "none"))
        except Rejected as err:
            outcome = {**outcome, "status": "failed", "reason": str(err)}
        seconds["eval"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start
    if metrics is None:
        result = _failed(str(outcome.get("reason") or "failed")[:1000], **common)
    else:
        result = TrainResult(status="done", metrics=metrics, **common)
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "result.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
        if result.ok and policy is not None and not task_obj.keeps_policy:
            save_policy(policy, Path(out_dir) / WEIGHTS)
        _log_summary(Path(out_dir) / "train.log", result)
    return result


def _rank() -> int:
    """This process's rank in a multi-process run (torch.distributed initialised by the Trainer under
    ``torchrun`` / ``accelerate launch``: :mod:`inner_loop.distributed`), else 0."""
    dist = sys.modules.get("torch.distributed")  # not imported: no process group either
    return dist.get_rank() if dist is not None and dist.is_available() and dist.is_initialized() else 0


def _log_summary(path: Path, result: TrainResult) -> None:
    """One line per run in its train.log (written by this trusted process, after the job's own
    output), so the log says what happened even when the job printed nothing."""
    losses = result.losses
    loss = f", loss {losses[0]:.4f} -> {losses[-1]:.4f}" if losses else ""
    secs = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    what = "done" if result.ok else f"failed: {result.reason}"
    with open(path, "a", encoding="utf-8", errors="replace") as log_file:
        log_file.write(f"run {what} ({result.steps} steps{loss}; isolation {result.config.get('isolation')}; "
                       f"{secs})\n")


def _train_here(candidate: Candidate, task_obj, train_cfg, timeout: float, progress: bool):
    from inner_loop.trainer import train_objective
    try:
        objective = candidate.load()
    except ObjectiveError as err:
        return {"status": "failed", "reason": f"objective did not load: {err}"}, None
    model = task_obj.load_sft()
    out = train_objective(model, task_obj.tokenizer, task_obj.train_pairs, objective, train_cfg,
                          progress=progress, time_limit=timeout)
    return ({"status": out.status, "reason": out.reason, "step": out.step, "losses": out.losses,
             "steps": out.steps, "train_seconds": out.seconds, "margins": out.margins},
            model if out.status == "done" else None)


def _child_main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(description="run one training job (used by run_candidate's process isolation)")
    p.add_argument("--job", required=True, help="spec.json written by run_candidate")
    p.add_argument("--memory-mb", type=int, default=None, help="address-space budget above the current size")
    args = p.parse_args(argv)
    spec = json.loads(Path(args.job).read_text())
    import importlib
    # imported before the address-space limit: torch maps a lot at import; then transformers, TRL, datasets
    for module in ("torch", "inner_loop.trainer"):
        importlib.import_module(module)
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_OUTPUT_BYTES, MAX_OUTPUT_BYTES))
    if args.memory_mb:
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[0]) * resource.getpagesize()
        limit = current + args.memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from inner_loop.trainer import train_job
    train_job(spec)
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
