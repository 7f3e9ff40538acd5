"""How sure a campaign's fitness is: its noise floor, and paired differences to DPO with intervals
that say what they are.

The **noise record** (archive meta ``"noise"``, written by the campaign, read by ``disco status``,
``disco show`` and ``disco report``) comes from, in this order:

1. ``fitness.calibration``, a ``disco calibrate --out`` JSON (:func:`load_calibration`): the seed-to-seed
   sd of a paired difference between two sensible losses (``paired_sd``), from which the standard
   error at the campaign's number of seeds and the smallest detectable difference follow;
2. else the campaign's own baselines when they finished on >= 2 seeds (:func:`from_baselines`):
   the per-seed paired difference DPO - IPO, labelled as such (a rough estimate from few seeds);
3. else ``unknown (one seed: run `disco calibrate`)``.

``min_detectable`` is the difference a two-sided 5% test detects with 80% power:
``(z_.975 + z_.8) * paired_se``.

:func:`paired_to` is a candidate's paired difference to a reference row (DPO) on the seeds both
finished (per-seed metrics: ``row["metrics"]["per_seed"][i]["metrics"]``): with >= 2 shared seeds
the mean and a 95% t-interval over seeds; with one seed, the within-seed paired difference over
held-out prompts when the metrics carry ``per_prompt`` lists (evaluation noise only, training noise
not included), widened by the calibration's seed term when a calibration is stored. Every result
carries ``what``: the words that go next to its interval. :func:`within_noise` says whether a
difference is inside the noise floor.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from inner_loop.overrides import UserError

REFERENCE = "dpo"                    # the baseline every candidate is paired with
Z975 = 1.959963984540054             # two-sided 95%
Z80 = 0.8416212335729143             # 80% power
DETECT = Z975 + Z80
UNKNOWN_ONE_SEED = "unknown (one seed: run `disco calibrate`)"


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t
    return float(t.ppf(0.975, df))


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# -- per-seed values -----------------------------------------------------------------------------

def per_seed_entries(row: dict | None) -> dict[int, dict]:
    """seed -> that seed's metrics, for the seeds ``row`` finished."""
    metrics = (row or {}).get("metrics")
    per_seed = metrics.get("per_seed") if isinstance(metrics, dict) else None
    out = {}
    for p in per_seed if isinstance(per_seed, list) else []:
        if isinstance(p, dict) and p.get("status") == "done" and isinstance(p.get("metrics"), dict):
            out[p.get("seed")] = p["metrics"]
    return out


def per_seed_values(row: dict | None, metric: str) -> dict[int, float]:
    """seed -> ``metric`` for the seeds ``row`` finished (seeds without a finite value left out)."""
    return {s: float(m[metric]) for s, m in per_seed_entries(row).items() if _finite(m.get(metric))}


def n_seeds(row: dict | None) -> int:
    """How many seeds ``row`` finished."""
    return len(per_seed_entries(row))


# -- the noise record ----------------------------------------------------------------------------

def _detect(paired_sd: float, n: int) -> tuple[float, float]:
    se = paired_sd / math.sqrt(n)
    return se, DETECT * se


def load_calibration(path: str | Path, metric: str | None = None, n: int | None = None) -> dict:
    """The noise record of a ``disco calibrate --out`` JSON at the campaign's ``n`` seeds (default:
    the calibration's own); a one-line :class:`UserError` when it is unreadable, is not a
    calibration, or measured another metric than ``metric``."""
    where = f"fitness.calibration {str(path)!r}"
    try:
        data = json.loads(Path(path).read_text())
    except OSError as err:
        raise UserError(f"{where}: cannot read it ({err.strerror or err})") from None
    except ValueError as err:
        raise UserError(f"{where} is not JSON ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict):
        raise UserError(f"{where} is not a `disco calibrate --out` file (expected a JSON object)")
    if not isinstance(data.get("metric"), str):
        raise UserError(f"{where} is not a `disco calibrate --out` file (no \"metric\")")
    if metric is not None and data["metric"] != metric:
        raise UserError(f"{where} measured {data['metric']!r}, but the campaign's fitness metric is "
                        f"{metric!r}: calibrate with --metric {metric}")
    paired_sd, min_detectable = data.get("paired_sd"), data.get("min_detectable")
    if not (_finite(paired_sd) and paired_sd >= 0) and not (_finite(min_detectable) and min_detectable >= 0):
        raise UserError(f"{where} holds neither paired_sd nor min_detectable as a number >= 0")
    calibrated = data.get("n_seeds") if isinstance(data.get("n_seeds"), int) else len(data.get("seeds") or []) or None
    record = {"source": "calibration", "path": str(path), "metric": data["metric"],
              "calibrated_seeds": calibrated,
              **{k: float(data[k]) if _finite(data.get(k)) else None
                 for k in ("within_seed_se", "seed_sd", "paired_sd", "effect_over_sft")}}
    if _finite(paired_sd) and paired_sd >= 0 and (n or calibrated):
        record["n_seeds"] = int(n or calibrated)
        record["paired_se"], record["min_detectable"] = _detect(float(paired_sd), record["n_seeds"])
    else:
        se = data.get("paired_se")
        record.update(n_seeds=calibrated, min_detectable=float(min_detectable),
                      paired_se=float(se) if _finite(se) else float(min_detectable) / DETECT)
    record["label"] = (f"from `disco calibrate` ({path}, {calibrated or '?'} seeds; paired sd "
                       f"{_num(record['paired_sd'])} scaled to {record['n_seeds']} seeds)")
    return record


def from_baselines(rows: list[dict], metric: str) -> dict:
    """The noise record a campaign estimates from its own baselines: the per-seed paired difference
    DPO - IPO (or DPO - another finished baseline) when they share >= 2 seeds; else unknown."""
    baselines = {r["name"]: r for r in rows if r.get("kind") == "baseline" and r.get("status") == "done"}
    ref = per_seed_values(baselines.get(REFERENCE), metric)
    others = sorted((name for name in baselines if name != REFERENCE), key=lambda n: (n != "ipo", n))
    for other in others:
        values = per_seed_values(baselines[other], metric)
        shared = sorted(set(ref) & set(values))
        if len(shared) < 2:
            continue
        diffs = [ref[s] - values[s] for s in shared]
        paired_sd = statistics.stdev(diffs)
        se, detect = _detect(paired_sd, len(shared))
        within = [m.get(f"{metric}_se") for m in per_seed_entries(baselines[REFERENCE]).values()]
        within = [float(w) for w in within if _finite(w)]
        return {"source": "baselines", "metric": metric, "pair": [REFERENCE, other], "seeds": shared,
                "n_seeds": len(shared), "diffs": diffs, "paired_sd": paired_sd, "paired_se": se,
                "min_detectable": detect,
                "seed_sd": statistics.stdev([ref[s] for s in shared]),
                "within_seed_se": statistics.fmean(within) if within else None,
                "label": (f"estimated from this campaign's baselines: {REFERENCE.upper()} - {other.upper()} "
                          f"per seed over {len(shared)} seeds (no calibration file; a rough estimate "
                          f"from {len(shared)} differences)")}
    if ref and len(ref) < 2:
        return {"source": "unknown", "metric": metric, "label": UNKNOWN_ONE_SEED}
    return {"source": "unknown", "metric": metric,
            "label": ("unknown (DPO and a second baseline have not both finished on >= 2 seeds; "
                      "run `disco calibrate`)")}


def campaign_noise(config, rows: list[dict]) -> dict:
    """The noise record of a campaign: its calibration file when configured, else its baselines'."""
    f = config.fitness
    if f.calibration:
        return load_calibration(f.calibration, f.metric, len(config.training.seeds))
    return from_baselines(rows, f.metric)


def floor_line(noise: dict | None) -> str:
    """``noise floor: ...`` in words, with its source."""
    if not noise or noise.get("min_detectable") is None:
        return f"noise floor: {(noise or {}).get('label') or UNKNOWN_ONE_SEED}"
    return (f"noise floor: smallest detectable difference {_num(noise['min_detectable'])} (95% two-sided, "
            f"80% power; paired se {_num(noise.get('paired_se'))} at {noise.get('n_seeds')} seeds), "
            f"{noise.get('label')}")


# -- paired differences --------------------------------------------------------------------------

def paired_to(row: dict, reference_row: dict | None, metric: str, noise: dict | None = None) -> dict | None:
    """``row``'s paired difference to ``reference_row`` in ``metric`` on the seeds both finished;
    None when they share none. Keys: ``diff``, ``lo``/``hi`` (None without an interval), ``se``,
    ``n_seeds``, ``seeds``, ``basis`` ("seeds", "prompts" or "none"), ``what`` (the words for the
    interval), ``reference`` and ``within_noise`` (:func:`within_noise`)."""
    if reference_row is None:
        return None
    a, b = per_seed_values(row, metric), per_seed_values(reference_row, metric)
    shared = sorted(set(a) & set(b))
    if not shared:
        return None
    diffs = [a[s] - b[s] for s in shared]
    out = {"reference": reference_row.get("name"), "metric": metric, "seeds": shared,
           "n_seeds": len(shared), "diff": statistics.fmean(diffs), "se": None, "lo": None, "hi": None}
    if len(shared) >= 2:
        se = statistics.stdev(diffs) / math.sqrt(len(shared))
        half = t975(len(shared) - 1) * se
        out.update(se=se, lo=out["diff"] - half, hi=out["diff"] + half, basis="seeds",
                   what=f"95% CI over {len(shared)} seeds (t, paired by seed)")
    else:
        seed = shared[0]
        pa = (per_seed_entries(row)[seed].get("per_prompt") or {})
        pb = (per_seed_entries(reference_row)[seed].get("per_prompt") or {})
        pa, pb = (p.get(metric) if isinstance(p, dict) else None for p in (pa, pb))
        seed_sd = (noise or {}).get("paired_sd") if (noise or {}).get("source") == "calibration" else None
        se, what = None, None
        if isinstance(pa, list) and isinstance(pb, list) and len(pa) == len(pb) >= 2 \
                and all(_finite(x) for x in pa + pb):
            d = [x - y for x, y in zip(pa, pb)]
            se = statistics.stdev(d) / math.sqrt(len(d))
            what = (f"one seed: 95% CI over {len(d)} held-out prompts, evaluation noise only, "
                    "training noise not included")
            if _finite(seed_sd):
                se = math.sqrt(se ** 2 + seed_sd ** 2)
                what = (f"one seed: 95% interval over {len(d)} held-out prompts widened by the calibration's "
                        f"seed-to-seed sd of a paired difference ({_num(seed_sd)})")
            out["basis"] = "prompts"
        elif _finite(seed_sd):
            se = seed_sd
            what = f"one seed: 95% interval from the calibration's seed-to-seed sd of a paired difference ({_num(seed_sd)})"
            out["basis"] = "calibration"
        if se is None:
            out.update(basis="none", what="one seed: no interval (no per-prompt metrics, no calibration)")
        else:
            out.update(se=se, lo=out["diff"] - Z975 * se, hi=out["diff"] + Z975 * se, what=what)
    out["within_noise"] = within_noise(out, noise)
    return out


def within_noise(diff: dict | None, noise: dict | None) -> bool | None:
    """True when ``diff``'s interval contains 0 or ``|diff|`` is below the noise floor's
    ``min_detectable``; None when there is neither an interval nor a floor to tell."""
    if diff is None:
        return None
    known = False
    if diff.get("lo") is not None and diff.get("hi") is not None:
        known = True
        if diff["lo"] <= 0 <= diff["hi"]:
            return True
    floor = (noise or {}).get("min_detectable")
    if _finite(floor):
        known = True
        if abs(diff["diff"]) < floor:
            return True
    return False if known else None


def screened_out(row: dict) -> bool:
    """Whether successive halving stopped ``row`` after its screening seeds."""
    return ((row.get("metrics") or {}).get("stage") or {}).get("outcome") == "screened out"


def clearly_negative(diff: dict | None) -> bool:
    """Successive halving's test: the upper end of the interval is below 0 (no interval: not clear)."""
    return diff is not None and diff.get("hi") is not None and diff["hi"] < 0


# -- words ---------------------------------------------------------------------------------------

def _num(x, digits: int = 4) -> str:
    return f"{x:.{digits}f}" if _finite(x) else "?"


def interval_text(diff: dict | None, digits: int = 4) -> str:
    """``+0.0120 [-0.0300, +0.0540]`` (no brackets without an interval), ``-`` for None."""
    if diff is None:
        return "-"
    text = f"{diff['diff']:+.{digits}f}"
    if diff.get("lo") is not None:
        text += f" [{diff['lo']:+.{digits}f}, {diff['hi']:+.{digits}f}]"
    return text


def noise_mark(diff: dict | None) -> str:
    """``~`` inside the noise floor, ``?`` when it cannot be told, else nothing."""
    if diff is None:
        return ""
    return {True: "~", None: "?", False: ""}[diff.get("within_noise")]


def se_words(row: dict, function: str = "mean_metric", metric: str = "") -> str:
    """What a row's ``fitness_se`` is: "± se over N seeds", or for one seed (mean_metric) the
    within-seed evaluation se, which is no seed-level ±."""
    n = n_seeds(row)
    if function != "mean_metric":
        return f"± the se that the fitness function {function!r} reported ({n} seed(s))"
    if n >= 2:
        return f"± se over {n} seeds"
    return (f"one seed: no seed-level ±; {metric + '_se' if metric else 'the se'} is the within-seed eval se "
            "(one seed, training noise not included)")


def fitness_text(row: dict, function: str = "mean_metric", digits: int = 4) -> str:
    """A row's fitness with its error said for what it is: ``0.6074 ± 0.0023 (se over 3 seeds)``,
    ``0.6074 (one seed: no seed-level ±; within-seed eval se 0.0100)``."""
    fitness, se = row.get("fitness"), row.get("fitness_se")
    if not _finite(fitness):
        return "-"
    text = f"{fitness:.{digits}f}"
    if not _finite(se):
        return text
    n = n_seeds(row)
    if function != "mean_metric":
        return text + f" ± {se:.{digits}f} (se reported by {function}, {n} seed(s))"
    if n >= 2:
        return text + f" ± {se:.{digits}f} (se over {n} seeds)"
    return text + f" (one seed: no seed-level ±; within-seed eval se {se:.{digits}f}, training noise not included)"


def reference_row(rows: list[dict]) -> dict | None:
    """The finished DPO baseline among ``rows``, if any."""
    return next((r for r in rows if r.get("kind") == "baseline" and r.get("name") == REFERENCE
                 and r.get("status") == "done"), None)
