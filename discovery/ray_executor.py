"""The Ray backend of :class:`objectives.launcher.Executor`: each candidate-seed is one Ray task.

``submit(spec)`` starts one task per seed of the row's spec (:func:`discovery.training.spec_for`),
asking for the resources of :meth:`~discovery.config.ExecutionConfig.seed_resources` (``num_cpus`` /
``num_gpus``: the task's unless set); the handle is the row's :class:`RowJob`, its seeds' ObjectRefs.
``poll(handle)`` collects what is ready through ``ray.get`` and returns the per-seed results (seed
order) once every seed is final, else None; ``cancel(handle)`` force-cancels the seeds still running.

Where a seed runs (:func:`run_seed`, in the Ray worker): :func:`discovery.training.train_seeds` on
that one seed, with a fresh folder on the worker's node as its output folder (under :data:`SCRATCH`;
removed afterwards, or by the next seed on that node when its worker was killed). Its results come
back through Ray, not a shared filesystem, together with the folder's files of up to
:data:`SMALL_FILE` bytes (at most :data:`SMALL_TOTAL` in all: ``train.log``, ``result.json``, the
embedded task's weights), which the driver writes into ``DIR/candidates/<id>-<name>/seed-<k>/`` as a
local worker would have. Large artefacts (a recipe's kept model) need ``execution.storage``: a folder
every node and the driver see, or an fsspec URL; the whole seed folder is copied to
``STORAGE/<campaign folder name>/<id>-<name>/seed-<k>/`` and every path in the results that pointed
into the worker's folder is rewritten to point there (without storage, to the campaign's seed folder,
and the result says which files were too large to come back). A judge fitness reads the kept model
from the driver, so it needs storage to be a shared folder, not a URL. A seed's own record of where
and how often it ran is ``seed-<k>/ray.json``. Every node needs this project installed (its workers
import :mod:`discovery` and the train function by its ``module:function`` name).

Faults. Ray's own retries are off (``max_retries=0``): this class counts every start itself, so a
seed is never lost and never counted twice. A seed whose worker process died (killed, crashed, out of
memory), whose node died or was removed, or whose finished result was lost with its node is started
again, on whatever node has room, up to ``execution.max_seed_attempts`` starts; after that it
fails with its reason (each attempt's failure is in ``ray.json``). A seed that failed for a reason
of its own (the trainer's result, or an exception) is not retried; once a seed of a row has failed
for good the row's other seeds are cancelled (the row fails anyway, as
:func:`~discovery.training.train_seeds` stops at its first failed seed). A killed *driver* takes its
ObjectRefs along, and Ray ends the tasks it owned: ``disco resume`` trains the rows the archive
holds as ``training`` again from scratch (redone once; the campaign log says so).

The API-key variables the proposer and the judge use are removed from a worker's environment
before a seed trains (Ray workers inherit the environment of the process that started the node).
Ray is an optional dependency (``pip install 'disco-pop[ray]'``): this module imports it only when an
executor is made.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from inner_loop.overrides import UserError

log = logging.getLogger("discovery.ray")

SMALL_FILE = 8 * 2**20       # files up to this size come back through Ray into the campaign folder
SMALL_TOTAL = 64 * 2**20     # ... at most this much per seed
RECORD = "ray.json"          # per seed: attempts, failures, node, where its folder was stored
SCRATCH = Path(tempfile.gettempdir()) / "disco-ray-seeds"  # seed output folders on a worker's node
INSTALL_HINT = "pip install 'disco-pop[ray]'"


# -- in the Ray worker -----------------------------------------------------------------------------

def storage_target(storage: str, folder: str, seed: int) -> str:
    """``STORAGE/<campaign>/<id>-<name>/seed-<k>`` for the candidate folder ``folder`` (a path or a URL)."""
    f = Path(folder)
    return "/".join([storage.rstrip("/"), f.parent.parent.name, f.name, f"seed-{seed}"])


def small_files(root: Path) -> tuple[dict[str, bytes], list[str]]:
    """``root``'s regular files (links skipped) as ``{relative path: bytes}`` up to the size limits,
    and the relative paths of those left out."""
    files, left, total = {}, [], 0
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        rel, size = path.relative_to(root).as_posix(), path.stat().st_size
        if size <= SMALL_FILE and total + size <= SMALL_TOTAL:
            files[rel] = path.read_bytes()
            total += size
        else:
            left.append(rel)
    return files, left


def store(local: Path, target: str) -> str:
    """Copy the folder ``local`` to ``target`` (a folder path or an fsspec URL), replacing what is
    there; a local target is written beside it first and renamed, so it is never half there."""
    if "://" not in target:
        dest = Path(target)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f"{dest.name}.partial-{uuid.uuid4().hex[:8]}")
        shutil.copytree(local, partial, symlinks=True)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(partial, dest)
        return str(dest)
    import fsspec
    fs, root = fsspec.core.url_to_fs(target)
    if fs.exists(root):
        fs.rm(root, recursive=True)
    for path in sorted(p for p in local.rglob("*") if p.is_file() and not p.is_symlink()):
        remote = f"{root.rstrip('/')}/{path.relative_to(local).as_posix()}"
        fs.makedirs(remote.rsplit("/", 1)[0], exist_ok=True)
        fs.put_file(str(path), remote)
    return target


def sweep() -> None:
    """Remove this node's seed folders left by worker processes that died (a killed worker's own
    clean-up never ran); each folder's name starts with the pid of the process that made it."""
    if not SCRATCH.is_dir():
        return
    for folder in SCRATCH.iterdir():
        try:
            os.kill(int(folder.name.split("-", 1)[0]), 0)
        except ValueError:
            continue  # not one of ours
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def run_seed(spec: dict, seed: int, drop_env=(), storage: str | None = None) -> dict:
    """One seed of ``spec`` in this (Ray worker) process: its result, its folder's small files and
    where the whole folder was stored. The train function raising is recorded by ``train_seeds``."""
    for name in drop_env:
        os.environ.pop(name, None)
    from discovery.training import train_seeds
    node = None
    try:
        import ray
        node = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - called outside Ray (a test): no node
        pass
    sweep()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-{Path(spec['folder']).name[:60]}-", dir=SCRATCH))
    try:
        started = time.time()
        result = train_seeds({**spec, "seeds": [seed], "folder": str(base)})[0]
        out = base / f"seed-{seed}"
        out.mkdir(parents=True, exist_ok=True)
        files, left = small_files(out)
        stored = store(out, storage_target(storage, spec["folder"], seed)) if storage else None
        return {"result": result, "files": files, "left_out": left, "worker_dir": str(out),
                "stored": stored, "node": node, "pid": os.getpid(), "started": started}
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- in the driver ---------------------------------------------------------------------------------

def rewrite(value, old: str, new: str):
    """``value`` (JSON-like) with every string that starts with the path ``old`` moved under ``new``."""
    if isinstance(value, str):
        return new + value[len(old):] if value == old or value.startswith(old + "/") else value
    if isinstance(value, dict):
        return {k: rewrite(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite(v, old, new) for v in value]
    return value


def connect(address: str | None):
    """The ``ray`` module, connected: to the cluster at ``address``, or a Ray instance started on this
    machine when None; a connection this process already has is used as it is. Returns
    ``(ray, started_here)``."""
    try:
        import ray
    except ImportError:
        raise UserError(f"execution.executor is 'ray' but Ray is not installed: {INSTALL_HINT}") from None
    if ray.is_initialized():
        return ray, False
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address is None:
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=address, **kwargs)
    except Exception as err:  # noqa: BLE001 - any failure to join is the user's address or cluster
        where = f"the Ray cluster at {address!r}" if address else "a Ray instance on this machine"
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise UserError(f"cannot connect to {where} ({type(err).__name__}: {first}); check "
                        "execution.ray_address (--ray-address) and that the cluster is running") from None
    return ray, True


@dataclasses.dataclass
class SeedJob:
    """One seed of a row: its current ObjectRef, starts so far, the failures that led to a restart,
    and its result once final (``dropped``: cancelled because another seed of the row failed)."""

    seed: int
    ref: Any = None
    attempts: int = 0
    failures: list = dataclasses.field(default_factory=list)
    result: dict | None = None
    dropped: bool = False

    @property
    def final(self) -> bool:
        return self.result is not None or self.dropped


@dataclasses.dataclass
class RowJob:
    """The handle of one submitted row: its spec and its seeds."""

    spec: dict
    seeds: list

    @property
    def folder(self) -> Path:
        return Path(self.spec["folder"])


class RayExecutor:
    """Runs each seed of a training spec as a Ray task (see the module docstring).

    ``address``: the cluster (None: a Ray instance started here, or the connection this process has);
    ``num_cpus`` / ``num_gpus``: what one seed's task asks for; ``storage``: where whole seed folders
    go (a shared folder or an fsspec URL; None: only small files come back); ``max_attempts``: starts
    of one seed whose worker or node died; ``drop_env``: variables a worker must not see."""

    def __init__(self, address: str | None = None, *, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 storage: str | None = None, max_attempts: int = 3, drop_env=()):
        self.ray, self.started_here = connect(address)
        self.resources = {"num_cpus": float(num_cpus), "num_gpus": float(num_gpus)}
        if storage and "://" not in storage:  # a folder: as the driver names it, whatever a worker's cwd
            storage = str(Path(storage).expanduser().resolve())
        self.storage = storage
        self.max_attempts = int(max_attempts)
        self.drop_env = tuple(dict.fromkeys([*drop_env, "OPENAI_API_KEY"]))
        self.task = self.ray.remote(run_seed)
        self.options = {"max_retries": 0, "retry_exceptions": False, **self.resources}
        self._capacity: tuple[float, dict] | None = None
        self.check_fits()

    @classmethod
    def for_config(cls, config) -> "RayExecutor":
        e = config.execution
        t = config.training
        return cls(e.ray_address, **e.seed_resources(t.task, t.gpus_per_candidate), storage=e.storage,
                   max_attempts=e.max_seed_attempts,
                   drop_env=(config.proposer.api_key_env, config.fitness.judge.api_key_env))

    # -- the cluster ----------------------------------------------------------------------------

    def cluster(self) -> dict:
        """The cluster's total resources (cached for 10 s: an autoscaling cluster grows)."""
        now = time.monotonic()
        if self._capacity is None or now - self._capacity[0] > 10.0:
            self._capacity = (now, dict(self.ray.cluster_resources()))
        return self._capacity[1]

    def seed_slots(self) -> int:
        """How many seed tasks the cluster runs at once."""
        total = self.cluster()
        slots = [total.get(key, 0.0) / need for key, need in
                 (("CPU", self.resources["num_cpus"]), ("GPU", self.resources["num_gpus"])) if need > 0]
        return int(min(slots)) if slots else 1

    def capacity(self, seeds_per_row: int = 1) -> int:
        """Rows to keep in flight so the cluster is full: its seed slots over ``seeds_per_row``,
        rounded up (a seed more waits in Ray's queue rather than a slot standing idle), at least 1."""
        return max(1, math.ceil(self.seed_slots() / max(1, int(seeds_per_row))))

    def check_fits(self) -> None:
        """A :class:`UserError` when no node of the cluster could ever run one seed's task."""
        nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
        if any(r.get("CPU", 0.0) >= self.resources["num_cpus"] and r.get("GPU", 0.0) >= self.resources["num_gpus"]
               for r in nodes):
            return
        have = ", ".join(f"{r.get('CPU', 0):g} CPU {r.get('GPU', 0):g} GPU" for r in nodes) or "no node"
        raise UserError(f"no node of the Ray cluster has the {self.resources['num_cpus']:g} CPU and "
                        f"{self.resources['num_gpus']:g} GPU one seed asks for (nodes: {have}); set "
                        "execution.num_cpus / execution.num_gpus (--set execution.num_gpus=0)")

    # -- Executor -------------------------------------------------------------------------------

    def submit(self, spec: dict) -> RowJob:
        row = RowJob(spec=dict(spec), seeds=[SeedJob(seed=s) for s in spec["seeds"]])
        for job in row.seeds:
            self._start(row, job)
        return row

    def _start(self, row: RowJob, job: SeedJob) -> None:
        job.attempts += 1
        name = f"disco {row.folder.name} seed {job.seed}"
        job.ref = self.task.options(name=name[:200], **self.options).remote(row.spec, job.seed, self.drop_env,
                                                                          self.storage)

    def poll(self, handle: RowJob) -> list[dict] | None:
        live = [j for j in handle.seeds if not j.final]
        if live:
            ready, _ = self.ray.wait([j.ref for j in live], num_returns=len(live), timeout=0)
            ready = set(ready)
            for job in live:
                if job.ref in ready:
                    self._collect(handle, job)
        if any(j.result is not None and j.result.get("status") != "done" for j in handle.seeds):
            for job in handle.seeds:  # the row fails anyway: its other seeds are not needed
                if not job.final:
                    self._cancel(job)
                    job.dropped = True
        if not all(j.final for j in handle.seeds):
            return None
        return [j.result for j in handle.seeds if j.result is not None]

    def cancel(self, handle: RowJob) -> None:
        for job in handle.seeds:
            if not job.final:
                self._cancel(job)
                job.dropped = True

    def _cancel(self, job: SeedJob) -> None:
        try:
            self.ray.cancel(job.ref, force=True)
        except Exception as err:  # noqa: BLE001 - finished or gone already: nothing left to stop
            log.debug("cancelling seed %s: %s", job.seed, err)

    def close(self) -> None:
        """Disconnect from Ray if this executor connected (a Ray instance it started stops)."""
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()

    # -- one finished task ----------------------------------------------------------------------

    def _collect(self, row: RowJob, job: SeedJob) -> None:
        ex = self.ray.exceptions
        try:
            out = self.ray.get(job.ref)
        except ex.TaskCancelledError:
            job.result = self._failed(row, job, "cancelled")
            return
        except ex.RayTaskError as err:  # run_seed raised (storage unwritable, ...): not retried
            cause = getattr(err, "cause", None) or err
            first = (str(cause).strip().splitlines() or [""])[-1][:300]
            job.result = self._failed(row, job, f"the seed's Ray task raised {type(cause).__name__}: {first}")
            return
        except (ex.WorkerCrashedError, ex.NodeDiedError, ex.ObjectLostError, ex.OutOfMemoryError,
                ex.LocalRayletDiedError, ex.RaySystemError) as err:
            why = lost_words(err)
            job.failures.append({"attempt": job.attempts, "reason": why, "at": time.time()})
            if job.attempts < self.max_attempts:
                log.warning("%s seed %s: %s; starting it again (attempt %d of %d)", row.folder.name,
                            job.seed, why, job.attempts + 1, self.max_attempts)
                self._start(row, job)
                return
            job.result = self._failed(row, job, f"{why}; given up after {job.attempts} attempts")
            return
        except ex.RayError as err:  # anything else Ray reports (a runtime env that cannot be set up)
            first = (str(err).strip().splitlines() or [""])[0][:300]
            job.result = self._failed(row, job, f"Ray could not run the seed: {type(err).__name__}: {first}")
            return
        job.result = self._land(row, job, out)

    def _failed(self, row: RowJob, job: SeedJob, reason: str) -> dict:
        self._record(row, job, {})
        return {"seed": job.seed, "status": "failed", "reason": reason}

    def _record(self, row: RowJob, job: SeedJob, extra: dict) -> Path:
        folder = row.folder / f"seed-{job.seed}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RECORD).write_text(json.dumps({"seed": job.seed, "attempts": job.attempts,
                                                 "failures": job.failures, **extra}, indent=2, default=str))
        return folder

    def _land(self, row: RowJob, job: SeedJob, out: dict) -> dict:
        """Write the seed's small files into the campaign's seed folder; its result with paths rewritten."""
        local = row.folder / f"seed-{job.seed}"
        shutil.rmtree(local, ignore_errors=True)
        local.mkdir(parents=True, exist_ok=True)
        for rel, data in out["files"].items():
            parts = Path(rel).parts
            if Path(rel).is_absolute() or ".." in parts or not parts:
                continue
            (local / rel).parent.mkdir(parents=True, exist_ok=True)
            (local / rel).write_bytes(data)
        result = rewrite(dict(out["result"]), out["worker_dir"], out["stored"] or str(local))
        result["seed"] = job.seed
        if out["left_out"] and not out["stored"]:
            result["not_kept"] = (f"{len(out['left_out'])} file(s) over {SMALL_FILE // 2**20} MiB stayed on the "
                                  f"worker and were deleted (set execution.storage to keep them): "
                                  f"{', '.join(out['left_out'][:5])}")
            log.warning("%s seed %s: %s", row.folder.name, job.seed, result["not_kept"])
        self._record(row, job, {"node": out["node"], "pid": out["pid"], "stored": out["stored"],
                                "left_out": out["left_out"]})
        return result


def lost_words(err) -> str:
    """Why a seed's task ended without a result, in words (the first line of Ray's message kept)."""
    names = {"WorkerCrashedError": "its Ray worker process died (killed or crashed)",
             "NodeDiedError": "its node died or was removed from the cluster",
             "OutOfMemoryError": "Ray's memory monitor killed its worker (out of memory)",
             "ObjectLostError": "its result was lost with its node",
             "LocalRayletDiedError": "the Ray node of this driver died",
             "RaySystemError": "a Ray system error"}
    kinds = [c.__name__ for c in type(err).__mro__]
    words = next((names[k] for k in kinds if k in names), type(err).__name__)
    first = (str(err).strip().splitlines() or [""])[0][:200]
    return f"{words} ({type(err).__name__}: {first})" if first else words
