"""What a campaign has spent, against its caps (``budget`` in :class:`~discovery.config.CampaignConfig`).

Four quantities, each read from the archive, so that a resumed campaign counts what earlier runs
spent::

    tokens  prompt + completion tokens of every row (the proposer's calls), plus other model calls
            recorded with :func:`record_usage` (archive meta "other_usage")
    cost    those tokens priced by budget.prices[model] (USD per 1M prompt / completion tokens); a row
            is priced by the model in its own config (the model it was proposed with); a model
            missing from prices costs nothing and is named "unpriced"
    wall    seconds the campaign has run, summed over its runs and resumes (archive meta
            "wall_seconds", kept up to date by the running campaign)
    train   seconds of training: every stage and seed of every row (``timings["train_s"]``: each
            training result's ``seconds["total"]``, evaluation included), counted when a stage ends

:func:`exceeded` says which cap is reached (in words); the campaign checks it before every new
piece of work (a proposal, or a row left over from a crash) and stops cleanly at a cap
(:mod:`discovery.campaign`). :func:`words` is the one line ``disco status`` and the prompt show.
"""

from __future__ import annotations

import dataclasses
import json
import math

from inner_loop.overrides import UserError

# cap field -> (what it caps, the Spent attribute it compares)
CAPS = {"max_tokens": "tokens", "max_cost": "cost", "max_wall_seconds": "wall_seconds",
        "max_train_seconds": "train_seconds"}
OTHER_USAGE = "other_usage"  # archive meta: {model: [prompt tokens, completion tokens]}
WALL = "wall_seconds"        # archive meta: seconds the campaign has run, over all its runs


@dataclasses.dataclass(frozen=True)
class Spent:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    unpriced: tuple[str, ...] = ()   # models whose tokens were counted at no cost
    wall_seconds: float = 0.0
    train_seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "unpriced": list(self.unpriced), "tokens": self.tokens}


def check_prices(budget) -> None:
    """A :class:`UserError` unless ``budget.prices`` maps model names to two numbers >= 0."""
    prices = budget.prices
    if not isinstance(prices, dict):
        raise UserError(f"budget.prices must map model names to [price per 1M prompt tokens, per 1M "
                        f"completion tokens], not {prices!r}")
    for model, price in prices.items():
        ok = (isinstance(price, (list, tuple)) and len(price) == 2
              and all(isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and p >= 0
                      for p in price))
        if not ok:
            raise UserError(f"budget.prices.{model} must be [price per 1M prompt tokens, per 1M completion "
                            f"tokens], two numbers >= 0, not {price!r}")


def unpriced_warning(config) -> str | None:
    """A warning when ``budget.max_cost`` is set but the proposer's model has no price (its tokens
    would cost nothing, so the cap could never be reached by them)."""
    if config.budget.max_cost is None or config.proposer.name == "evolve":
        return None
    if config.proposer.model in (config.budget.prices or {}):
        return None
    return (f"budget.max_cost is set but budget.prices has no price for model {config.proposer.model!r}: "
            f"its tokens are counted as unpriced (cost 0); set budget.prices, e.g. --set "
            f"'budget.prices={{\"{config.proposer.model}\": [0.15, 0.6]}}' (USD per 1M prompt, completion tokens)")


def record_usage(archive, model: str, prompt_tokens: int | None, completion_tokens: int | None) -> None:
    """Count a model call that belongs to no row (a lessons summary, ...) toward the token and cost
    budgets (archive meta ``"other_usage"``)."""
    usage = archive.meta(OTHER_USAGE) or {}
    have = usage.get(model) or [0, 0]
    usage[model] = [have[0] + int(prompt_tokens or 0), have[1] + int(completion_tokens or 0)]
    archive.set_meta(OTHER_USAGE, usage)


def _row_model(row_config: dict, default: str) -> str:
    config = row_config or {}
    return (config.get("proposer") or {}).get("model") or config.get("model") or default


def _train_seconds(timings: dict, metrics: dict | None) -> float:
    if isinstance(timings.get("train_s"), (int, float)):
        return float(timings["train_s"])
    # an archive written before train_s: the per-seed seconds of the results it kept
    return sum(float((p.get("seconds") or {}).get("total") or 0.0)
               for p in (metrics or {}).get("per_seed") or [] if isinstance(p, dict))


def spent(archive, config) -> Spent:
    """What the campaign in ``archive`` has spent so far (see the module docstring); prices from
    ``config.budget.prices``, the model of a row without one in its config: ``config.proposer.model``."""
    prices = config.budget.prices or {}
    per_model: dict[str, list[int]] = {}
    train = 0.0
    query = "SELECT prompt_tokens, completion_tokens, config, timings, " \
            "CASE WHEN timings LIKE '%\"train_s\"%' THEN NULL ELSE metrics END AS metrics FROM candidates"
    for r in archive.db.execute(query):
        timings = json.loads(r["timings"] or "{}")
        train += _train_seconds(timings, json.loads(r["metrics"]) if r["metrics"] else None)
        if r["prompt_tokens"] or r["completion_tokens"]:
            model = _row_model(json.loads(r["config"] or "{}"), config.proposer.model)
            counts = per_model.setdefault(model, [0, 0])
            counts[0] += int(r["prompt_tokens"] or 0)
            counts[1] += int(r["completion_tokens"] or 0)
    for model, (p, c) in (archive.meta(OTHER_USAGE) or {}).items():
        counts = per_model.setdefault(model, [0, 0])
        counts[0] += int(p)
        counts[1] += int(c)
    cost, unpriced = 0.0, []
    for model, (p, c) in per_model.items():
        price = prices.get(model)
        if price is None:
            if p or c:
                unpriced.append(model)
            continue
        cost += p * float(price[0]) / 1e6 + c * float(price[1]) / 1e6
    return Spent(prompt_tokens=sum(p for p, _ in per_model.values()),
                 completion_tokens=sum(c for _, c in per_model.values()), cost=cost,
                 unpriced=tuple(sorted(unpriced)), wall_seconds=float(archive.meta(WALL) or 0.0),
                 train_seconds=train)


def _number(key: str, value: float) -> str:
    """A spent amount or a cap as people read it: 10,240 tokens, $0.0312, 3,600 s."""
    if key == "max_tokens":
        return f"{int(value):,}"
    if key == "max_cost":
        return f"${value:,.4f}" if 0 < value < 0.01 else f"${value:,.2f}"
    return f"{value:,.0f} s" if value >= 100 else f"{value:.3g} s"


UNITS = {"max_tokens": " tokens", "max_cost": "", "max_wall_seconds": " s", "max_train_seconds": " s"}
NAMES = {"max_tokens": "tokens", "max_cost": "cost", "max_wall_seconds": "wall time",
         "max_train_seconds": "training time"}


def reached(spent: Spent, budget) -> tuple[str, str] | None:
    """(``budget.<cap>``, the cap reached in words) for the first cap reached, else None."""
    for key, attr in CAPS.items():
        cap = getattr(budget, key)
        have = getattr(spent, attr)
        if cap is not None and have >= cap:
            number = (lambda v: _number(key, v).removesuffix(" s"))  # noqa: E731 - "3,612 of 3,600 s"
            return f"budget.{key}", f"budget.{key} reached: {number(have)} of {number(cap)}{UNITS[key]}"
    return None


def exceeded(spent: Spent, budget) -> str | None:
    """The cap reached, in words ("budget.max_tokens reached: 10,240 of 10,000 tokens"), or None."""
    hit = reached(spent, budget)
    return hit[1] if hit else None


def raised(key: str, budget, spent: Spent) -> str:
    """A higher value of cap ``key`` (``budget.max_tokens``) to suggest: what is spent plus as much
    again as the cap allowed (1,100 tokens for 600 spent of 500)."""
    name = key.removeprefix("budget.")
    value = getattr(spent, CAPS[name]) + getattr(budget, name)
    if name == "max_tokens":
        return str(int(value))
    return f"{float(f'{value:.4g}'):g}"


def words(spent: Spent, budget, *, capped_only: bool = False) -> str:
    """One line: each quantity spent, against its cap ("tokens 5,120 of 10,000 (4,880 left); cost
    $0.03 of $1.00 ($0.97 left); wall time 120 s (no cap); ..."). ``capped_only``: only the
    quantities that have a cap ("" when none has)."""
    parts = []
    for key, attr in CAPS.items():
        cap, have = getattr(budget, key), getattr(spent, attr)
        if cap is None and capped_only:
            continue
        text = f"{NAMES[key]} {_number(key, have)}"
        if cap is None:
            text += " (no cap)"
        else:
            text = f"{NAMES[key]} {_number(key, have).removesuffix(' s')} of {_number(key, cap)}"
            text += f" ({_number(key, max(cap - have, 0))} left)" if have < cap else " (reached)"
        if key == "max_cost" and spent.unpriced:
            text += f" ({', '.join(spent.unpriced)} unpriced: not in budget.prices)"
        parts.append(text)
    return "; ".join(parts)
