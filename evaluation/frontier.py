"""The beta sweep and its reward-versus-KL frontier (DiscoPOP, Lu et al. 2024, Figure 5).

Every objective is trained at every beta and seed on one task; each (objective, beta) becomes one
point at (mean KL to the reference, mean gold reward) with standard errors over seeds, and an
objective's points, joined in order of beta, are its curve. A curve above and to the left of
another reaches more reward for the same divergence. Failed runs are listed in the JSON and left
out of the means; a point whose runs all failed is not drawn.

The SFT model (the reference every KL is measured to) is drawn at KL 0 and its own gold reward
(``ref_reward``, the same for every objective and beta on a seed; mean ± se over seeds). Every
point's beta is shown by its marker (a legend keyed by beta) and by a label beside it, left out
where it would overlap another label.

Writes ``DIR/sweep.json`` (runs, points, the SFT point, settings), ``DIR/frontier.png`` and each
run's own output under ``DIR/runs/<objective>/<setting>/``.
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
BETA_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*")


def check_betas(betas: Sequence[float]) -> None:
    """Refuse a beta that is not a finite number above 0 (beta 0 would train without a KL constraint
    and the plot would show a meaningless point)."""
    bad = [b for b in betas if not (isinstance(b, (int, float)) and math.isfinite(b) and b > 0)]
    if bad:
        raise ValueError(f"--betas must be in 0 < beta < inf (the KL strength); got {' '.join(f'{b:g}' for b in bad)}")


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


def sft_point(runs: Sequence[Run], x: str = "kl", y: str = "reward") -> dict | None:
    """The reference (SFT) model as a point: KL 0 by definition and its gold reward ``ref_<y>``, first
    averaged over the runs of each seed (they share the reference), then mean ± se over seeds."""
    per_seed: dict[int, list[float]] = {}
    for r in runs:
        v = r.value(f"ref_{y}")
        if v is not None:
            per_seed.setdefault(r.setting.seed, []).append(v)
    if not per_seed:
        return None
    m, se = mean_se([sum(v) / len(v) for v in per_seed.values()])
    return {"objective": "SFT", x: 0.0, f"{x}_se": 0.0, y: m, f"{y}_se": se, "n_seeds": len(per_seed)}


def _beta_text(beta) -> str:
    return "β=default" if beta is None else f"β={beta:g}"


def drop_overlapping(fig, labels: list) -> None:
    """Remove every label (matplotlib Text) that overlaps one kept before it, in the order given."""
    renderer = fig.canvas.get_renderer()
    kept = []
    for t in labels:
        box = t.get_window_extent(renderer).expanded(1.05, 1.1)
        if any(box.overlaps(k) for k in kept):
            t.remove()
        else:
            kept.append(box)


def figure(pts: Sequence[dict], *, x: str = "kl", y: str = "reward", title: str = "", sft: dict | None = None):
    """Reward (y) against KL (x): one line per objective through its betas, the beta as the marker
    (legend on the right) and as a label where labels do not overlap, and the SFT model at KL 0."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(8.2, 4.8), dpi=110)
    names = list(dict.fromkeys(p["objective"] for p in pts))
    betas = sorted({p["beta"] for p in pts}, key=lambda b: math.inf if b is None else b)
    marker = {b: BETA_MARKERS[i % len(BETA_MARKERS)] for i, b in enumerate(betas)}
    handles, labels = [], []
    for i, name in enumerate(names):
        mine = [p for p in pts if p["objective"] == name and _finite(p[x]) and _finite(p[y])]
        if not mine:
            continue
        color = f"C{i % 10}"
        xe = [p[f"{x}_se"] if _finite(p[f"{x}_se"]) else 0.0 for p in mine]
        ye = [p[f"{y}_se"] if _finite(p[f"{y}_se"]) else 0.0 for p in mine]
        ax.errorbar([p[x] for p in mine], [p[y] for p in mine], xerr=xe, yerr=ye, color=color, lw=1.6, capsize=2)
        for p in mine:
            ax.plot([p[x]], [p[y]], marker[p["beta"]], color=color, ms=6)
            labels.append(ax.annotate(_beta_text(p["beta"]), (p[x], p[y]), textcoords="offset points",
                                      xytext=(6, 4), fontsize=7, color=color))
        handles.append(Line2D([], [], color=color, lw=1.6, label=name))
    if sft is not None and _finite(sft.get(y)):
        se = sft.get(f"{y}_se")
        ax.errorbar([0.0], [sft[y]], yerr=[se if _finite(se) else 0.0], fmt="*", color="black", ms=11, capsize=2)
        labels.insert(0, ax.annotate("SFT", (0.0, sft[y]), textcoords="offset points", xytext=(7, -10), fontsize=8))
        handles.append(Line2D([], [], color="black", marker="*", ls="", ms=10, label="SFT model (reference, KL 0)"))
    xs_all = [p[x] for p in pts if _finite(p[x]) and p[x] > 0]
    log_x = bool(xs_all) and max(xs_all) / min(xs_all) > 20
    if log_x:  # small betas sit far right; symlog keeps both ends readable and still shows KL 0
        ax.set_xscale("symlog", linthresh=min(xs_all))
    ax.set_xlabel(X_LABELS.get(x, x) + ", mean over evaluation prompts" + (f" (log scale, linear below {min(xs_all):.2g})" if log_x else ""))
    ax.set_ylabel("gold reward, mean")
    ax.set_title(title or "Reward versus KL across β (higher and further left is better)")
    ax.grid(alpha=0.3)
    first = ax.legend(handles=handles, frameon=False, loc="best", fontsize=8)
    ax.add_artist(first)
    ax.legend(handles=[Line2D([], [], color="#555", marker=marker[b], ls="", label=_beta_text(b)) for b in betas],
              title="β", frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.canvas.draw()
    drop_overlapping(fig, labels)
    return fig


def plot(pts: Sequence[dict], path: str | Path, *, x: str = "kl", y: str = "reward", title: str = "",
         sft: dict | None = None) -> Path:
    """:func:`figure`, saved to ``path``."""
    import matplotlib.pyplot as plt

    fig = figure(pts, x=x, y=y, title=title, sft=sft)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def sweep(objectives: dict[str, str], *, betas: Sequence[float] = DEFAULT_BETAS, seeds: Sequence[int] = (0,),
          task: str = "synthetic", out_dir: str | Path, overrides: tuple = (), x: str = "kl", runner=None,
          log: Callable[[str], None] | None = None, **runner_kwargs) -> dict:
    """Train every objective ({label: spec}) at every beta and seed; write the JSON and the plot into
    ``out_dir`` and each run's output into ``out_dir/runs/<objective>/<setting>/``."""
    check_betas(betas)
    out_dir = Path(out_dir)
    settings = [Setting(seed=s, task=task, beta=float(b), overrides=tuple(overrides)) for b in betas for s in seeds]
    runs = run_grid(objectives, settings, runner=runner, out_dir=out_dir, log=log, **runner_kwargs)
    pts = points(runs, x=x)
    sft = sft_point(runs, x=x)
    png = plot(pts, out_dir / FRONTIER_PNG, x=x, sft=sft, title=f"Reward versus KL on {task} across β "
               f"({len(seeds)} seed{'s' if len(seeds) != 1 else ''} per point, bars: ±1 se over seeds" + (", none with one seed" if len(seeds) == 1 else "") + ")")
    result = {"command": "sweep", "x": x, "y": "reward", "task": task, "betas": list(betas), "seeds": list(seeds),
              "overrides": dict(overrides), "points": pts, "sft": sft, "runs": [r.to_dict() for r in runs]}
    (out_dir / SWEEP_JSON).write_text(json.dumps(jsonable(result), indent=1))
    return {**result, "png": str(png), "json": str(out_dir / SWEEP_JSON)}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def format_points(pts: Sequence[dict], x: str = "kl", sft: dict | None = None) -> str:
    lines = [f"{'objective':<14} {'beta':>6} {'runs':>5} {x:>16} {'reward':>16}"]
    if sft is not None:
        se = sft["reward_se"]
        reward = f"{sft['reward']:.4f}" + (f" ± {se:.4f}" if _finite(se) else "")
        lines.append(f"{'SFT (ref)':<14} {'-':>6} {sft['n_seeds']:>5} {'0':>16} {reward:>16}")
    for p in pts:
        def cell(m, s):
            return f"{m:.4f}" + (f" ± {s:.4f}" if _finite(s) else "") if _finite(m) else "—"
        beta = "default" if p["beta"] is None else f"{p['beta']:g}"
        runs = f"{p['n_done']}" + (f"+{p['n_failed']}✗" if p["n_failed"] else "")
        lines.append(f"{p['objective']:<14} {beta:>6} {runs:>5} {cell(p[x], p[f'{x}_se']):>16} "
                     f"{cell(p['reward'], p['reward_se']):>16}")
    lines.append("")
    lines.append(f"{x} and reward: each run's mean over its evaluation samples, then the mean over the point's runs "
                 "(one per seed); ± = standard error over those runs (sample sd / sqrt(runs): training and "
                 "evaluation noise together), none with one run"
                 + ("; SFT: the reference model's reward on the same prompts, mean ± se over seeds" if sft else ""))
    return "\n".join(lines)
