"""The beta sweep and its reward-versus-KL frontier (DiscoPOP, Lu et al. 2024, Figure 5).

Every objective is trained at every beta and seed on one task; each (objective, beta) becomes one
point at (mean KL to the reference, mean gold reward) with standard errors over seeds, and an
objective's points, joined in order of beta, are its curve. A curve above and to the left of
another reaches more reward for the same divergence. Failed runs are listed in the JSON and left
out of the means; a point whose runs all failed is not drawn.

Writes ``DIR/sweep.json`` (runs, points, settings) and ``DIR/frontier.png``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Sequence

from evaluation.compare import Run, Setting, jsonable, run_grid
from evaluation.stats import mean_se

DEFAULT_BETAS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0)  # DiscoPOP Fig. 5 sweeps beta over about this range
X_LABELS = {  # inner_loop.metrics names both directions; "kl" is the usual RLHF constraint
    "kl": "KL(π ‖ π_ref), summed over completion tokens",
    "kl_per_token": "KL(π ‖ π_ref) per token",
    "kl_ref_pi_per_token": "KL(π_ref ‖ π) per token (the direction of DiscoPOP Fig. 5)",
}
SWEEP_JSON = "sweep.json"
FRONTIER_PNG = "frontier.png"


def points(runs: Sequence[Run], x: str = "kl", y: str = "reward") -> list[dict]:
    """One point per (objective, beta): means and standard errors of ``x`` and ``y`` over seeds."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault((r.objective, r.setting.beta), []).append(r)
    out = []
    for (objective, beta), group in groups.items():
        done = [r for r in group if r.value(x) is not None and r.value(y) is not None]
        mx, sx = mean_se([r.value(x) for r in done])
        my, sy = mean_se([r.value(y) for r in done])
        out.append({"objective": objective, "beta": beta, "n_done": len(done), "n_failed": len(group) - len(done),
                    x: mx, f"{x}_se": sx, y: my, f"{y}_se": sy,
                    "failures": [{"seed": r.setting.seed, "reason": r.reason} for r in group if r not in done]})
    return sorted(out, key=lambda p: (p["objective"], p["beta"] if p["beta"] is not None else math.inf))


def plot(pts: Sequence[dict], path: str | Path, *, x: str = "kl", y: str = "reward", title: str = "") -> Path:
    """Reward (y) against KL (x), one line per objective through its betas, each point labelled."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.8), dpi=110)
    names = list(dict.fromkeys(p["objective"] for p in pts))
    for i, name in enumerate(names):
        mine = [p for p in pts if p["objective"] == name and _finite(p[x]) and _finite(p[y])]
        if not mine:
            continue
        xs, ys = [p[x] for p in mine], [p[y] for p in mine]
        xe = [p[f"{x}_se"] if _finite(p[f"{x}_se"]) else 0.0 for p in mine]
        ye = [p[f"{y}_se"] if _finite(p[f"{y}_se"]) else 0.0 for p in mine]
        color = f"C{i % 10}"
        ax.errorbar(xs, ys, xerr=xe, yerr=ye, color=color, marker="o", ms=5, lw=1.6, capsize=2, label=name)
        for p in mine:
            ax.annotate(f"β={p['beta']:g}" if p["beta"] is not None else "β=default", (p[x], p[y]),
                        textcoords="offset points", xytext=(6, 5 - 8 * (i % 4)), fontsize=7, color=color)
    xs_all = [p[x] for p in pts if _finite(p[x])]
    log_x = bool(xs_all) and min(xs_all) > 0 and max(xs_all) / min(xs_all) > 20
    if log_x:  # small betas sit far right: a log axis keeps the large-beta end readable
        ax.set_xscale("log")
    ax.set_xlabel(X_LABELS.get(x, x) + ", mean over evaluation prompts" + (" (log scale)" if log_x else ""))
    ax.set_ylabel("gold reward, mean")
    ax.set_title(title or "Reward versus KL across β (higher and further left is better)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def sweep(objectives: dict[str, str], *, betas: Sequence[float] = DEFAULT_BETAS, seeds: Sequence[int] = (0,),
          task: str = "synthetic", out_dir: str | Path, overrides: tuple = (), x: str = "kl", runner=None,
          log: Callable[[str], None] | None = None, **runner_kwargs) -> dict:
    """Train every objective ({label: spec}) at every beta and seed; write the JSON and the plot."""
    out_dir = Path(out_dir)
    settings = [Setting(seed=s, task=task, beta=float(b), overrides=tuple(overrides)) for b in betas for s in seeds]
    runs = run_grid(objectives, settings, runner=runner, out_dir=out_dir / "sweep", log=log, **runner_kwargs)
    pts = points(runs, x=x)
    png = plot(pts, out_dir / FRONTIER_PNG, x=x, title=f"Reward versus KL on {task} across β "
               f"({len(seeds)} seed{'s' if len(seeds) != 1 else ''} per point, bars: ±1 se)")
    result = {"command": "sweep", "x": x, "y": "reward", "task": task, "betas": list(betas), "seeds": list(seeds),
              "overrides": dict(overrides), "points": pts, "runs": [r.to_dict() for r in runs]}
    (out_dir / SWEEP_JSON).write_text(json.dumps(jsonable(result), indent=1))
    return {**result, "png": str(png), "json": str(out_dir / SWEEP_JSON)}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def format_points(pts: Sequence[dict], x: str = "kl") -> str:
    lines = [f"{'objective':<14} {'beta':>6} {'runs':>5} {x:>16} {'reward':>16}"]
    for p in pts:
        def cell(m, s):
            return f"{m:.4f}" + (f" ± {s:.4f}" if _finite(s) else "") if _finite(m) else "—"
        beta = "default" if p["beta"] is None else f"{p['beta']:g}"
        runs = f"{p['n_done']}" + (f"+{p['n_failed']}✗" if p["n_failed"] else "")
        lines.append(f"{p['objective']:<14} {beta:>6} {runs:>5} {cell(p[x], p[f'{x}_se']):>16} "
                     f"{cell(p['reward'], p['reward_se']):>16}")
    return "\n".join(lines)
