"""Run one candidate objective: train the task's SFT policy with it, then score the policy.

``run_candidate(objective, task="synthetic", ...) -> TrainResult`` is the inner loop's one entry
point. A failure (non-finite loss, out of memory, killed, timed out, code that does not load) is a
``TrainResult(status="failed", reason=...)``, never an exception in the caller.

Isolation (``isolation=``):

* ``"none"``: train in this process. Only for trusted code (registry names); the timeout is
  cooperative (checked between steps).
* ``"process"``: train in a fresh ``python -m inner_loop.runner`` child with a scrubbed
  environment, ``RLIMIT_AS`` (``memory_mb``), ``RLIMIT_FSIZE`` and a hard timeout (the process
  group is SIGKILLed). It contains crashes, memory bombs and hangs; it is **not** a security
  boundary (same uid, network open).
* ``"sandbox"``: train through :func:`objectives.sandbox.call` (fork from a warm zygote, uid 65534,
  no network, rlimits, scrubbed environment; see that module's threat model).
* ``"auto"``: ``"none"`` for a registry name; ``"sandbox"`` for source code when
  :mod:`objectives.sandbox` is importable, else ``"process"`` (a warning is logged and the
  resolved mode is saved in ``TrainResult.config["isolation"]``).

Threat model of the isolated modes. The candidate's code runs, during training, with the rights of
the training job. It can do anything the job can: read the SFT weights and training pairs, burn
its CPU/memory/time budget, write its output folder, and write whatever it likes as its "loss log"
or "weights". So the job is trusted with nothing that decides fitness:

* the job writes only the policy weights (``policy.safetensors``: tensors, no pickle) and its
  loss log to a fresh folder; the trusted parent ignores everything else there;
* the parent rebuilds the model from the task's own SFT config and loads those tensors with
  ``strict=True`` (names and shapes must match exactly: no extra code or config is taken from
  the job), then computes the metrics itself with :func:`inner_loop.metrics.evaluate_policy`;
* the loss log is reported as the job's claim; it feeds no score. Non-finite weights fail the
  candidate (a NaN that escaped the job's own check).

Not protected against: a candidate that trains a policy to game the gold reward (that is the
search working, and the held-out evaluation's job to catch); in ``"process"`` mode, anything a
same-uid process can do (read files, open sockets); kernel or torch exploits in any mode.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ISOLATIONS = ("auto", "none", "process", "sandbox")
RUNNER_OPTIONS = ("memory_mb", "eval_kwargs")  # overrides that configure the runner itself
JOB = "inner_loop.trainer:train_job"
MAX_OUTPUT_BYTES = 16 * 2**30  # RLIMIT_FSIZE of an isolated job
REPO = Path(__file__).resolve().parent.parent
# Training defaults per task (a task may also carry ``train_defaults``). Synthetic: one epoch over
# the 2000 pairs in 32 steps of 64; one intra-op thread, since the model's ops are too small to gain
# from more and, on a shared 2-core machine, two spinning OpenMP threads made a step 8x slower.
TASK_TRAIN_DEFAULTS = {"synthetic": {"learning_rate": 1e-3, "batch_size": 64, "num_epochs": 1.0, "threads": 1}}


@dataclasses.dataclass
class TrainResult:
    """One candidate's outcome. ``status`` is "done" or "failed"; a failure has a ``reason``."""

    status: str
    reason: str | None = None
    metrics: dict | None = None          # reward, reward_se, kl, win_rate, ... (trusted parent)
    losses: list[float] = dataclasses.field(default_factory=list)  # per optimizer step (job's log)
    steps: int = 0                       # optimizer steps completed
    seconds: dict = dataclasses.field(default_factory=dict)  # train, eval, total
    config: dict = dataclasses.field(default_factory=dict)   # resolved: reproduces the run
    step: int | None = None              # the step a failure happened at, when known

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
    task_obj.train_pairs.save_to_disk(str(path / "pairs"))
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    _INPUTS[key] = path
    return path


# -- isolation back ends ------------------------------------------------------------------------

def _sandbox_available() -> bool:
    try:
        import objectives.sandbox  # noqa: F401
    except ImportError:
        return False
    return True


def _shared_dir(prefix: str, writable: bool) -> Path:
    """A fresh folder the isolated job can reach: under /tmp whatever $TMPDIR says, absolute.

    The sandbox child sees the host's /tmp (read-only, plus its writable= folders) but not /var/tmp,
    /dev/shm or /root, and runs in its own folder: a job or inputs folder that followed $TMPDIR
    there, or a relative path, failed the job (objectives.sandbox.shared_dir)."""
    try:
        from objectives.sandbox import shared_dir
    except ImportError:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None)).resolve()
        path.chmod(0o777 if writable else 0o755)
        return path
    return Path(shared_dir(prefix, writable=writable))


def _fresh_job_dir(world_writable: bool) -> Path:
    # world-writable for the sandbox child (uid 65534), which must write here; nothing else does
    return _shared_dir("disco-job-", writable=world_writable)


def _run_process(spec: dict, timeout: float, memory_mb: int | None, progress: bool) -> dict:
    job = Path(spec["out"])
    (job / "spec.json").write_text(json.dumps(spec))
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(job), "PYTHONPATH": str(REPO),
           "LANG": "C.UTF-8", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(job / "hf"), "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "" if progress else "1"}
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES"):
        if key in os.environ:
            env[key] = os.environ[key]
    cmd = [sys.executable, "-m", "inner_loop.runner", "--job", str(job / "spec.json")]
    if memory_mb:
        cmd += ["--memory-mb", str(int(memory_mb))]
    with open(job / "stderr.log", "wb") as err_log:
        proc = subprocess.Popen(cmd, cwd=str(job), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=None if progress else err_log, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"status": "failed", "reason": f"timeout: job killed after {timeout:g} s"}
    result_file = job / "job.json"
    if rc == 0 and result_file.is_file():
        return json.loads(result_file.read_text())
    tail = (job / "stderr.log").read_text(errors="replace")[-600:] if not progress else ""
    if rc < 0:
        name = signal.Signals(-rc).name
        hint = " (likely out of memory)" if -rc == signal.SIGKILL else ""
        return {"status": "failed", "reason": f"job killed by {name}{hint}"}
    if any(s in tail for s in ("MemoryError", "can't allocate memory", "out of memory", "failed to map segment")):
        return {"status": "failed", "reason": f"out of memory: {tail.strip().splitlines()[-1][:200]}"}
    last = tail.strip().splitlines()[-1] if tail.strip() else ""
    return {"status": "failed", "reason": f"job exited with code {rc}: {last[:300]}"}


def _run_sandbox(spec: dict, timeout: float, memory_mb: int | None) -> dict:
    from objectives import sandbox
    kwargs = {"timeout": timeout}
    if memory_mb:
        kwargs["memory_mb"] = int(memory_mb)
    try:
        return sandbox.call(JOB, spec, writable=(spec["out"], spec["inputs"]), **kwargs)
    except sandbox.SandboxError as err:
        kind = getattr(err, "kind", "error")
        reason = getattr(err, "reason", str(err))
        return {"status": "failed", "reason": f"sandbox {kind}: {reason}"}


def _load_policy(task, job: Path):
    """The trusted side: the task's own SFT architecture + the job's tensors, strictly."""
    import torch
    from safetensors.torch import load_file
    model = task.load_sft()
    state = load_file(str(job / "policy.safetensors"))
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise ValueError("non-finite weights")
    missing, unexpected = model.load_state_dict(state, strict=False)
    current = model.state_dict()
    loaded = {current[k].data_ptr() for k in state if k in current}
    untied = [k for k in missing if current[k].data_ptr() not in loaded]  # tied copies are fine
    if untied or unexpected:
        raise ValueError(f"weights do not match the SFT model: missing {sorted(untied)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]}")
    return model


# -- the entry point ------------------------------------------------------------------------------

def split_overrides(overrides: dict) -> tuple[dict, dict, dict]:
    """(training overrides, task overrides, runner options): TrainConfig fields train, runner
    options configure the runner, everything else goes to the task's builder."""
    from inner_loop.trainer import TrainConfig
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"beta", "seed"}
    train = {k: v for k, v in overrides.items() if k in fields}
    runner = {k: v for k, v in overrides.items() if k in RUNNER_OPTIONS}
    task = {k: v for k, v in overrides.items() if k not in fields and k not in RUNNER_OPTIONS}
    return train, task, runner


def _read_objective(objective: str) -> tuple[str, bool]:
    """(source or name, is_registry_name); a path is read here (the sandbox may not see it)."""
    from objectives.baselines import REGISTRY
    if objective in REGISTRY:
        return objective, True
    if "\n" not in objective and objective.endswith(".py"):
        path = Path(objective)
        if not path.is_file():
            raise FileNotFoundError(f"no such objective file: {objective}")
        return path.read_text(), False
    if "def " not in objective:
        REGISTRY.get(objective)  # raises KeyError with a "did you mean"
    return objective, False


def run_candidate(objective: str, task: str = "synthetic", beta: float | None = None, seed: int = 0,
                  out_dir: str | None = None, isolation: str = "auto", timeout: float = 600.0,
                  progress: bool = False, **overrides: Any) -> TrainResult:
    """Train the task's SFT policy with ``objective`` (a registry name, a ``.py`` path or source)
    and score it; see the module docstring for isolation and the threat model. ``overrides``:
    TrainConfig fields (learning_rate, max_steps, batch_size, ...), ``memory_mb`` and
    ``eval_kwargs`` for the runner, anything else for the task's builder."""
    from dataclasses import asdict

    from inner_loop.tasks import get_task
    from inner_loop.trainer import TrainConfig

    start = time.perf_counter()
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
    train_over, task_over, runner_opts = split_overrides(overrides)
    try:
        code, is_name = _read_objective(objective)
    except (KeyError, FileNotFoundError) as err:
        return _failed(f"unknown objective: {err}", config={"objective": objective, "task": task})
    mode = isolation
    if mode == "auto":
        mode = "none" if is_name else ("sandbox" if _sandbox_available() else "process")
        if mode == "process":
            log.warning("objectives.sandbox is not available: running candidate code in a plain child process")
    task_obj = get_task(task, progress=progress, **task_over)
    defaults = {**TASK_TRAIN_DEFAULTS.get(task, {}), **(getattr(task_obj, "train_defaults", None) or {})}
    train_cfg = TrainConfig(**{**defaults, **train_over, "beta": task_obj.beta if beta is None else beta,
                               "seed": seed})
    task_config = getattr(task_obj, "config", None)
    config = {"objective": objective if is_name else "<source>", "objective_source": None if is_name else code,
              "task": task, "task_overrides": task_over,
              "task_config": asdict(task_config) if dataclasses.is_dataclass(task_config) else None,
              "train": asdict(train_cfg), "isolation": mode, "timeout": timeout, **runner_opts}
    seconds: dict = {}

    if mode == "none":
        outcome, policy = _train_here(code, task_obj, train_cfg, timeout, progress)
    else:
        job = _fresh_job_dir(world_writable=(mode == "sandbox"))
        spec = {"objective": code, "inputs": str(job_inputs(task_obj)), "train": asdict(train_cfg),
                "out": str(job), "progress": progress}
        try:
            if mode == "process":
                outcome = _run_process(spec, timeout, runner_opts.get("memory_mb"), progress)
            else:
                outcome = _run_sandbox(spec, timeout, runner_opts.get("memory_mb"))
            policy = None
            if outcome.get("status") == "done":
                try:
                    policy = _load_policy(task_obj, job)
                except Exception as err:  # noqa: BLE001 - bad weights are the candidate's failure
                    outcome = {**outcome, "status": "failed", "reason": f"unusable weights: {err}"}
        finally:
            shutil.rmtree(job, ignore_errors=True)
    seconds["train"] = float(outcome.get("train_seconds") or 0.0)
    losses = [float(x) for x in outcome.get("losses", [])][:1_000_000]
    common = dict(losses=losses, steps=int(outcome.get("steps") or 0), config=config,
                  step=outcome.get("step"), seconds=seconds)
    if outcome.get("status") != "done":
        seconds["total"] = time.perf_counter() - start
        result = _failed(str(outcome.get("reason") or "failed")[:1000], **common)
    else:
        t = time.perf_counter()
        if hasattr(task_obj, "evaluate"):  # a task with its own metrics (recipe tasks keep the model)
            metrics = task_obj.evaluate(policy, seed=seed, out_dir=out_dir, losses=losses)
        else:
            metrics = _evaluate(policy, task_obj, seed, runner_opts.get("eval_kwargs") or {}, train_cfg.threads)
        seconds["eval"] = time.perf_counter() - t
        seconds["total"] = time.perf_counter() - start
        result = TrainResult(status="done", metrics=metrics, **common)
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "result.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return result


def _train_here(code: str, task_obj, train_cfg, timeout: float, progress: bool):
    import objectives
    from inner_loop.trainer import train_objective
    try:
        objective = objectives.load(code)
    except objectives.ObjectiveError as err:
        return {"status": "failed", "reason": f"objective did not load: {err}"}, None
    model = task_obj.load_sft()
    out = train_objective(model, task_obj.tokenizer, task_obj.train_pairs, objective, train_cfg,
                          progress=progress, time_limit=timeout)
    return ({"status": out.status, "reason": out.reason, "step": out.step, "losses": out.losses,
             "steps": out.steps, "train_seconds": out.seconds}, model if out.status == "done" else None)


def _evaluate(policy, task_obj, seed: int, eval_kwargs: dict, threads: int | None) -> dict:
    import inspect

    import torch

    from inner_loop.metrics import evaluate_policy
    kwargs = dict(eval_kwargs)
    if "seed" in inspect.signature(evaluate_policy).parameters:
        kwargs.setdefault("seed", seed)
    policy.eval()
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return evaluate_policy(policy, task_obj, **kwargs)
    finally:
        torch.set_num_threads(before)


def _child_main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(description="run one training job (used by run_candidate's process isolation)")
    p.add_argument("--job", required=True, help="spec.json written by run_candidate")
    p.add_argument("--memory-mb", type=int, default=None, help="address-space budget above the current size")
    args = p.parse_args(argv)
    spec = json.loads(Path(args.job).read_text())
    import torch  # noqa: F401 - imported before the address-space limit: torch maps a lot at import
    import inner_loop.trainer  # noqa: F401 - transformers, TRL, datasets
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
