"""Deterministic stand-ins for inner_loop.runner.run_candidate, shared by the evaluation tests."""

import dataclasses

import numpy as np

from discovery.archive import Archive
from discovery.config import CampaignConfig

# the "true" win rate of each objective; a seed adds the same offset to every objective
QUALITY = {"dpo": 0.60, "ipo": 0.55, "lrml": 0.62, "good": 0.70, "meh": 0.58}
SEED_EFFECT = {0: 0.00, 1: 0.05, 2: -0.04, 3: 0.02, 4: -0.01, 5: 0.03, 1000: 0.01, 1001: -0.02}


@dataclasses.dataclass
class FakeResult:
    status: str
    reason: str | None
    metrics: dict
    seconds: float = 0.01

    def to_dict(self):
        return dataclasses.asdict(self)


class FakeRunner:
    """Records its calls; objective "boom" fails, "raise" raises, source code is named by its def."""

    def __init__(self, per_prompt: int = 0, fail_seeds=()):
        self.calls = []
        self.per_prompt = per_prompt
        self.fail_seeds = set(fail_seeds)

    def __call__(self, objective, task="synthetic", beta=None, seed=0, out_dir=None, **overrides):
        self.calls.append(dict(objective=objective, task=task, beta=beta, seed=seed, out_dir=out_dir,
                               **overrides))
        name = objective.split("def ", 1)[1].split("(", 1)[0] if "def " in objective else objective
        if name == "raise":
            raise RuntimeError("worker died")
        if name == "boom" or seed in self.fail_seeds:
            return FakeResult("failed", "non-finite loss (nan) at step 3", {})
        b = 0.1 if beta is None else beta
        win = QUALITY[name] + SEED_EFFECT[seed] - 0.1 * abs(np.log(b / 0.1))
        kl = 2.0 / b * (1 + QUALITY[name] - 0.6)
        metrics = {"win_rate": win, "win_rate_se": 0.02, "reward": 2 * win, "reward_se": 0.05,
                   "ref_reward": 1.0 + SEED_EFFECT[seed], "kl": kl, "n": self.per_prompt or 64}
        if self.per_prompt:
            # outcomes per prompt: the same prompt difficulty for every objective on this seed
            rng = np.random.default_rng(seed)
            difficulty = rng.normal(0, 0.3, size=self.per_prompt)
            p = np.clip(win + difficulty, 0, 1)
            metrics["per_prompt"] = {"win_rate": p.tolist()}
        return FakeResult("done", None, metrics)


# a campaign's config as the archive stores it (discovery.config.CampaignConfig.to_dict: nested)
CONFIG = CampaignConfig.from_dict({"proposer": {"seed": 7}, "fitness": {"metric": "win_rate"},
                                   "training": {"task": "synthetic", "seeds": [0], "beta": 0.1,
                                                "overrides": {"max_steps": 20}}}).to_dict()
# the same in the flat keys of earlier versions (an archive written before the config was nested)
FLAT_CONFIG = {"task": "synthetic", "seeds": [0], "seed": 7, "beta": 0.1, "metric": "win_rate",
               "overrides": {"max_steps": 20}}


def config_with(changes: dict) -> dict:
    """:data:`CONFIG` with ``changes`` (dotted keys: ``{"training.seeds": [0, 1, 2]}``)."""
    return CampaignConfig.from_dict(CONFIG).with_changes(changes).to_dict()


KL = {"dpo": 12.0, "ipo": 9.5, "lrml": 30.25, "good": 7.75, "meh": 14.0}
OFFSETS = (0.0, 0.03, -0.03, 0.01, -0.01)  # per-seed offsets of the win rate around the row's fitness


def seed_results(name, fitness, seeds):
    """What discovery.training.train_seeds returns for a finished row: one result per seed, whose
    win rates average to ``fitness``."""
    offs = [OFFSETS[i % len(OFFSETS)] for i in range(len(seeds))]
    offs = [o - sum(offs) / len(offs) for o in offs]
    return [{"seed": s, "status": "done", "reason": None, "steps": 20, "seconds": 0.1, "losses": [0.69, 0.5],
             "metrics": {"win_rate": fitness + o, "win_rate_se": 0.02, "reward": fitness + 0.2 + o,
                         "reward_se": 0.01, "ref_reward": 0.5, "kl": KL[name] + 10 * o, "kl_se": 0.5}}
            for s, o in zip(seeds, offs)]


def make_campaign(directory, config=CONFIG):
    """A finished campaign: three baselines and three candidates (one failed), as the archive stores
    them (``metrics`` is discovery.training.summarise's shape, fitness and its se as mean_metric's)."""
    from discovery.training import summarise

    seeds = list(CampaignConfig.from_dict(config, warn=False).training.seeds)

    def finish(a, cid, name, fitness):
        results = seed_results(name, fitness, seeds)
        wins = [r["metrics"]["win_rate"] for r in results]
        se = float(np.std(wins, ddof=1) / np.sqrt(len(wins))) if len(wins) > 1 else 0.02
        a.update(cid, status="done", fitness=fitness, fitness_se=se, metrics=summarise(results))

    with Archive.create(directory, config) as a:
        for name, fitness in (("dpo", 0.60), ("ipo", 0.55), ("lrml", 0.62)):
            finish(a, a.add(kind="baseline", name=name, code=name), name, fitness)
        for name, fitness, status in (("good", 0.71, "done"), ("meh", 0.59, "done"), ("boom", None, "failed")):
            cid = a.add(kind="candidate", name=name, code=f"def {name}(rho, beta):\n    return rho\n",
                        thought=f"{name} idea")
            if status == "done":
                finish(a, cid, name, fitness)
            else:
                a.update(cid, status=status, reason="non-finite loss", metrics=summarise(
                    [{"seed": seeds[0], "status": "failed", "reason": "non-finite loss", "metrics": {}}]))
    return directory


FAKE_RUNNER = FakeRunner(per_prompt=8)  # by name, "tests.evaluation.fakes:FAKE_RUNNER", for executor workers
