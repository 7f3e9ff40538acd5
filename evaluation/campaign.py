"""A read-only view of a campaign directory for the evaluation commands (heldout, report).

The one adapter between :mod:`discovery.archive` (the SQLite archive, its rows and the resolved
campaign config) and evaluation: if the archive's columns or the config's fields change, this file
is the only one to update. The config is read back through
:meth:`discovery.config.CampaignConfig.from_dict`, which takes the nested form a campaign stores
and the flat keys of earlier versions. Nothing here writes to the archive.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from discovery.config import CampaignConfig


@dataclasses.dataclass
class CampaignResults:
    """What a campaign directory holds: its config and its archive rows (candidates and baselines)."""

    dir: Path
    config: CampaignConfig  # as the campaign ran it (resolved)
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
        return self.config.fitness.metric

    @property
    def proposer(self) -> str:
        """Who wrote the candidates, as a reader needs it: ``offline (evolve)`` for the offline
        proposer (whose config still carries the unused default ``model`` field), the model name
        and endpoint for ``openai``, else the proposer's name."""
        proposer = self.config.proposer
        if proposer.name == "evolve":
            return "offline (evolve)"
        if proposer.name == "openai":
            where = proposer.base_url or "api.openai.com"
            return f"{proposer.model or '?'} (OpenAI-compatible endpoint {where})"
        return proposer.name


def metric_means(row: dict) -> dict:
    """A row's metrics averaged over its finished seeds: ``metrics["mean"]`` as
    discovery.training.summarise stores it ({} for a row not trained yet)."""
    m = row.get("metrics")
    mean = m.get("mean") if isinstance(m, dict) else None
    return mean if isinstance(mean, dict) else {}


def seeds_done(row: dict) -> int | None:
    """How many training seeds finished for ``row`` (from ``metrics["per_seed"]``), None if unknown."""
    per_seed = (row.get("metrics") or {}).get("per_seed") if isinstance(row.get("metrics"), dict) else None
    if not isinstance(per_seed, list):
        return None
    return sum(1 for p in per_seed if isinstance(p, dict) and p.get("status") == "done")


class CampaignError(ValueError):
    """DIR holds no readable campaign."""


def campaign_config(config: dict | CampaignConfig) -> CampaignConfig:
    """The config an archive stores, as a :class:`~discovery.config.CampaignConfig` (nested, as a
    campaign writes it, or the flat keys of earlier versions); :class:`CampaignError` if unreadable."""
    if isinstance(config, CampaignConfig):
        return config
    try:
        return CampaignConfig.from_dict(config or {}, warn=False)
    except (ValueError, TypeError) as err:
        raise CampaignError(f"the campaign's config cannot be read: {err}") from None


def read_campaign(directory: str | Path) -> CampaignResults:
    """Open ``DIR/archive.sqlite`` (through discovery.archive) and return its config and rows."""
    from discovery.archive import DB_NAME, Archive

    if not (Path(directory) / DB_NAME).is_file():
        raise CampaignError(f"no campaign in {directory} (expected {Path(directory) / DB_NAME})")
    with Archive.open(directory) as archive:
        rows = archive.rows(order="id")
        config = archive.config or {}
    return CampaignResults(dir=Path(directory), config=campaign_config(config), rows=rows)


def used_settings(config: dict | CampaignConfig) -> dict:
    """What the search trained on: task names, the overrides every run got, seeds and betas.

    ``{"tasks": [name, ...], "overrides": sorted (key, value) pairs, "seeds": set, "betas": set}``;
    an empty ``betas`` means the task's default beta was used.
    """
    training = campaign_config(config).training
    return {"tasks": [training.task], "overrides": tuple(sorted(training.overrides.items())),
            "seeds": set(training.seeds), "betas": set() if training.beta is None else {float(training.beta)}}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
