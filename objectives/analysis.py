"""What a loss does as a function of the margin: a numeric profile and a summary of its shape.

The x axis everywhere is z = beta * rho (as in DiscoPOP's Figure 4). Two kinds of function live here:

* :func:`profile`, a trusted pure function that takes an objective and returns plain dicts of
  floats. It runs the loss, so it is called through :func:`objectives.isolation.run`
  (``"objectives.analysis:profile"``): in this process for a built-in, in the sandbox for source;
* :func:`summarise`, which reads a profile (never the code) and, when the code translated
  (:mod:`objectives.symbolic`), its closed form: f'(0), local extrema, convexity and the limits as
  rho -> +-inf, each with the method that produced it.

:func:`analyse` is the thin layer over both, for any reference :func:`objectives.candidate.resolve`
takes; where the code ran is :func:`objectives.candidate.isolation_for`'s decision.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import sympy
import torch

from objectives.base import Objective, ObjectiveError
from objectives.candidate import isolation_for, resolve
from objectives.isolation import run
from objectives.symbolic import Z, SymbolicTimeout, Translation, time_limit, translate

FULL = (-10.0, 10.0, 2001)  # the plot's range, spacing 0.01
ZOOM = (-1.0, 1.0, 2001)  # around z = 0, spacing 0.001: LRML's bump is ~0.2 wide
TAILS = (25.0, 50.0, 100.0, 200.0)  # |z| used for the numeric limits; exp(200) is still finite
CHECK_Z = (-2.0, -0.5, -0.1, 0.1, 0.5, 2.0)  # where the closed form is checked against the code
SANDBOX_TIMEOUT = 20.0
DEFAULT_BETA = 0.1  # the campaign's default, and `disco validate`'s


def grid() -> list[float]:
    """The margins (in z) a profile is taken at: FULL and ZOOM merged, with 0 exactly."""
    points = set(np.linspace(*FULL).round(12)) | set(np.linspace(*ZOOM).round(12)) | {0.0}
    return sorted(float(p) for p in points)


def encode(values) -> list:
    """Floats for JSON: non-finite values become the strings 'inf', '-inf', 'nan'."""
    return [v if math.isfinite(v) else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
            for v in map(float, values)]


def decode(values) -> np.ndarray:
    return np.array([float(v) for v in values], dtype=np.float64)


def _values_and_slopes(obj: Objective, z: torch.Tensor, beta: float) -> tuple[list, list]:
    rho = (z / beta).requires_grad_()
    if obj.kind == "batch":  # each margin as one pair of a fixed batch: what a batch-coupled loss is
        others = (BATCH_BACKGROUND / beta).to(rho.dtype)
        f = torch.cat([obj.of_rho(torch.cat([r.reshape(1), others]), beta).reshape(-1)[:1] for r in rho])
    else:
        f = obj.of_rho(rho, beta)
    if not isinstance(f, torch.Tensor) or f.shape != z.shape:
        raise ObjectiveError(f"{obj.name} returned {getattr(f, 'shape', type(f).__name__)}, "
                             f"expected per-pair losses of shape {tuple(z.shape)}")
    if f.requires_grad:
        (grad,) = torch.autograd.grad(f.sum(), rho, allow_unused=True)
        grad = torch.zeros_like(rho) if grad is None else grad
    else:
        grad = torch.zeros_like(rho)
    return f.detach().double().tolist(), (grad / beta).tolist()  # df/dz = (df/drho) / beta


# The other pairs of the batch a batch-coupled loss is profiled in: 63 margins, z evenly spaced in
# [-2, 2] (a batch of 64 pairs, the embedded task's, around where training starts)
BATCH_BACKGROUND = torch.linspace(-2.0, 2.0, 63, dtype=torch.float64)
BATCH_NOTE = ("a batch-coupled loss is not a function of rho alone: f and its slope here are those of one pair "
              "inside a fixed batch of 63 other margins (z evenly spaced in [-2, 2]); in another batch they differ, "
              "and its limits are those of that slice")


def profile(obj: Objective, beta: float) -> dict:
    """f and df/dz on :func:`grid`, and f at the tails. Runs ``obj``: trusted objectives only.

    For ``logratio`` and ``batch`` kinds this is one slice, pc = rho with the rest 0 (see
    :meth:`Objective.of_rho`); a batch-coupled loss sees each margin as one pair of the fixed batch
    :data:`BATCH_BACKGROUND` (a batch of one would make a batch statistic equal the margin itself).
    """
    z = torch.tensor(grid(), dtype=torch.float64)
    tails = torch.tensor([-t for t in reversed(TAILS)] + list(TAILS), dtype=torch.float64)
    f, df = _values_and_slopes(obj, z, beta)
    tail_f, _ = _values_and_slopes(obj, tails, beta)
    return {"beta": float(beta), "kind": obj.kind, "z": z.tolist(), "f": encode(f),
            "df": encode(df), "tail_z": tails.tolist(), "tail_f": encode(tail_f)}


def untrusted_runs_in() -> str:
    """Where an untrusted candidate's code runs, in words, with the sandbox's isolation layers."""
    from objectives import sandbox
    try:
        return f"sandbox ({', '.join(sandbox.layers())})"
    except Exception as err:  # the probe itself failed: say so rather than claim layers
        return f"sandbox (layers unknown: {type(err).__name__})"


# --- the summary: read from a profile and, when there is one, the closed form ---------------------

def _number(x: float, digits: int = 6):
    if not math.isfinite(x):
        return "nan" if x != x else ("+inf" if x > 0 else "-inf")
    return round(float(x), digits)


def _crossings(z, df, sign_before: int) -> list[float]:
    """Where df/dz changes sign from ``sign_before`` to its opposite (zeros skipped), interpolated."""
    keep = np.isfinite(df) & (np.abs(df) > 1e-12)
    zz, dd = z[keep], df[keep]
    s = np.sign(dd)
    out = []
    for i in np.nonzero((s[:-1] == sign_before) & (s[1:] == -sign_before))[0]:
        if zz[i + 1] - zz[i] > 0.05:  # a gap of skipped zeros or non-finite values: not a clean root
            continue
        out.append(float(zz[i] - dd[i] * (zz[i + 1] - zz[i]) / (dd[i + 1] - dd[i])))
    return out


def extrema(z, f, df) -> dict:
    """Local minima (df: - to +) and maxima (df: + to -) on the grid, with f there."""
    def at(points):
        return [{"z": _number(p), "f": _number(float(np.interp(p, z, f)))} for p in points]
    return {"minima": at(_crossings(z, df, -1)), "maxima": at(_crossings(z, df, +1)),
            "method": "numeric: sign changes of df/dz on the grid (spacing 0.001 on [-1, 1], "
                      "0.01 on [-10, 10]), linearly interpolated"}


def convexity(z, df) -> dict:
    """Convex on [-10, 10] when the slope of df/dz never falls below -tol; else where it is concave."""
    keep = np.isfinite(df)
    zz, dd = z[keep], df[keep]
    if len(zz) < 3:
        return {"convex": None, "concave_on": [], "method": "numeric: no finite slopes"}
    d2 = np.diff(dd) / np.diff(zz)
    mid = (zz[:-1] + zz[1:]) / 2
    tol = 1e-6 * max(1.0, float(np.max(np.abs(d2))))
    concave = d2 < -tol
    runs, start = [], None
    for i, c in enumerate(concave):
        if c and start is None:
            start = i
        if start is not None and (not c or i == len(concave) - 1):
            end = i if c else i - 1
            runs.append([_number(float(mid[start]), 4), _number(float(mid[end]), 4)])
            start = None
    return {"convex": not runs, "concave_on": runs[:10],
            "method": f"numeric: second differences of df/dz on the grid, tolerance {tol:.2g}"}


def numeric_limit(tail_z, tail_f, sign: int) -> dict:
    """The limit as z -> sign*inf from f at |z| = 25, 50, 100, 200."""
    order = np.argsort(sign * tail_z)
    f = tail_f[order][-3:]  # f at |z| = 50, 100, 200
    method = "numeric: f at |z| = 50, 100, 200"
    if not np.all(np.isfinite(f)):
        return {"value": _number(f[-1]), "method": method}
    d1, d2 = f[1] - f[0], f[2] - f[1]
    if abs(d2) <= 1e-9 * max(1.0, abs(f[2])):
        return {"value": _number(f[2]), "method": method}
    if np.sign(d1) == np.sign(d2) and abs(d2) >= 0.9 * abs(d1):
        return {"value": "+inf" if d2 > 0 else "-inf", "method": method + " (still growing)"}
    return {"value": _number(f[2]), "method": method + " (converging slowly: approximate)"}


def _symbolic_value(expr) -> dict | None:
    if expr is sympy.oo or expr is -sympy.oo:
        return {"value": "+inf" if expr is sympy.oo else "-inf", "exact": str(expr)}
    if expr.is_number and expr.is_real and expr.is_finite:
        return {"value": _number(float(expr)), "exact": str(expr), "latex": sympy.latex(expr)}
    return None


def symbolic_facts(translation: Translation, beta: float, timeout: float = 8.0) -> dict:
    """f'(0) and the limits from the closed form at this beta; each entry None where sympy fails."""
    facts = {"fprime0": None, "+inf": None, "-inf": None}
    if not translation.pointwise:
        return facts
    f = translation.at_beta(beta)
    jobs = {"fprime0": lambda: sympy.simplify(sympy.diff(f, Z).subs(Z, 0)),
            "+inf": lambda: sympy.limit(f, Z, sympy.oo), "-inf": lambda: sympy.limit(f, Z, -sympy.oo)}
    for key, job in jobs.items():
        try:
            with time_limit(timeout):
                facts[key] = _symbolic_value(job())
        except (SymbolicTimeout, NotImplementedError, ValueError, TypeError, RecursionError):
            facts[key] = None
    return facts


def agreement(translation: Translation, beta: float, z, f) -> float | None:
    """The largest relative gap between the closed form and the code's values at CHECK_Z."""
    if not translation.pointwise:
        return None
    expr, worst = translation.at_beta(beta), 0.0
    try:
        with time_limit(5.0):
            for point in CHECK_Z:
                i = int(np.argmin(np.abs(z - point)))
                value = complex(expr.subs(Z, sympy.Float(z[i], 30)).evalf(20))
                if abs(value.imag) > 1e-12 or not math.isfinite(f[i]):
                    return math.inf
                worst = max(worst, abs(value.real - f[i]) / max(1.0, abs(f[i])))
    except (SymbolicTimeout, TypeError, ValueError):
        return None
    return worst


def summarise(prof: dict, translation: Translation | None, *, name: str = "") -> dict:
    """The summary of one loss at the profile's beta: closed form, f'(0), extrema, convexity, limits."""
    beta = prof["beta"]
    z, f, df = np.array(prof["z"]), decode(prof["f"]), decode(prof["df"])
    tail_z, tail_f = np.array(prof["tail_z"]), decode(prof["tail_f"])
    out = {"name": name, "beta": beta, "kind": prof["kind"], "x": "z = beta * rho"}

    closed = {"method": "none", "reason": "not translated"}
    facts = {"fprime0": None, "+inf": None, "-inf": None}
    if translation is not None and translation.pointwise:
        gap = agreement(translation, beta, z, f)
        closed = {"method": "symbolic (AST -> sympy)", "latex": translation.latex,
                  "expression": str(translation.expr), "variable": "z",
                  "beta_only_through_z": translation.beta_free,
                  "checked_against_code": {"z": list(CHECK_Z), "max_relative_gap": gap}}
        if gap is not None and gap <= 1e-6:
            facts = symbolic_facts(translation, beta)
        else:
            closed["method"] = "symbolic, but it disagrees with the code: numbers below are numeric"
    elif translation is not None:
        closed = {"method": "none", "reason": translation.reason, "line": translation.line}
        if translation.expr is not None:
            closed["latex_in_logps"] = translation.latex
    out["closed_form"] = closed

    zero = int(np.argmin(np.abs(z)))
    numeric_slope = {"value": _number(df[zero]), "method": "numeric: autograd at z = 0"}
    out["fprime0"] = (dict(facts["fprime0"], method="symbolic", numeric=numeric_slope["value"])
                      if facts["fprime0"] else numeric_slope)
    out["f0"] = _number(f[zero])
    out["extrema"] = extrema(z, f, df)
    out["convexity"] = convexity(z, df)
    out["limits"] = {}
    for key, sign in (("rho->+inf", +1), ("rho->-inf", -1)):
        symbolic = facts["+inf" if sign > 0 else "-inf"]
        out["limits"][key] = (dict(symbolic, method="symbolic (sympy.limit)") if symbolic
                              else numeric_limit(tail_z, tail_f, sign))
    if prof["kind"] == "batch":
        out["note"] = BATCH_NOTE
        for entry in out["limits"].values():
            entry["method"] = f"{entry['method']}, in the fixed batch (batch-coupled)"
    elif prof["kind"] != "pointwise":
        out["note"] = (f"a {prof['kind']} loss is not a function of rho alone: this is the slice "
                       "pc = rho, pr = rc = rr = 0")
    return out


@dataclasses.dataclass(frozen=True)
class Analysis:
    """A loss's profile and summary, and where its code ran."""

    name: str
    profile: dict
    summary: dict
    translation: Translation | None


def analyse(x, beta: float = DEFAULT_BETA) -> Analysis:
    """Profile and summarise anything :func:`objectives.candidate.resolve` takes (a Candidate, a
    registry name, an Objective, a .py path or source text).

    A built-in runs in this process; anything else in the sandbox, with the candidate's kind passed
    on (see :func:`objectives.isolation.run`). The closed form is always found by walking the AST,
    never by running code; for source the screen runs first (refused code raises ObjectiveError).
    """
    candidate = resolve(x)
    translation = translate(candidate)
    prof = run(candidate, "objectives.analysis:profile", float(beta), timeout=SANDBOX_TIMEOUT)
    where = "in-process (registry objective)" if isolation_for(candidate) == "none" else untrusted_runs_in()
    summary = summarise(prof, translation, name=candidate.name)
    summary["code_ran"] = where
    return Analysis(candidate.name, prof, summary, translation)
