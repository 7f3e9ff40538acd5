"""A read-only view of a campaign directory for the evaluation commands (heldout, report).

The one adapter between :mod:`discovery.archive` (the SQLite archive, its rows and the resolved
campaign config) and evaluation: if the archive's columns or the config's field names change,
this file is the only one to update. Nothing here writes to the archive.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

# discovery.config.CampaignConfig field names; the fallbacks keep older archives readable
SEED_KEYS = ("seeds", "train_seeds")   # training seeds ("seed" alone is the proposer's)
BETA_KEYS = ("beta", "betas")
TASK_KEYS = ("task", "tasks")
OVERRIDE_KEYS = ("overrides", "train_overrides", "task_overrides")


@dataclasses.dataclass
class Campaign:
    dir: Path
    config: dict
    rows: list[dict]        # every archive row, decoded, oldest first

    def baselines(self) -> list[dict]:
        return [r for r in self.rows if r.get("kind") == "baseline"]

    def candidates(self) -> list[dict]:
        return [r for r in self.rows if r.get("kind") != "baseline"]

    def leaderboard(self) -> list[dict]:
        """Finished rows with a fitness, baselines included, best first."""
        done = [r for r in self.rows if r.get("status") == "done" and _finite(r.get("fitness"))]
        return sorted(done, key=lambda r: (-r["fitness"], r["id"]))

    def top(self, k: int) -> list[dict]:
        return [r for r in self.leaderboard() if r.get("kind") != "baseline"][:k]

    def folder(self, row: dict) -> Path | None:
        return self.dir / row["folder"] if row.get("folder") else None

    @property
    def metric(self) -> str:
        return str(find_key(self.config, ("metric", "fitness_metric")) or "win_rate")

    @property
    def proposer(self) -> str:
        """Who wrote the candidates, as a reader needs it: ``offline (evolve)`` for the offline
        proposer (whose config still carries the unused default ``model`` field), the model name
        and endpoint for ``openai``, else the proposer's name."""
        name = self.config.get("proposer")
        if name == "evolve":
            return "offline (evolve)"
        if name == "openai":
            where = self.config.get("base_url") or "api.openai.com"
            return f"{self.config.get('model') or '?'} (OpenAI-compatible endpoint {where})"
        return str(name) if name else "not recorded"


def metric_means(row: dict) -> dict:
    """A row's metrics averaged over its finished seeds: ``metrics["mean"]`` as
    discovery.training.summarise stores it (a flat dict, as older archives hold, is taken as is)."""
    m = row.get("metrics") or {}
    if not isinstance(m, dict):
        return {}
    return m["mean"] if isinstance(m.get("mean"), dict) else {k: v for k, v in m.items() if k != "per_seed"}


def seeds_done(row: dict) -> int | None:
    """How many training seeds finished for ``row`` (from ``metrics["per_seed"]``), None if unknown."""
    per_seed = (row.get("metrics") or {}).get("per_seed") if isinstance(row.get("metrics"), dict) else None
    if not isinstance(per_seed, list):
        return None
    return sum(1 for p in per_seed if isinstance(p, dict) and p.get("status") == "done")


class CampaignError(ValueError):
    """DIR holds no readable campaign."""


def read_campaign(directory: str | Path) -> Campaign:
    """Open ``DIR/archive.sqlite`` (through discovery.archive) and return its rows."""
    from discovery.archive import DB_NAME, Archive

    if not (Path(directory) / DB_NAME).is_file():
        raise CampaignError(f"no campaign in {directory} (expected {Path(directory) / DB_NAME})")
    with Archive.open(directory) as archive:
        rows = archive.rows(order="id")
        config = archive.config or {}
    return Campaign(dir=Path(directory), config=config, rows=rows)


def find_key(config, keys):
    """The first value under any of ``keys``, searching nested dicts breadth first."""
    queue = [config]
    while queue:
        node = queue.pop(0)
        if isinstance(node, dict):
            for k in keys:
                if node.get(k) is not None:
                    return node[k]
            queue.extend(v for v in node.values() if isinstance(v, dict))
    return None


def find_all(config, keys) -> list:
    """Every value under any of ``keys``, at any depth (lists are flattened)."""
    out = []
    if isinstance(config, dict):
        for k, v in config.items():
            if k in keys and v is not None:
                out.extend(v if isinstance(v, (list, tuple)) else [v])
            elif isinstance(v, dict):
                out.extend(find_all(v, keys))
    return out


def used_settings(config: dict) -> dict:
    """What the search trained on: task names, the overrides every run got, seeds and betas.

    ``{"tasks": [name, ...], "overrides": sorted (key, value) pairs, "seeds": set, "betas": set}``;
    an empty ``betas`` means the task's default beta was used.
    """
    tasks = [t for t in find_all(config, TASK_KEYS) if isinstance(t, str)] or ["synthetic"]
    overrides = find_key(config, OVERRIDE_KEYS) or {}
    seeds = find_all(config, SEED_KEYS) or find_all(config, ("seed",)) or [0]
    return {"tasks": list(dict.fromkeys(tasks)),
            "overrides": tuple(sorted(overrides.items())) if isinstance(overrides, dict) else (),
            "seeds": {int(s) for s in seeds if isinstance(s, (int, float))},
            "betas": {float(b) for b in find_all(config, BETA_KEYS) if isinstance(b, (int, float))}}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
