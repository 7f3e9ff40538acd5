"""A discovery campaign: propose, validate, deduplicate, train, record, feed back; resumable.

::

    baselines (DPO, IPO, LRML) -> for each of N candidates:
        context = archive view -> proposer -> row "proposed"  (written before any work)
        -> sandbox validation  -> "invalid" with the reason, or
        -> functional fingerprint -> "duplicate" of an earlier row, or
        -> "training": the inner loop on every seed -> "done" with fitness, or "failed"

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
(:func:`lock_state`). ``DIR/config.yaml`` is the resolved config, for people.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

from discovery import training
from discovery.archive import FINAL, Archive, ArchiveError
from discovery.config import CampaignConfig, save_yaml
from discovery.parsing import slug
from discovery.proposal import Proposal
from discovery.proposers import make_proposer
from discovery.seams import Seams, check_importable, importable_name
from discovery.text import (MAX_CODE_CHARS, MAX_PROMPT_CHARS, MAX_REPLY_CHARS, MAX_THOUGHT_CHARS,
                            cap, clean, shown)

log = logging.getLogger("discovery")

__all__ = ["CampaignConfig", "run_campaign", "resume_campaign", "Seams"]


class Campaign:
    """One run of the loop over one archive (see the module docstring)."""

    def __init__(self, archive: Archive, config: CampaignConfig, seams: Seams, proposer,
                 executor=None, progress: bool = True):
        self.archive, self.config, self.seams, self.proposer = archive, config, seams, proposer
        self.executor = executor or training.LocalExecutor.for_config(config)
        self.beta = config.training.beta if config.training.beta is not None else 0.1
        self.jobs: dict[int, object] = {}  # row id -> the executor's handle
        self.bar = None
        self.progress = progress

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

    def start(self, cid: int) -> None:
        """-> training: discard any earlier partial output, then train (here, or in a worker)."""
        row = self.archive.get(cid)
        folder = self.folder(row)
        for old in list(folder.glob("seed-*")) + [folder / training.RESULT]:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        attempt = self.archive.start_training(cid)
        log.info("#%d %s: training on seeds %s (attempt %d)", cid, row["name"],
                 list(self.config.training.seeds), attempt)
        spec = training.spec_for(self.candidate(row), folder, self.config, self.beta,
                                 train=importable_name(self.seams.train))
        if self.config.execution.workers > 1:
            self.jobs[cid] = self.executor.submit(spec)
        else:
            self.finish(cid, training.train_seeds(spec, self.seams.train))

    def finish(self, cid: int, results: list[dict]) -> None:
        """training -> done (with fitness) | failed (with the reason of the first failed seed)."""
        row = self.archive.get(cid)
        timings = dict(row["timings"] or {})
        timings["train_s"] = round(sum((r.get("seconds") or {}).get("total", 0.0) for r in results), 3)
        metrics = training.summarise(results)
        failed = [r for r in results if r.get("status") != "done"]
        status, reason, fitness, se = "done", None, None, None
        if failed or len(results) != len(self.config.training.seeds):
            status = "failed"
            reason = failed[0].get("reason") if failed else "training produced no result"
            if failed and "seed" in failed[0]:
                reason = f"seed {failed[0]['seed']}: {reason}"
        else:
            try:
                fitness, se = self.seams.score(results, self.config)
            except Exception as err:  # noqa: BLE001 - a metric that is missing fails the row
                status, reason = "failed", (f"fitness {self.config.fitness.function!r}: "
                                            f"{type(err).__name__}: {err}")
        self.archive.update(cid, expect="training", status=status, reason=reason, metrics=metrics,
                            fitness=fitness, fitness_se=se, timings=timings, finished_at=time.time())
        (self.folder(row) / "metrics.json").write_text(json.dumps(
            {"status": status, "reason": reason, "fitness": fitness, "fitness_se": se, **metrics},
            indent=2, default=str))
        score = f"fitness {fitness:.4f}" + (f" ± {se:.4f}" if se is not None else "") \
            if fitness is not None else reason
        log.info("#%d %s: %s: %s", cid, row["name"], status, score)
        self.tick()

    def advance(self, cid: int) -> None:
        """Take row ``cid`` from wherever it is to a final state (or into a worker)."""
        row = self.archive.get(cid)
        if row["status"] == "training":
            if row["attempts"] >= self.config.training.max_attempts:
                self.archive.update(cid, status="failed", finished_at=time.time(), reason=(
                    f"training was interrupted {row['attempts']} times (the process died each "
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
            proposer=proposal.proposer, parents=proposal.parents,
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

    def wait(self, below: int) -> None:
        """Collect finished worker jobs until fewer than ``below`` are running."""
        while len(self.jobs) >= below and self.jobs:
            for cid, handle in list(self.jobs.items()):
                results = self.executor.poll(handle)
                if results is not None:
                    del self.jobs[cid]
                    self.finish(cid, results)
            if len(self.jobs) >= below:
                time.sleep(0.2)

    def run(self) -> dict:
        from tqdm.auto import tqdm
        a, cfg = self.archive, self.config
        for name in cfg.baselines:
            if not any(r["name"] == name for r in a.rows(kind="baseline")):
                from objectives.baselines import REGISTRY
                a.add(kind="baseline", name=name, code=REGISTRY.get(name).source,
                      thought=REGISTRY.get(name).description, proposer="baseline")
        total = len(cfg.baselines) + cfg.candidates
        done = a.count(status=FINAL)
        self.bar = tqdm(total=total, initial=min(done, total), desc="campaign", unit="cand",
                        file=sys.stderr, dynamic_ncols=True, disable=not self.progress)
        try:
            for row in a.rows(status=("proposed", "training")):  # baselines first, then leftovers
                self.wait(cfg.execution.workers)
                self.advance(row["id"])
            if cfg.execution.workers > 1:  # the proposer should see the baselines' fitness
                self.wait(1)
            while a.count(kind="candidate") < cfg.candidates:
                self.wait(cfg.execution.workers)
                context = a.context(task=cfg.training.task, beta=self.beta, metric=cfg.fitness.metric,
                                    n_best=cfg.prompt.n_best, n_recent=cfg.prompt.n_recent,
                                    n_failures=cfg.prompt.n_failures)
                cid = self.record(self.proposer.propose(context))
                self.advance(cid)
            self.wait(1)
        finally:
            for handle in self.jobs.values():
                self.executor.cancel(handle)
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
        proposer=clean(p.proposer)[:100], parents=tuple(clean(x)[:200] for x in p.parents),
        prompt=None if p.prompt is None else cap(clean(p.prompt), MAX_PROMPT_CHARS),
        reply=None if p.reply is None else cap(clean(p.reply), MAX_REPLY_CHARS),
        prompt_tokens=count(p.prompt_tokens), completion_tokens=count(p.completion_tokens))


def summary(archive: Archive) -> dict:
    board = archive.leaderboard()
    baselines = {r["name"]: {"fitness": r["fitness"], "fitness_se": r["fitness_se"], "status": r["status"]}
                 for r in archive.rows(kind="baseline")}
    best = next((r for r in board if r["kind"] == "candidate"), None)
    return {"dir": str(archive.dir), "counts": archive.counts(), "baselines": baselines,
            "best": None if best is None else {k: best[k] for k in (
                "id", "name", "fitness", "fitness_se", "thought", "folder")}}


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


LOCK = "campaign.lock"


def _lock(directory: Path):
    """Hold ``DIR/campaign.lock`` for the campaign's lifetime: a second ``disco resume`` of a running
    campaign would train its rows twice. The OS drops the lock when the holder dies (even by -9);
    the holder removes the file when it stops (:func:`_unlock`), so a file left behind with no
    holder is a crashed campaign's. The file holds the holder's pid (see :func:`lock_state`)."""
    import fcntl
    path = directory / LOCK
    for attempt in range(20):  # a `disco status` probing the lock holds it for a moment
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            if attempt < 5:
                time.sleep(0.05)
                continue
            raise ArchiveError(f"{directory} is being run by another process (pid {holder}); "
                               "wait for it or stop it before resuming") from None
        try:  # the file we locked may have been removed by a holder that was stopping: lock the new one
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    else:
        raise ArchiveError(f"could not lock {path}: it keeps being replaced")
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _unlock(handle, directory: Path) -> None:
    """Remove ``DIR/campaign.lock`` (still holding it, so no one else's), then let it go."""
    try:
        (directory / LOCK).unlink(missing_ok=True)
    finally:
        handle.close()


def lock_state(directory) -> tuple[bool, str | None]:
    """(whether a live process holds ``DIR/campaign.lock``, the pid written in it). Probing takes the
    lock for a moment when no one holds it (:func:`_lock` waits that out); it never creates the file."""
    import fcntl
    try:
        handle = open(Path(directory) / LOCK)
    except FileNotFoundError:
        return False, None
    with handle:
        pid = handle.read().strip() or None
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True, pid
        return False, pid


def _locked(archive: Archive):
    try:
        return _lock(archive.dir)
    except ArchiveError:
        archive.close()
        raise


def prepare(config: CampaignConfig, seams: Seams | None) -> Seams:
    """The seams a campaign runs with, checked before anything is made or trained: the fitness
    function's ``check_config`` and, with workers, a train function a worker process can import."""
    seams = seams or Seams.default(config)
    seams.check_config(config)
    if config.execution.workers > 1:
        check_importable(seams.train, "train")
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
        _unlock(lock, archive.dir)


def run_campaign(directory, config: CampaignConfig, *, proposer=None, seams: Seams | None = None,
                 executor=None, progress: bool = True) -> dict:
    """Start a campaign in ``directory`` (which must not hold one yet) and run it to the end.
    ``seams``: the functions it calls (default :meth:`Seams.default`); ``executor``: where workers
    train (default :class:`~discovery.training.LocalExecutor`)."""
    config = config.resolved()
    proposer = proposer or make_proposer(config)  # a missing key fails here, before DIR is made
    seams = prepare(config, seams)
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
        if config.to_dict() != archive.config:
            archive.set_meta("config", config.to_dict())
    except BaseException:
        archive.close()
        _unlock(lock, archive.dir)
        raise
    return _drive(archive, lock, config, proposer, seams, executor, progress)
