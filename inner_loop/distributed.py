"""A recipe's training as one multi-process job: ``gpus_per_candidate: N`` of a campaign.

:func:`run_distributed` trains what :func:`inner_loop.recipes.run_recipe` would train with the same
arguments, split over ``nproc`` processes, and returns the same :class:`TrainResult`. It takes
:func:`inner_loop.runner.run_candidate`'s arguments, so a campaign's worker calls it in the train
function's place (``functools.partial(run_distributed, nproc=N)``)::

    run_distributed("lrml", task="recipe:zephyr-gemma", seed=0, out_dir=DIR, timeout=7200,
                    nproc=8, model=PATH, dataset=PATH, batch_size=16)

The job is :func:`launch_command` started through :func:`objectives.launcher.launch` (its own
process group, death with its parent, a hard deadline of ``timeout`` seconds; this process's
environment minus ``drop_env``): every rank runs ``python -m inner_loop.recipes`` on the same
output folder. Rank 0 keeps the model there and writes ``result.json``, which is the result; the
other ranks return before scoring (:mod:`inner_loop.runner`) and, when they fail, write
``rank-<r>.json`` beside it. A rank that fails or dies ends the job: the launcher (torchrun's
elastic agent, also under ``accelerate launch``) stops the other ranks, which would otherwise wait
in a collective, and the reason is read from rank 0's result, else a failed rank's, else the job's
log (``train.log`` in the output folder).

Launchers (``launcher="auto"``): on GPUs, ``accelerate launch --config_file <the recipe's
accelerate_config> --num_processes N`` (the recipes name DeepSpeed ZeRO-3; ``--mixed_precision``
follows the run's precision, ``--main_process_port`` a free port) or, for a recipe that names no
config, ``torchrun`` (plain DDP over NCCL); on the CPU, ``torchrun --standalone --nproc_per_node N``
(DDP over gloo: the Trainer, told ``use_cpu``, has accelerate initialise the process group with
gloo). ``--standalone`` picks a free rendezvous port, so jobs on one node do not clash. After a
sharded run (ZeRO-3, FSDP) rank 0 gathers the whole weights to save them
(:data:`inner_loop.trainer.FULL_STATE_ATTR`); as rank 0 alone scores, a recipe whose score runs the
policy (``tldr``, ``imdb``: generation) cannot follow a sharded run and is refused: use
``launcher="torchrun"`` (DDP) for those.

Isolation: the job's ranks train the objective in their own processes, a child process group with a
deadline (what ``isolation="process"`` gives: it contains crashes and hangs, it is not a security
boundary). The sandbox cannot hold a multi-process job, so ``isolation="sandbox"`` is refused;
``"auto"``, ``"process"`` and ``"none"`` all mean this. Source code is written to
``objective.py`` in the output folder and run by every rank.

The batch. ``batch_size`` (the override, else the recipe's) is the global micro-batch, as in one
process: each of the N ranks gets ``batch_size / N`` pairs (an error unless it divides), and
``grad_accum`` stays, so an optimizer step sees ``batch_size * grad_accum`` pairs either way. (The
recipe files' own ``batch_size`` is per device of their 8-GPU setup: 8 GPUs x 2 x 8 = 128 pairs a
step is ``batch_size=16, nproc=8`` here.)

Which pairs each rank trains on, read in transformers 5 / accelerate 1.15: the Trainer's training
sampler is a ``RandomSampler``, which ``accelerator.prepare`` replaces with a
``SeedableRandomSampler`` seeded with ``data_seed`` (the run's seed) and the epoch, in one process
as in N (``use_seedable_sampler`` is on by default), so every rank draws the same permutation as a
single process. With ``split_batches`` off (the default) accelerate's ``BatchSamplerShard`` cuts
that permutation into per-device batches of ``batch_size / N`` and deals them out in turn: rank r
gets batches r, r + N, r + 2N, ... So the N ranks' k-th micro-batches together are the k-th
``batch_size`` pairs of the permutation: exactly one process's k-th micro-batch. DDP averages the
ranks' gradients of their mean losses (TRL scales the loss by ``1 / grad_accum`` only, never by the
world size), which is the gradient of the mean over the global batch. So the trained weights equal a
one-process run's up to float summation order (and padding: a batch pads to its own longest pair),
which tests/inner_loop/test_distributed.py checks. ``split_batches=True`` would deal the same
pairs (each global batch split in N), so it is left off. One difference remains: at the end of an
epoch whose pair count is not a multiple of ``batch_size``, one process trains on a smaller last
batch, whereas accelerate (``even_batches``) fills the ranks' last shares with pairs from the start
of the epoch so that every rank steps; with a pair count divisible by ``batch_size`` there is none.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from inner_loop.recipes import RANK_RESULT  # a failed other rank's result
from inner_loop.train_config import TrainResult
from objectives import launcher as process_launcher

REPO = Path(__file__).resolve().parent.parent
RECIPES_MODULE = "inner_loop.recipes"     # what every rank runs
LAUNCHERS = ("auto", "torchrun", "accelerate")
RESULT = "result.json"                    # rank 0's result (inner_loop.runner writes it)
LOG = "train.log"                         # the job's output, all ranks and the launcher
ALWAYS_DROPPED = ("OPENAI_API_KEY",)
NOT_FORWARDED = ("eval_kwargs", "memory_mb")  # runner options a rank's command line cannot carry / use


def _fail(message: str) -> None:
    raise ValueError(message)


def per_device_batch(batch_size: int, nproc: int) -> int:
    """``batch_size`` (the global micro-batch) split over ``nproc`` ranks; a one-line error unless
    it divides evenly."""
    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        _fail(f"nproc must be an integer >= 1, not {nproc!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        _fail(f"batch_size must be an integer >= 1, not {batch_size!r}")
    if batch_size % nproc:
        fits = [n for n in (nproc * (batch_size // nproc), nproc * (batch_size // nproc + 1)) if n]
        _fail(f"batch_size {batch_size} (pairs per micro-step, all processes together) is not a multiple of "
              f"nproc {nproc}: each process needs an equal share (batch_size {' or '.join(map(str, fits))})")
    return batch_size // nproc


def free_port() -> int:
    """A TCP port free on this machine now (for accelerate's rendezvous; torchrun --standalone finds its own)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recipe_args(recipe: str, *, objective: str, out_dir: str, model: str | None = None,
                dataset: str | None = None, seed: int | None = None, beta: float | None = None,
                timeout: float | None = None, objective_kind: str | None = None, **overrides) -> list[str]:
    """The arguments of ``python -m inner_loop.recipes`` for one rank (``overrides`` as ``--set``)."""
    args = ["--recipe", recipe, "--objective", objective, "--out", str(out_dir)]
    for flag, value in (("--model", model), ("--dataset", dataset), ("--seed", seed), ("--beta", beta),
                        ("--timeout", timeout), ("--objective-kind", objective_kind)):
        if value is not None:
            args += [flag, str(value)]
    for key, value in overrides.items():
        args += ["--set", f"{key}={json.dumps(value)}"]  # read back by overrides.parse_value
    return args


def launch_command(nproc: int, args: list[str], *, launcher: str = "torchrun", config_file: str | None = None,
                   mixed_precision: str | None = None, port: int | None = None) -> list[str]:
    """The command that runs ``python -m inner_loop.recipes ARGS`` as ``nproc`` ranks on this node.

    ``launcher="torchrun"``: ``python -m torch.distributed.run --standalone --nproc_per_node N
    --max_restarts 0`` (DDP; gloo on the CPU, NCCL on GPUs). ``launcher="accelerate"``: ``python -m
    accelerate.commands.launch --config_file CONFIG --num_processes N --num_machines 1
    --main_process_port PORT [--mixed_precision P]`` (the config's DeepSpeed or FSDP plugin)."""
    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        _fail(f"nproc must be an integer >= 1, not {nproc!r}")
    if launcher == "torchrun":
        head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                "--max_restarts", "0"]
    elif launcher == "accelerate":
        if not config_file:
            _fail("launcher 'accelerate' needs an accelerate config file (config_file=)")
        head = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
                "--num_processes", str(nproc), "--num_machines", "1",
                "--main_process_port", str(port or free_port())]
        if mixed_precision:
            head += ["--mixed_precision", mixed_precision]
    else:
        _fail(f"launcher must be 'torchrun' or 'accelerate', not {launcher!r}")
    return [*head, "-m", RECIPES_MODULE, *args]


def _accelerate_config(recipe, config_file: str | None) -> Path | None:
    from inner_loop.recipe_task import RECIPE_DIR
    name = config_file or recipe.accelerate_config
    if not name:
        return None
    path = Path(name) if Path(name).is_file() else RECIPE_DIR / name
    if not path.is_file():
        _fail(f"no accelerate config {name!r} (a file, or a name in {RECIPE_DIR})")
    return path.resolve()


def _sharded(config: Path) -> str | None:
    """"DeepSpeed ZeRO-3" / "FSDP" when accelerate ``config`` shards the weights, else None."""
    import yaml
    data = yaml.safe_load(config.read_text()) or {}
    kind = str(data.get("distributed_type", "")).upper()
    if kind == "DEEPSPEED" and int((data.get("deepspeed_config") or {}).get("zero_stage", 0) or 0) == 3:
        return "DeepSpeed ZeRO-3"
    if kind == "FSDP":
        return "FSDP"
    return None


def _has_deepspeed() -> bool:
    import importlib.util
    return importlib.util.find_spec("deepspeed") is not None


def plan(nproc: int, task: str, overrides: dict, *, launcher: str = "auto",
         config_file: str | None = None) -> dict:
    """What :func:`run_distributed` will launch, checked before anything starts (one-line
    ``ValueError`` for a mistake): ``launcher``, ``config_file``, ``device``, ``batch_size`` (global),
    ``per_device_batch``, ``mixed_precision``, ``recipe`` (the name)."""
    import torch

    from inner_loop.recipe_task import load_recipe, recipe_kind, task_fields
    if not isinstance(task, str) or not task.startswith("recipe:"):
        _fail(f"a multi-process run trains a recipe task (recipe:<name>), not {task!r}")
    name = task.split(":", 1)[1]
    try:
        recipe = load_recipe(name, **task_fields(overrides, name))
    except (KeyError, TypeError) as err:
        _fail(str(err.args[0] if err.args else err))
    if launcher not in LAUNCHERS:
        _fail(f"launcher must be one of {', '.join(LAUNCHERS)}, not {launcher!r}")
    global_batch = overrides.get("batch_size", recipe.batch_size)
    per_device = per_device_batch(global_batch, nproc)
    device = overrides.get("device", "auto")
    if device not in ("auto", "cpu", "cuda"):
        _fail(f"device must be one of auto, cpu, cuda, not {device!r}")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "cuda" and not gpus:
        _fail("device cuda was asked for but no CUDA device is visible")
    device = "cuda" if device != "cpu" and gpus else "cpu"
    if device == "cuda" and nproc > gpus:
        _fail(f"nproc {nproc} is more than the {gpus} visible GPU(s) (CUDA_VISIBLE_DEVICES)")
    config = _accelerate_config(recipe, config_file) if launcher != "torchrun" else None
    if launcher == "auto":
        launcher = "accelerate" if device == "cuda" and config is not None else "torchrun"
    if launcher == "accelerate":
        if device != "cuda":
            _fail("launcher 'accelerate' runs the recipe's GPU config: on the CPU use launcher 'torchrun'")
        if config is None:
            _fail(f"recipe {name!r} names no accelerate config: pass config_file= or use launcher 'torchrun'")
        if "DEEPSPEED" in config.read_text().upper() and not _has_deepspeed():
            _fail(f"{config.name} uses DeepSpeed, which is not installed (pip install deepspeed), "
                  "or use launcher 'torchrun' (DDP)")
        sharded = _sharded(config)
        if sharded and recipe_kind(name) != "chat":
            _fail(f"recipe {name!r} scores by running the policy on rank 0, which a {sharded} run leaves "
                  "sharded: use launcher 'torchrun' (DDP)")
    precision = overrides.get("precision", recipe.precision)
    return {"recipe": name, "launcher": launcher, "config_file": str(config) if launcher == "accelerate" else None,
            "device": device, "nproc": nproc, "batch_size": global_batch, "per_device_batch": per_device,
            "mixed_precision": "bf16" if precision == "bf16" else "no"}


def _candidate(objective):
    from objectives.candidate import resolve
    try:
        return resolve(objective)
    except Exception as err:  # noqa: BLE001 - an unknown name or an unreadable file: one line
        message = str(err).strip("'")
        _fail(message if message.startswith("unknown objective") else f"objective: {message}")


def _objective_ref(candidate, out_dir: Path) -> tuple[str, str]:
    """(what ``--objective`` gets, the name to record): a registry name as it is; source (from a file,
    text or a Candidate) written to ``out_dir/objective.py``, which every rank loads."""
    if candidate.trusted:
        return candidate.name, candidate.name
    path = out_dir / "objective.py"
    path.write_text(candidate.source)
    return str(path), "<source>"


def _reason_from_log(log: Path, rc: int) -> str:
    """The most telling line of a failed job's log: the last exception line of the rank that torchrun
    names the root cause (its lines start ``[rank<r>]:``; the others' errors are mostly the lost peer),
    else of any rank, else the last line."""
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64_000))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        lines = []
    root = re.search(r"Root Cause[^\n]*\n(?:.*\n)*?\s*rank\s*:\s*(\d+)", "\n".join(lines))
    error = re.compile(r"(\w+(Error|Exception|Exceeded|Interrupt|Fault)\b.*)")
    candidates = [ln for ln in lines if "ChildFailedError" not in ln and "Traceback" not in ln and error.search(ln)]
    if root:
        candidates = [ln for ln in candidates if ln.startswith(f"[rank{root.group(1)}]")] or candidates
    if candidates:
        return f"distributed job exited with code {rc}: {error.search(candidates[-1]).group(1).strip()[:300]}"
    last = next((ln.strip() for ln in reversed(lines) if ln.strip().strip("=-")), "")
    return f"distributed job exited with code {rc}: {last[:300]}"


def _read_result(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _to_result(data: dict) -> TrainResult:
    import dataclasses
    fields = {f.name for f in dataclasses.fields(TrainResult)}
    return TrainResult(**{k: v for k, v in data.items() if k in fields})


def run_distributed(objective, task: str = "recipe:zephyr-gemma", beta: float | None = None, seed: int = 0,
                    out_dir: str | None = None, isolation: str = "process", timeout: float = 600.0,
                    progress: bool = False, kind: str | None = None, *, nproc: int, launcher: str = "auto",
                    config_file: str | None = None, drop_env=(), **overrides) -> TrainResult:
    """Train recipe ``task`` with ``objective`` as ``nproc`` processes (see the module docstring);
    rank 0's :class:`TrainResult`. The arguments are :func:`inner_loop.runner.run_candidate`'s
    (``overrides``: recipe and TrainConfig fields; ``batch_size`` is the global micro-batch) plus
    ``nproc``, ``launcher`` (auto | torchrun | accelerate), ``config_file`` (an accelerate config
    instead of the recipe's) and ``drop_env`` (variables the job must not see; ``OPENAI_API_KEY``
    always). A mistake in the arguments raises a one-line ``ValueError`` before anything starts; a
    job that fails, dies or runs past ``timeout`` seconds is a failed result, never an exception."""
    if isolation == "sandbox":
        _fail("a multi-process run cannot use the sandbox: its ranks train in their own process group "
              "(isolation 'process')")
    if isolation not in ("auto", "none", "process"):
        _fail(f"isolation must be one of auto, none, process, sandbox, not {isolation!r}")
    refused = [k for k in NOT_FORWARDED if k in overrides]
    if refused:
        _fail(f"a multi-process run does not take {', '.join(refused)}")
    chosen = plan(nproc, task, overrides, launcher=launcher, config_file=config_file)
    candidate = _candidate(objective)
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="disco-distributed-"))
    out.mkdir(parents=True, exist_ok=True)
    for stale in [out / RESULT, *out.glob(RANK_RESULT.format(rank="*"))]:
        stale.unlink(missing_ok=True)  # a result here must be this job's
    ref, named = _objective_ref(candidate, out)
    rank_overrides = {**overrides, "batch_size": chosen["per_device_batch"]}
    model, dataset = rank_overrides.pop("model", None), rank_overrides.pop("dataset", None)
    args = recipe_args(chosen["recipe"], objective=ref, out_dir=str(out.resolve()), model=model, dataset=dataset,
                       seed=seed, beta=beta, timeout=timeout, objective_kind=kind, **rank_overrides)
    cmd = launch_command(nproc, args, launcher=chosen["launcher"], config_file=chosen["config_file"],
                         mixed_precision=chosen["mixed_precision"])
    env = process_launcher.environment(inherit=True, drop=(*drop_env, *ALWAYS_DROPPED))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if not progress:
        env["TQDM_DISABLE"] = "1"
    with open(out / LOG, "ab") as log:
        job = process_launcher.launch(cmd, env=env, timeout=timeout, stdout=None if progress else log,
                                      stderr=None if progress else subprocess.STDOUT,
                                      die_with_parent=threading.current_thread() is threading.main_thread())
        try:
            rc = job.wait()
        finally:
            job.cancel()  # every rank goes with the launcher (a no-op once all have exited)
    data = _read_result(out / RESULT)
    if job.timed_out:
        data = {"status": "failed", "reason": f"timeout: distributed job killed after {timeout:g} s",
                "config": (data or {}).get("config") or {}}
    elif rc != 0 and (data is None or data.get("status") == "done"):
        ranks = sorted(out.glob(RANK_RESULT.format(rank="*")))
        failed = next((d for d in map(_read_result, ranks) if d and d.get("status") != "done"), None)
        data = failed or {"status": "failed", "reason": _reason_from_log(out / LOG, rc)}
    elif data is None:
        data = {"status": "failed", "reason": f"distributed job wrote no {RESULT}"}
    result = _to_result(data)
    config = dict(result.config or {})
    config.setdefault("objective", named)
    config.update(isolation="process", distributed={**chosen, "command": cmd[:cmd.index(RECIPES_MODULE) + 1]})
    result.config = config
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m inner_loop.distributed --nproc N --recipe NAME ...``: :func:`run_distributed`."""
    import argparse

    from inner_loop.overrides import parse_sets
    p = argparse.ArgumentParser(description="train a recipe as one multi-process job (torchrun / accelerate)")
    p.add_argument("--nproc", type=int, required=True, help="processes (GPUs; CPU processes without one)")
    p.add_argument("--recipe", required=True)
    p.add_argument("--objective", default="lrml", help="registry name or .py file (default lrml)")
    p.add_argument("--out", default=None, help="folder for the trained model, result.json and train.log")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--beta", type=float, default=None)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole job (default 600)")
    p.add_argument("--launcher", default="auto", choices=LAUNCHERS)
    p.add_argument("--config-file", default=None, help="accelerate config (default: the recipe's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe or training field (batch_size: all processes together)")
    args = p.parse_args(argv)
    try:
        result = run_distributed(args.objective, task=f"recipe:{args.recipe}", beta=args.beta, seed=args.seed,
                                 out_dir=args.out, timeout=args.timeout, progress=True, nproc=args.nproc,
                                 launcher=args.launcher, config_file=args.config_file, **parse_sets(args.set))
    except ValueError as err:
        print(f"inner_loop.distributed: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in result.to_dict().items() if k != "config"}, default=str))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
