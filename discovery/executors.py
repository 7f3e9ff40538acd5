"""Where a campaign's training jobs run: :func:`make_executor` picks the backend of
``execution.executor``, each an :class:`objectives.launcher.Executor` (``submit / poll / cancel``).

``local``   :class:`discovery.training.LocalExecutor`: a worker process per row on this machine,
            started through :func:`objectives.launcher.launch`; ``execution.workers`` rows at once.
``ray``     :class:`discovery.ray_executor.RayExecutor`: each candidate-seed a Ray task on the cluster
            at ``execution.ray_address`` (None: a Ray instance started here), with the resources
            of :meth:`~discovery.config.ExecutionConfig.seed_resources`; results come back through
            Ray, large artefacts go to ``execution.storage``. Ray is an optional extra
            (``pip install 'disco-pop[ray]'``) and is imported only here, only for ``ray``.

:func:`rows_in_flight` is how many rows the campaign keeps submitted: ``execution.workers`` for the
local backend; for Ray at least that and one row per seed slot of the cluster (a candidate trains one
seed first, its pilot or screening seed; when a row trains more, its extra seeds wait in Ray's queue,
so the cluster never idles), so proposals keep flowing while work runs.
"""

from __future__ import annotations

EXECUTORS = ("local", "ray")


def make_executor(config):
    """The executor ``config.execution.executor`` names, built for ``config`` (a
    :class:`~inner_loop.overrides.UserError` when Ray is missing or its cluster cannot be reached)."""
    kind = config.execution.executor
    if kind == "ray":
        from discovery.ray_executor import RayExecutor
        return RayExecutor.for_config(config)
    from discovery import training
    return training.LocalExecutor.for_config(config)


def remote(config) -> bool:
    """Whether rows always go to the executor (a cluster), even with one worker."""
    return config.execution.executor != "local"


def rows_in_flight(executor, config) -> int:
    """How many rows to keep submitted to ``executor`` (see the module docstring); asked again as
    slots free up, so a cluster that grows gets more."""
    workers = config.execution.workers
    capacity = getattr(executor, "capacity", None)
    return workers if capacity is None else max(workers, capacity())


def for_runs(kind: str, *, address: str | None = None, task: str = "synthetic", workers: int = 2):
    """(executor, runs in flight) for evaluation's grids (``disco compare`` / ``heldout`` /
    ``sweep`` with ``--executor``): ``local`` worker processes (``workers`` at once) or ``ray`` (the
    cluster at ``address``, one seed slot per run), with ``task``'s resources."""
    from discovery.config import CampaignConfig
    config = CampaignConfig.from_dict({"training": {"task": task},
                                       "execution": {"executor": kind, "ray_address": address,
                                                     "workers": workers}}, warn=False)
    executor = make_executor(config)
    return executor, rows_in_flight(executor, config)
