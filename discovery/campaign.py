"""A discovery campaign: propose, validate, deduplicate, train, record, feed back; resumable.

::

    baselines (DPO, IPO, LRML) -> for each of N candidates:
        context = archive view -> proposer -> row "proposed"  (written before any work)
        -> sandbox validation  -> "invalid" with the reason, or
        -> functional fingerprint -> "duplicate" of an earlier row, or
        -> "training": the inner loop on every seed -> "done" with fitness, or "failed"

Successive halving (``training.screen_seeds = n``, 0 < n < the number of seeds): a candidate first
trains on the first n seeds ("screen"); it is promoted to the remaining seeds ("full") only when its
paired difference to DPO there is not clearly negative (the upper end of its interval, from
:func:`discovery.noise.paired_to`, is >= 0); otherwise it is ``done`` with the fitness of the
screened seeds and the reason "screened out: ...". With ``training.best_extra_seeds = k``, a
candidate whose fitness would make it the best trains k extra seeds ("extra": max(seeds)+1, ...)
and is scored on all of them before it is called best. Baselines train on every seed. The stage
lives in the row (``metrics["stage"]``: name, seeds, ``attempts_before``, the screening decision),
beside the per-seed results finished so far, so a resumed campaign trains only the seeds of the
stage that are missing, and each stage gets ``training.max_attempts`` starts.
The campaign's noise floor (:mod:`discovery.noise`) goes into archive meta ``"noise"``.

Budgets (``budget``: tokens, cost, wall time, training seconds; :mod:`discovery.budget`) are
checked before every new piece of work: each proposal, and each row a crash left unfinished. At a
cap the campaign asks for nothing more, lets the training jobs already running finish, records
archive meta ``"stopped"`` (``{"reason", "cap", "at", "continue"}``) and returns its summary with
``"stopped"``; ``disco resume DIR --set budget.max_tokens=N`` with a higher cap continues (with the
same cap it stops again at once, before any proposal). Wall time is summed over runs and resumes
(meta ``"wall_seconds"``, updated as the campaign runs). The prompt gets what is left of each cap
(``Context.budget_left``).

Every step reads its inputs from the archive and writes its outcome back in one transaction, so
``disco resume`` after a crash (``kill -9`` included) picks up exactly where the database says:
``proposed`` rows are validated, ``training`` rows are trained again from scratch (their partial
output is deleted; ``training.max_attempts`` bounds how often a row that kills its process is retried), and
new proposals are asked for until ``candidates`` rows are final. The proposer's context is rebuilt
from the archive every time, never kept in memory.

The outside world is reached through :class:`~discovery.seams.Seams`: objects (validator,
fingerprinter, inspector, trainer, fitness) that :meth:`Seams.default` builds from the project's
own modules and a test replaces by passing its own; the archive records each as ``module:function``
(``meta.seams``). After validation a row becomes an :class:`objectives.candidate.Candidate` with
the kind the validator measured, and that candidate is what the fingerprinter, the inspector and
the trainer get (a baseline is ``objectives.resolve(name)``), so no step probes the code again.
With ``execution.workers > 1`` candidates train concurrently through an executor
(:class:`~discovery.training.LocalExecutor` by default: one ``python -m discovery.training``
process each, whose environment lacks the API keys; a cluster executor plugs in with the same
``submit / poll / cancel``). The proposer then sees results as they arrive, so the sequence of
proposals depends on timing; with one worker a campaign is deterministic given its seed. ``DIR/campaign.lock`` keeps a second process off a
running campaign; it holds the runner's pid, and is removed when the run stops (normally, on an
error or on Ctrl-C), so ``disco status`` tells a running campaign from a stopped one
(:func:`discovery.lock.lock_state`). ``DIR/config.yaml`` is the resolved config, for people.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shlex
import sys
import time
from pathlib import Path

from discovery import budget, executors, noise, steering
from discovery.archive import FINAL, Archive, ArchiveError
from discovery.lock import acquire, release
from discovery.config import CampaignConfig, UserError, save_yaml
from discovery.parsing import slug
from discovery.proposal import Proposal
from discovery.proposers import make_proposer
from discovery.seams import Seams, check_importable
from discovery.stages import StagedTraining
from discovery.text import (MAX_CODE_CHARS, MAX_PROMPT_CHARS, MAX_REPLY_CHARS, MAX_THOUGHT_CHARS,
                            cap, clean, shown)

log = logging.getLogger("discovery")

__all__ = ["CampaignConfig", "run_campaign", "resume_campaign", "Seams"]


class Campaign(StagedTraining):
    """One run of the loop over one archive (see the module docstring)."""

    def __init__(self, archive: Archive, config: CampaignConfig, seams: Seams, proposer,
                 executor=None, progress: bool = True):
        self.archive, self.config, self.seams, self.proposer = archive, config, seams, proposer
        self.executor = executor or executors.make_executor(config)
        self.beta = config.training.beta if config.training.beta is not None else 0.1
        self.jobs: dict[int, object] = {}  # row id -> the executor's handle
        self.bar = None
        self.progress = progress
        self.wall_base = float(archive.meta(budget.WALL) or 0.0)  # seconds of earlier runs
        self.wall_start = self.wall_saved = time.monotonic()
        self.last_spent = budget.Spent()  # as the last budget check saw it

    # -- one row through its states ---------------------------------------------------------

    def folder(self, row: dict) -> Path:
        return self.archive.dir / row["folder"]

    def candidate(self, row: dict):
        """The row as an :class:`objectives.candidate.Candidate`: a baseline by its registry name,
        a proposal by its code with the kind its validation measured (None before that)."""
        import objectives
        if row["kind"] == "baseline":
            return objectives.resolve(row["name"])
        return objectives.resolve(row["code"], kind=(row["checks"] or {}).get("kind"))

    def validate(self, cid: int) -> bool:
        """proposed -> invalid | duplicate, or leave it ready to train (returns True)."""
        row = self.archive.get(cid)
        timings = dict(row["timings"] or {})
        if row["kind"] == "baseline":
            checks = {"valid": True, "reason": None, "note": "built-in objective, not sandboxed"}
        else:
            t = time.perf_counter()
            checks = self.seams.check(row["code"], beta=self.beta,
                                      timeout=self.config.execution.validate_timeout)
            timings["validate_s"] = round(time.perf_counter() - t, 3)
            if not checks.get("valid"):
                reason = checks.get("reason") or "failed validation"
                self.archive.update(cid, expect="proposed", status="invalid", reason=reason,
                                    checks=checks, timings=timings, finished_at=time.time())
                log.info("#%d %s: invalid: %s", cid, row["name"], reason)
                return False
        candidate = self.candidate({**row, "checks": checks})
        t = time.perf_counter()
        fp, fp_error = self.seams.fingerprint_of(candidate)
        timings["fingerprint_s"] = round(time.perf_counter() - t, 3)
        if fp_error:
            checks = {**checks, "fingerprint_error": fp_error}
        if fp is not None:
            existing = [(i, d) for i, d in self.archive.fingerprints(fp.key) if i != cid]
            dup, relation = self.seams.duplicate_of(fp, existing, up_to=self.config.execution.dedupe)
            if dup is not None and row["kind"] == "candidate":
                other = self.archive.get(dup)
                reason = (f"computes the same function as #{dup} {other['name']}" if relation == "same function"
                          else f"trains like #{dup} {other['name']}: its gradients are a positive multiple "
                               "of that loss's (a constant shift or scale; Adam divides the factor out)")
                self.archive.update(cid, expect="proposed", status="duplicate", reason=reason,
                                    duplicate_of=dup, checks=checks, timings=timings,
                                    fingerprint_key=fp.key, finished_at=time.time())
                log.info("#%d %s: duplicate of #%d %s", cid, row["name"], dup, other["name"])
                return False
        inspection = None
        if self.config.execution.inspect:
            t = time.perf_counter()
            inspection = self.seams.inspect_into(candidate, self.folder(row) / "inspection",
                                                 beta=self.beta)
            timings["inspect_s"] = round(time.perf_counter() - t, 3)
        self.archive.update(cid, expect="proposed", checks=checks, timings=timings,
                            inspection=inspection, fingerprint_key=fp.key if fp else None,
                            fingerprint=fp.to_dict() if fp else None)
        return True

    def advance(self, cid: int) -> None:
        """Take row ``cid`` from wherever it is to a final state (or into a worker)."""
        row = self.archive.get(cid)
        if row["status"] == "training":
            attempts = row["attempts"] - self.stage_of(row).get("attempts_before", 0)
            if attempts >= self.config.training.max_attempts:
                self.archive.update(cid, status="failed", finished_at=time.time(), reason=(
                    f"training was interrupted {attempts} times (the process died each "
                    "time); not retried"))
                self.tick()
                return
            log.info("#%d %s: was cut off while training; training it again", cid, row["name"])
            self.start(cid)
        elif row["status"] == "proposed":
            if self.validate(cid):
                self.start(cid)
            else:
                self.tick()

    # -- the loop ---------------------------------------------------------------------------

    def tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)
            best = self.archive.leaderboard()
            if best:
                self.bar.set_postfix_str(
                    f"best {shown(best[0]['name'][:24], multiline=False)} {best[0]['fitness']:.4f}")

    def record(self, proposal: Proposal) -> int:
        proposal = bounded(proposal)
        cid = self.archive.add(
            kind="candidate", name=proposal.name, code=proposal.code, thought=proposal.thought,
            idea=proposal.idea, proposer=proposal.proposer, parents=proposal.parents,
            prompt_tokens=proposal.prompt_tokens, completion_tokens=proposal.completion_tokens)
        folder = self.folder(self.archive.get(cid))
        (folder / "proposal.md").write_text(
            f"# #{cid} {proposal.name}\n\n{proposal.thought}\n\n```python\n{proposal.code}```\n",
            encoding="utf-8")
        if proposal.prompt:
            (folder / "prompt.md").write_text(proposal.prompt, encoding="utf-8")
        if proposal.reply is not None:
            (folder / "reply.md").write_text(proposal.reply, encoding="utf-8")
        if proposal.error:
            self.archive.update(cid, expect="proposed", status="invalid", reason=proposal.error,
                                finished_at=time.time())
            log.info("#%d: %s", cid, proposal.error)
            self.tick()
            return cid
        twin = self.near_duplicate(dataclasses.replace(proposal, code=self.archive.get(cid)["code"])) \
            if proposal.proposer != "evolve" else None  # evolve runs the same check itself
        if twin is not None and twin.id != cid:
            reason = steering.NEAR_DUPLICATE.format(n=twin.id, name=twin.name)
            self.archive.update(cid, expect="proposed", status="duplicate", duplicate_of=twin.id, reason=reason,
                                finished_at=time.time())
            log.info("#%d %s: %s", cid, proposal.name, reason)
            self.tick()
        return cid

    def slots(self) -> int:
        """Rows kept in flight: ``execution.workers`` here, the cluster's seed slots on Ray."""
        return executors.rows_in_flight(self.executor, self.config)

    def wait(self, below: int) -> None:
        """Collect finished worker jobs until fewer than ``below`` are running."""
        while len(self.jobs) >= below and self.jobs:
            for cid, handle in list(self.jobs.items()):
                results = self.executor.poll(handle)
                if results is not None:
                    del self.jobs[cid]
                    self.finish(cid, results)
            if len(self.jobs) >= below:
                if time.monotonic() - self.wall_saved > 2.0:  # `disco status` sees the wall time grow
                    self.save_wall()
                time.sleep(0.2)

    # -- budgets ----------------------------------------------------------------------------

    def save_wall(self) -> None:
        """Archive meta ``"wall_seconds"``: earlier runs' seconds plus this run's so far."""
        self.wall_saved = time.monotonic()
        self.archive.set_meta(budget.WALL, round(self.wall_base + self.wall_saved - self.wall_start, 3))

    def spent(self) -> budget.Spent:
        """What the campaign has spent so far (:func:`discovery.budget.spent`), wall time saved first."""
        self.save_wall()
        self.last_spent = budget.spent(self.archive, self.config)
        return self.last_spent

    def over_budget(self) -> dict | None:
        """When a cap is reached: ask for no more work, let the running jobs finish, record why
        (archive meta ``"stopped"``) and return that record; else None."""
        hit = budget.reached(self.spent(), self.config.budget)
        if hit is None:
            return None
        cap, reason = hit
        if self.jobs:
            log.info("%s: no new work; waiting for the %d training job(s) running", reason, len(self.jobs))
            self.wait(1)
            self.store_noise()
        record = {"reason": reason, "cap": cap, "at": time.time(),
                  "continue": f"disco resume {shlex.quote(str(self.archive.dir))} --set {cap}="
                              f"{budget.raised(cap, self.config.budget, self.spent())}"}
        self.archive.set_meta("stopped", record)
        log.warning("stopped: %s; continue with a higher cap: %s", reason, record["continue"])
        return record

    # -- what the proposer sees (discovery.steering) ----------------------------------------------

    def context(self):
        return steering.proposer_context(self.archive, self.config, self.beta, self.last_spent)

    def propose(self, context, room: int) -> list[Proposal]:
        return steering.propose(self.proposer, context, self.config.proposer.proposals_per_request, room)

    def sweeps(self) -> list[Proposal]:
        return steering.sweeps(self.archive, self.config)

    def near_duplicate(self, proposal: Proposal):
        return steering.near_duplicate(self.archive, proposal.code, self.beta, self.config.execution.dedupe)

    def write_lessons(self) -> None:
        steering.write_lessons(self.archive, self.config, self.proposer, self.context)

    def run(self) -> dict:
        from tqdm.auto import tqdm
        a, cfg = self.archive, self.config
        for name in cfg.baselines:
            if not any(r["name"] == name for r in a.rows(kind="baseline")):
                from objectives.baselines import REGISTRY
                a.add(kind="baseline", name=name, code=REGISTRY.get(name).source,
                      thought=REGISTRY.get(name).description, proposer="baseline")
        self.store_noise()  # a calibration file's floor is known from the start
        total = len(cfg.baselines) + cfg.candidates
        done = a.count(status=FINAL)
        self.bar = tqdm(total=total, initial=min(done, total), desc="campaign", unit="cand",
                        file=sys.stderr, dynamic_ncols=True, disable=not self.progress)
        if a.meta("stopped"):
            a.set_meta("stopped", None)  # this run decides anew whether a cap stops it
        unpriced = budget.unpriced_warning(cfg)
        if unpriced:
            log.warning("%s", unpriced)
        try:
            for row in a.rows(status=("proposed", "training")):  # baselines first, then leftovers
                self.wait(self.slots())
                if self.over_budget():
                    return summary(a)
                self.advance(row["id"])
            if self.slots() > 1:  # the proposer should see the baselines' fitness
                self.wait(1)
            self.store_noise()
            while a.count(kind="candidate") < cfg.candidates:
                self.wait(self.slots())
                if self.over_budget():
                    return summary(a)
                self.write_lessons()
                room = cfg.candidates - a.count(kind="candidate")
                proposals = self.sweeps()[:room] or self.propose(self.context(), room)
                cids = [self.record(p) for p in proposals]  # all of a request recorded before any work
                for cid in cids:
                    self.wait(self.slots())
                    self.advance(cid)
            self.wait(1)
            self.store_noise()
            self.write_lessons()
        finally:
            for handle in self.jobs.values():
                self.executor.cancel(handle)
            self.save_wall()
            self.bar.close()
        return summary(a)


def bounded(p: Proposal) -> Proposal:
    """A proposal as untrusted text: encodable as UTF-8, a file-safe name, the hypothesis, prompt
    and reply cut to their limits, and code over :data:`~discovery.text.MAX_CODE_CHARS` refused
    (the row becomes invalid, keeping the code's start)."""
    code, error = clean(p.code), (clean(p.error) or None) if p.error is not None else None
    if len(code) > MAX_CODE_CHARS:
        error = error or f"the code is {len(code)} characters long, over the limit of {MAX_CODE_CHARS}"
        code = cap(code, 4000)
    name = clean(p.name)
    if not re.fullmatch(r"[A-Za-z0-9_]{1,40}", name):
        name = slug(name)
    count = (lambda n: n if isinstance(n, int) and not isinstance(n, bool) else None)  # noqa: E731
    return dataclasses.replace(
        p, name=name, code=code, error=error, thought=cap(clean(p.thought), MAX_THOUGHT_CHARS),
        idea=" ".join(clean(p.idea).split())[:200],
        proposer=clean(p.proposer)[:100], parents=tuple(clean(x)[:200] for x in p.parents),
        prompt=None if p.prompt is None else cap(clean(p.prompt), MAX_PROMPT_CHARS),
        reply=None if p.reply is None else cap(clean(p.reply), MAX_REPLY_CHARS),
        prompt_tokens=count(p.prompt_tokens), completion_tokens=count(p.completion_tokens))




def tags(row: dict) -> list[str]:
    """Short words about how a row was trained: "screened out", "promoted", "+2 extra seeds"."""
    stage = (row.get("metrics") or {}).get("stage") or {}
    out = []
    if stage.get("outcome") == "screened out":
        out.append("screened out")
    elif stage.get("screen"):
        out.append("promoted")
    if stage.get("name") == "extra":
        config = row.get("config") or {}
        main = set(((config.get("training") or {}).get("seeds")) or [])
        extra = [s for s in stage.get("seeds", []) if s not in main] if main else []
        out.append(f"+{len(extra) or '?'} extra seeds")
    return out


def summary(archive: Archive) -> dict:
    """The campaign in numbers (what ``disco run`` prints and ``disco status --json`` starts from):
    counts, the fitness used, the noise record, baselines, and the best candidate (not screened
    out) with its paired difference to DPO; ``stopped``: archive meta "stopped" (the budget cap
    that stopped the last run, or None)."""
    from discovery.config import CampaignConfig, UserError
    rows = archive.rows()
    try:
        config = CampaignConfig.from_dict(archive.config or {}, warn=False)
    except (UserError, TypeError):
        config = None
    metric = config.fitness.metric if config else (archive.config or {}).get("metric", "win_rate")
    function = config.fitness.function if config else "mean_metric"
    record = archive.meta("noise") or noise.from_baselines(rows, metric)
    ref = noise.reference_row(rows)

    def numbers(r: dict) -> dict:
        paired = None if r is ref else noise.paired_to(r, ref, metric, record)
        return {"fitness": r["fitness"], "fitness_se": r["fitness_se"], "n_seeds": noise.n_seeds(r),
                "fitness_se_is": noise.se_words(r, function, metric),
                "fitness_text": noise.fitness_text(r, function), "vs_dpo": paired, "tags": tags(r)}

    baselines = {r["name"]: {"status": r["status"], **numbers(r)} for r in rows if r["kind"] == "baseline"}
    board = archive.leaderboard()
    best = next((r for r in board if r["kind"] == "candidate" and not noise.screened_out(r)), None)
    return {"dir": str(archive.dir), "counts": archive.counts(),
            "fitness": {"function": function, "metric": metric,
                        "kl_budget": config.fitness.kl_budget if config else None,
                        "kl_betas": list(config.fitness.kl_betas) if config and config.fitness.kl_budget else None,
                        "described": config.fitness.describe() if config else f"mean {metric}"},
            "noise": record, "noise_floor": noise.floor_line(record), "baselines": baselines,
            "stopped": archive.meta("stopped"),
            "best": None if best is None else {**{k: best[k] for k in (
                "id", "name", "fitness", "fitness_se", "thought", "folder")}, **numbers(best)}}


class Shown(logging.Formatter):
    """Log lines hold names and reasons a candidate may have written: no control character of
    theirs reaches the terminal or campaign.log raw (see :func:`discovery.text.shown`)."""

    def format(self, record) -> str:
        return shown(super().format(record))


def _log_to(directory: Path, progress: bool):
    """campaign.log in the campaign folder, and short lines on stderr that do not break the bar."""
    from tqdm.auto import tqdm

    class TqdmHandler(logging.Handler):
        def emit(self, record):
            tqdm.write(self.format(record), file=sys.stderr)

    file_handler = logging.FileHandler(directory / "campaign.log", encoding="utf-8")
    file_handler.setFormatter(Shown("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handlers = [file_handler]
    if progress:
        console = TqdmHandler()
        console.setFormatter(Shown("%(message)s"))
        handlers.append(console)
    log.setLevel(logging.INFO)
    for h in handlers:
        log.addHandler(h)
    return handlers


def _locked(archive: Archive):
    try:
        return acquire(archive.dir)
    except ArchiveError:
        archive.close()
        raise


def prepare(config: CampaignConfig, seams: Seams | None) -> Seams:
    """The seams a campaign runs with, checked before anything is made or trained: the fitness
    function's ``check_config`` and, with workers, a train function a worker process can import."""
    budget.check_prices(config.budget)
    seams = seams or Seams.default(config)
    seams.check_config(config)
    if config.fitness.calibration:  # unreadable: one line, before anything is made
        noise.load_calibration(config.fitness.calibration, config.fitness.metric, len(config.training.seeds))
    if config.execution.workers > 1 or executors.remote(config):
        check_importable(seams.train, "train")
    t = config.training
    if t.gpus_per_candidate > 1 and t.isolation not in ("process", "none"):
        raise UserError(f"training.gpus_per_candidate {t.gpus_per_candidate}: each seed runs as a multi-process "
                        "job, which the sandbox cannot hold; the candidates' code would run in plain processes. "
                        "Accept that with training.isolation: process (or none for reviewed code only)")
    return seams


def _drive(archive: Archive, lock, config: CampaignConfig, proposer, seams: Seams, executor,
           progress: bool) -> dict:
    handlers = []
    try:
        save_yaml(config, archive.dir)
        archive.set_meta("seams", seams.describe())  # which functions this run calls
        handlers = _log_to(archive.dir, progress)
        proposer = proposer or make_proposer(config)
        return Campaign(archive, config, seams, proposer, executor=executor, progress=progress).run()
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()
        archive.close()
        release(lock, archive.dir)


def run_campaign(directory, config: CampaignConfig, *, proposer=None, seams: Seams | None = None,
                 executor=None, progress: bool = True) -> dict:
    """Start a campaign in ``directory`` (which must not hold one yet) and run it to the end.
    ``seams``: the functions it calls (default :meth:`Seams.default`); ``executor``: where workers
    train (default: ``execution.executor``'s, :func:`discovery.executors.make_executor`)."""
    config = config.resolved()
    proposer = proposer or make_proposer(config)  # a missing key fails here, before DIR is made
    seams = prepare(config, seams)
    executor = executor or executors.make_executor(config)  # Ray missing or unreachable: before DIR is made
    archive = Archive.create(directory, config.to_dict())
    return _drive(archive, _locked(archive), config, proposer, seams, executor, progress)


def resume_campaign(directory, *, proposer=None, seams: Seams | None = None, executor=None,
                    progress: bool = True, **changes) -> dict:
    """Continue the campaign in ``directory`` with its saved configuration (``changes``: settings
    by name, dotted for nested ones, e.g. ``candidates=10`` or ``**{"execution.workers": 4}``).
    An archive written before the config was nested holds flat settings: they are read as such
    and saved nested from now on."""
    archive = Archive.open(directory)
    lock = _locked(archive)
    try:
        config = CampaignConfig.from_dict(archive.config, warn=False)
        if changes:
            config = config.with_changes(changes)
        seams = prepare(config, seams)
        executor = executor or executors.make_executor(config)
        if config.to_dict() != archive.config:
            archive.set_meta("config", config.to_dict())
    except BaseException:
        archive.close()
        release(lock, archive.dir)
        raise
    return _drive(archive, lock, config, proposer, seams, executor, progress)
