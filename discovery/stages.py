"""A row's training in stages, the part of :class:`discovery.campaign.Campaign` that moves a row from
``training`` to ``done`` / ``failed`` / ``duplicate``.

Stages (``metrics["stage"]`` in the archive, so a resumed campaign continues the same stage):

``screen``  successive halving: a candidate first trains on the first ``training.screen_seeds``
            seeds and goes on only when its paired difference to DPO there is not clearly negative;
``pilot``   without screening, a candidate with several seeds first trains one;
``full``    every seed (baselines start here);
``extra``   ``training.best_extra_seeds`` more seeds for a candidate that would become the best.

After the first stage (``screen`` or ``pilot``) a candidate whose seed reproduced an earlier row's
training (:func:`discovery.pilot.trains_like`) ends as a duplicate, its other seeds unspent. With
``training.gpus_per_candidate`` > 1 each seed trains as one multi-process job
(:data:`DISTRIBUTED`). A row trains here (one worker) or through the executor.
"""

from __future__ import annotations

import json
import logging
import shutil
import time

from discovery import executors, noise, pilot, training
from discovery.seams import importable_name

log = logging.getLogger("discovery")

DISTRIBUTED = "inner_loop.distributed:run_distributed"  # gpus_per_candidate > 1
STAGE_WORDS = {"pilot": "one-seed pilot", "screen": "screening", "full": "promoted after screening", "extra": "extra seeds of a would-be best"}


class StagedTraining:
    """The stage machinery; the campaign supplies ``archive``, ``config``, ``seams``, ``beta``,
    ``executor``, ``jobs``, ``folder``, ``candidate`` and ``tick``."""

    def first_stage(self, row: dict) -> dict:
        """What a row trains on first: a candidate the first ``training.screen_seeds`` seeds when
        screening is on (:meth:`TrainingConfig.screens`), everything else every seed."""
        t = self.config.training
        if row["kind"] == "candidate" and t.screens():
            return {"name": "screen", "seeds": list(t.seeds[:t.screen_seeds]), "attempts_before": 0}
        if row["kind"] == "candidate" and len(t.seeds) > 1:  # a one-seed pilot first (discovery.pilot)
            return {"name": "pilot", "seeds": [t.seeds[0]], "attempts_before": 0}
        return {"name": "full", "seeds": list(t.seeds), "attempts_before": 0}

    def stage_of(self, row: dict) -> dict:
        """The row's stage as the archive holds it (``metrics["stage"]``), else its first stage.
        ``attempts_before``: the row's ``attempts`` when the stage began, so each stage gets
        ``training.max_attempts`` starts of its own."""
        return (row["metrics"] or {}).get("stage") or self.first_stage(row)

    def noise_record(self) -> dict:
        """The campaign's noise record (:func:`discovery.noise.campaign_noise`), from the archive."""
        return noise.campaign_noise(self.config, self.archive.rows(kind="baseline"))

    def store_noise(self) -> dict:
        record = self.noise_record()
        if self.archive.meta("noise") != json.loads(json.dumps(record, sort_keys=True)):
            self.archive.set_meta("noise", record)
        return record

    def start(self, cid: int) -> None:
        """-> training: the seeds of the row's stage it has not finished (their partial output is
        discarded first; seeds finished in an earlier stage are kept), here or in a worker."""
        row = self.archive.get(cid)
        folder = self.folder(row)
        stage = self.stage_of(row)
        finished = [p for p in (row["metrics"] or {}).get("per_seed") or [] if p.get("status") == "done"]
        todo = [s for s in stage["seeds"] if s not in {p.get("seed") for p in finished}]
        for old in [folder / f"seed-{s}" for s in todo] + [folder / training.RESULT]:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        self.archive.update(cid, metrics={**training.summarise([], finished), "stage": stage})
        attempt = self.archive.start_training(cid)
        log.info("#%d %s: training on seeds %s%s (attempt %d)", cid, row["name"], todo,
                 "" if stage["name"] == "full" and not finished else f" ({STAGE_WORDS[stage['name']]})",
                 attempt - stage.get("attempts_before", 0))
        train, train_kwargs = self.seams.train, dict(self.seams.train_kwargs)
        n = self.config.training.gpus_per_candidate
        if n > 1:  # each seed one N-process job (inner_loop.distributed), its own process group
            from discovery.seams import import_name
            train = import_name(DISTRIBUTED)
            train_kwargs.update(nproc=n, drop_env=[self.config.proposer.api_key_env,
                                                   self.config.fitness.judge.api_key_env])
        spec = training.spec_for(self.candidate(row), folder, self.config, self.beta,
                                 train=importable_name(train) if n == 1 else DISTRIBUTED, seeds=todo,
                                 train_kwargs=train_kwargs)
        if self.config.execution.workers > 1 or executors.remote(self.config):
            self.jobs[cid] = self.executor.submit(spec)
        else:
            self.finish(cid, training.train_seeds(spec, train))

    def finish(self, cid: int, results: list[dict]) -> None:
        """training -> done (with fitness) | failed (with the reason of the first failed seed), or
        on to the row's next stage: promotion after screening, extra seeds for a would-be best."""
        row = self.archive.get(cid)
        stage = self.stage_of(row)
        timings = dict(row["timings"] or {})
        timings["train_s"] = round(timings.get("train_s", 0.0) + sum(
            (r.get("seconds") or {}).get("total", 0.0) for r in results), 3)
        new = {r.get("seed") for r in results}
        prior = [p for p in (row["metrics"] or {}).get("per_seed") or []
                 if p.get("status") == "done" and p.get("seed") not in new]
        metrics = {**training.summarise(results, prior), "stage": stage}
        if self.trains_like_earlier(cid, row, stage, results, metrics, timings):
            return
        finished = noise.per_seed_entries({"metrics": metrics})
        failed = [r for r in results if r.get("status") != "done"]
        missing = [s for s in stage["seeds"] if s not in finished]
        status, reason, fitness, se = "done", None, None, None
        main = [s for s in stage["seeds"] if s in self.config.training.seeds]
        if (failed or missing) and not (stage["name"] == "extra" and all(s in finished for s in main)):
            status = "failed"
            reason = failed[0].get("reason") if failed else "training produced no result"
            if failed and "seed" in failed[0]:
                reason = f"seed {failed[0]['seed']}: {reason}"
        else:
            if failed or missing:  # an extra seed of a would-be best failed: scored on the rest
                first = failed[0] if failed else {"seed": missing[0], "reason": "no result"}
                reason = (f"best_extra_seeds: seed {first.get('seed')} failed ({first.get('reason')}); "
                          "scored on the seeds that finished")
            scored = results if not prior else \
                [p for p in metrics["per_seed"] if p.get("status") == "done"]
            scored = [r for r in scored if r.get("status") == "done"]
            try:
                fitness, se = self.seams.score(scored, self.config)
            except Exception as err:  # noqa: BLE001 - a metric that is missing fails the row
                status, reason = "failed", (f"fitness {self.config.fitness.function!r}: "
                                            f"{type(err).__name__}: {err}")
        if status == "done" and stage["name"] == "screen":
            ref = noise.reference_row(self.archive.rows(kind="baseline"))
            paired = noise.paired_to({"metrics": metrics}, ref, self.config.fitness.metric,
                                     self.noise_record())
            decision = {"seeds": list(stage["seeds"]), "paired": paired,
                        "promoted": not noise.clearly_negative(paired)}
            rest = [s for s in self.config.training.seeds if s not in stage["seeds"]]
            if decision["promoted"]:
                why = ("no DPO result to pair with" if paired is None else
                       f"paired difference to DPO {noise.interval_text(paired)} ({paired['what']})"
                       + ("" if paired.get("hi") is not None else ": no interval, cannot tell"))
                log.info("#%d %s: promoted after screening on seeds %s (%s); training on seeds %s",
                         cid, row["name"], stage["seeds"], why, rest)
                self.next_stage(cid, row, metrics, timings, {
                    "name": "full", "seeds": list(self.config.training.seeds), "screen": decision})
                return
            reason = (f"screened out: paired difference to DPO on seed(s) {', '.join(map(str, stage['seeds']))} "
                      f"{noise.interval_text(paired)} ({paired['what']}) is clearly negative; not trained "
                      f"on seed(s) {', '.join(map(str, rest))}")
            metrics["stage"] = {**stage, "screen": decision, "outcome": "screened out"}
        elif status == "done" and stage["name"] == "pilot":
            self.next_stage(cid, row, metrics, timings, {"name": "full", "seeds": list(self.config.training.seeds)})
            return
        elif (status == "done" and stage["name"] == "full" and row["kind"] == "candidate"
              and self.config.training.best_extra_seeds > 0 and self.would_be_best(cid, fitness)):
            extra = list(self.config.training.extra_seeds())
            log.info("#%d %s: fitness %.4f would make it the best: training extra seeds %s first",
                     cid, row["name"], fitness, extra)
            self.next_stage(cid, row, metrics, timings, {
                **{k: v for k, v in stage.items() if k == "screen"}, "name": "extra",
                "seeds": list(self.config.training.seeds) + extra, "fitness_before": fitness})
            return
        self.archive.update(cid, expect="training", status=status, reason=reason, metrics=metrics,
                            fitness=fitness, fitness_se=se, timings=timings, finished_at=time.time())
        (self.folder(row) / "metrics.json").write_text(json.dumps(
            {"status": status, "reason": reason, "fitness": fitness, "fitness_se": se, **metrics},
            indent=2, default=str))
        scored_row = {**row, "metrics": metrics, "fitness": fitness, "fitness_se": se}
        score = (f"fitness {noise.fitness_text(scored_row, self.config.fitness.function)}"
                 if fitness is not None else reason)
        if fitness is not None and reason:
            score += f"; {reason}"
        log.info("#%d %s: %s: %s", cid, row["name"], status, score)
        self.tick()

    def trains_like_earlier(self, cid: int, row: dict, stage: dict, results: list[dict], metrics: dict,
                            timings: dict) -> bool:
        """A candidate whose first-stage seed reproduced an earlier row's training
        (:func:`discovery.pilot.trains_like`) becomes a duplicate of it, its other seeds unspent."""
        if row["kind"] != "candidate" or stage["name"] not in ("pilot", "screen") or not results \
                or results[0].get("status") != "done":
            return False
        like = pilot.trains_like(results[0], [r for r in self.archive.rows() if r["id"] < cid])
        if like is None:
            return False
        reason = pilot.message(*like)
        self.archive.update(cid, expect="training", status="duplicate", duplicate_of=like[0], reason=reason,
                            metrics=metrics, timings=timings, finished_at=time.time())
        log.info("#%d %s: %s", cid, row["name"], reason)
        self.tick()
        return True

    def next_stage(self, cid: int, row: dict, metrics: dict, timings: dict, stage: dict) -> None:
        """Record the row's next stage in the archive (still ``training``), then train it."""
        stage = {**stage, "attempts_before": self.archive.get(cid)["attempts"]}
        self.archive.update(cid, expect="training", metrics={**metrics, "stage": stage}, timings=timings)
        self.start(cid)

    def would_be_best(self, cid: int, fitness: float) -> bool:
        """Whether ``fitness`` beats every finished candidate that was not screened out."""
        others = [r["fitness"] for r in self.archive.rows(kind="candidate", status="done")
                  if r["id"] != cid and r["fitness"] is not None and not noise.screened_out(r)]
        return not others or fitness > max(others)

