"""Figures of a loss against the margin z = beta * rho, with DPO drawn beside it (cf. DiscoPOP Fig. 4).

A 2 x 2 grid: f (top) and df/dz (bottom), over the full range [-10, 10] (left) and zoomed near
z = 0 (right), with the local extrema of the summary marked. Reads profiles (plain dicts from
:func:`objectives.analysis.profile`), never code. Uses matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import numpy as np  # noqa: E402

from objectives.analysis import decode  # noqa: E402

ZOOM = (-0.5, 0.5)


def _clip(y: np.ndarray, x: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """y limits that show the curve on [lo, hi] without letting one huge value flatten it."""
    inside = y[(x >= lo) & (x <= hi) & np.isfinite(y)]
    if inside.size == 0:
        return -1.0, 1.0
    a, b = np.percentile(inside, [1, 99]) if lo < -2 else (inside.min(), inside.max())
    pad = 0.08 * (b - a) if b > a else 0.5
    return float(a - pad), float(b + pad)


def plot_profiles(profile: dict, reference: dict | None, path, *, name: str, summary: dict | None = None,
                  reference_name: str = "DPO") -> Path:
    """Write the 2 x 2 figure of ``profile`` (and ``reference`` dashed) to ``path``; return the path."""
    z = np.array(profile["z"])
    curves = {"f": decode(profile["f"]), "df": decode(profile["df"])}
    ref = None
    if reference is not None:
        ref = {"z": np.array(reference["z"]), "f": decode(reference["f"]), "df": decode(reference["df"])}
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    beta = profile["beta"]
    ylabels = {"f": "loss f", "df": r"slope $df/d(\beta\rho)$"}
    for row, key in enumerate(("f", "df")):
        for col, (lo, hi) in enumerate(((z.min(), z.max()), ZOOM)):
            ax = axes[row, col]
            mask = (z >= lo) & (z <= hi)
            ax.axhline(0.0, color="0.6", lw=0.8, zorder=0)
            ax.axvline(0.0, color="0.6", lw=0.8, zorder=0)
            if ref is not None:
                rmask = (ref["z"] >= lo) & (ref["z"] <= hi)
                ax.plot(ref["z"][rmask], ref[key][rmask], "--", color="0.35", lw=1.4,
                        label=f"{reference_name} (reference)")
            ax.plot(z[mask], curves[key][mask], color="C3", lw=2.0, label=name)
            if summary is not None:
                _mark_extrema(ax, summary, key, z, curves, lo, hi)
            values = [curves[key]] + ([np.interp(z, ref["z"], ref[key])] if ref is not None else [])
            bounds = [_clip(v, z, lo, hi) for v in values]
            y_lo, y_hi = min(b[0] for b in bounds), max(b[1] for b in bounds)
            if key == "df":  # keep the zero line in view: the sign of the slope is the point
                y_lo, y_hi = min(y_lo, -0.05 * (y_hi - y_lo)), max(y_hi, 0.05 * (y_hi - y_lo))
            ax.set_ylim(y_lo, y_hi)
            ax.set_xlim(lo, hi)
            ax.set_xlabel(r"$\beta\rho$  ($\beta$ = " + f"{beta:g})")
            ax.set_ylabel(ylabels[key])
            ax.set_title(f"{'loss' if key == 'f' else 'gradient'}, "
                         f"{'full range' if col == 0 else 'zoom near 0'}", fontsize=10)
            ax.grid(alpha=0.25)
    axes[0, 0].legend(loc="upper right", fontsize=9)
    fig.suptitle(f"{name}: loss and gradient against the margin" +
                 (f" ({profile['kind']}: slice pc = rho)" if profile["kind"] != "pointwise" else ""))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _mark_extrema(ax, summary, key, z, curves, lo, hi):
    styles = {"minima": ("v", "local min"), "maxima": ("^", "local max")}
    for which, (marker, label) in styles.items():
        points = [p["z"] for p in summary.get("extrema", {}).get(which, [])
                  if isinstance(p["z"], float) and lo <= p["z"] <= hi]
        if points:
            ax.plot(points, np.interp(points, z, curves[key]), marker, color="k", ms=6, ls="none",
                    label=f"{label} z = " + ", ".join(f"{p:.3f}" for p in points))
    if key == "f" and lo > -1:
        ax.legend(loc="upper right", fontsize=8)
