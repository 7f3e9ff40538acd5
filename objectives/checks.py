"""Behavioural checks of a candidate loss, run inside the sandbox child (never in the host).

:func:`run_checks` is the sandbox target ``"objectives.checks:run_checks"``: it loads the
candidate (screen + compile), calls it on fixed batches and returns a JSON-able dict of typed
:class:`CheckResult` s. Each check says why it failed in words the proposer can act on:

* ``output``: a floating tensor of shape [B] (one loss per pair) for B = 1, 2, 16, 128;
* ``finite``: finite losses for margins with |beta * rho| up to :data:`Z_MAX` (float32);
* ``gradient``: the output is attached to the graph, gradients reach the policy log-probs, are
  finite on the same margins and are not all zero;
* ``deterministic``: two calls on the same batch agree exactly;
* ``inputs_unchanged``: no in-place writes into the four input tensors (values and ``_version``);
* ``kind``: the measured kind (:func:`objectives.loader.probe_kind`);
* ``permutation``: for pointwise losses, permuting the batch permutes the losses;
* ``direction`` (never fails, may warn): where gradient descent raises the margin rho (dL/drho < 0,
  prefers the chosen answer), classified over every margin tested (:func:`check_direction`):
  everywhere (DPO), near 0 only (LRML's bump: a mild note), above a target margin only (IPO: fine
  when the target is above 0), at large negative margins (the loss keeps falling as rho -> -inf:
  a loud warning), on bands elsewhere, or nowhere (a sign-flipped loss).

A failure is reported once: checks that could not run are ``skipped`` (neither ok nor failed).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from objectives.base import Objective, ObjectiveError
from objectives.candidate import load
from objectives.loader import probe_kind
from objectives.registry import UnknownNameError

BATCH_SIZES = (1, 2, 16, 128)
Z_MAX = 50.0  # margins tested: beta * rho in [-Z_MAX, Z_MAX]
GRID_POINTS = 2001  # on that wide range
LOCAL_HALF_WIDTH = 2.0  # the fine grid around rho = 0, in beta * rho
LOCAL_POINTS = 4001
DIRECTION_POINTS = 20001  # the direction check's grid on the wide range: spacing 0.005
FLAT_RTOL = 1e-12  # |dL/drho| below this fraction of its largest value counts as flat
MAX_BANDS_SHOWN = 4


@dataclasses.dataclass
class CheckResult:
    """One check: did it pass, why not, and what it measured."""

    name: str
    passed: bool
    reason: str | None = None
    details: dict = dataclasses.field(default_factory=dict)
    skipped: bool = False  # did not run (or does not apply): ``passed`` is then True, it decides nothing

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CheckResult":
        """Rebuild from the sandbox's JSON (untrusted data: coerce every field)."""
        details = data.get("details")
        reason = data.get("reason")
        return cls(name=str(data.get("name", "?")), passed=data.get("passed") is True,
                   reason=None if reason is None else str(reason),
                   details=details if isinstance(details, dict) else {},
                   skipped=data.get("skipped") is True)


def _batch(n: int, seed: int, dtype=torch.float32) -> list[torch.Tensor]:
    """Summed sequence log-probs of a plausible size; the reference sits near the policy."""
    g = torch.Generator().manual_seed(seed)
    pc = -torch.rand(n, generator=g, dtype=torch.float64) * 150 - 20
    pr = -torch.rand(n, generator=g, dtype=torch.float64) * 150 - 20
    rc = pc + torch.randn(n, generator=g, dtype=torch.float64) * 3
    rr = pr + torch.randn(n, generator=g, dtype=torch.float64) * 3
    return [x.to(dtype) for x in (pc, pr, rc, rr)]


def _margins(beta: float, z: torch.Tensor) -> list[torch.Tensor]:
    """Pairs whose margin is rho = z / beta exactly: the chosen side carries it, on a common base."""
    base = torch.full_like(z, -60.0)
    return [base + z / beta, base.clone(), base.clone(), base.clone()]


def _wide(dtype) -> torch.Tensor:
    return torch.linspace(-Z_MAX, Z_MAX, GRID_POINTS, dtype=dtype)


def _names(n: int) -> str:
    return ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps",
            "reference_rejected_logps")[n]


def check_output(obj: Objective, beta: float) -> CheckResult:
    shapes = {}
    for n in BATCH_SIZES:
        out = obj(*_batch(n, seed=n), beta)
        if not isinstance(out, torch.Tensor):
            return CheckResult("output", False, f"returned {type(out).__name__} for a batch of {n}: "
                               "expected a tensor of per-pair losses")
        shapes[n] = list(out.shape)
        if not out.is_floating_point():
            return CheckResult("output", False, f"returned a {out.dtype} tensor: expected a float tensor",
                               {"shapes": shapes})
        if tuple(out.shape) != (n,):
            hint = " (did you take the mean or sum over the batch?)" if out.dim() == 0 else ""
            return CheckResult("output", False, f"returned shape {list(out.shape)} for a batch of {n}: "
                               f"expected one loss per pair, shape [{n}]{hint}", {"shapes": shapes})
    return CheckResult("output", True, details={"shapes": shapes})


def check_finite(obj: Objective, beta: float) -> CheckResult:
    z = _wide(torch.float32)
    out = obj(*_margins(beta, z), beta).detach()
    bad = ~torch.isfinite(out)
    if bad.any():
        where = z[bad]
        return CheckResult("finite", False, f"non-finite loss ({_first_bad(out[bad])}) for "
                           f"{int(bad.sum())} of {len(z)} margins, beta*rho from {float(where.min()):g} "
                           f"to {float(where.max()):g} (float32)", {"count": int(bad.sum())})
    random = obj(*_batch(128, seed=7), beta).detach()
    if not torch.isfinite(random).all():
        return CheckResult("finite", False, "non-finite loss on a batch of typical log-probs")
    return CheckResult("finite", True, details={"z_range": [-Z_MAX, Z_MAX], "dtype": "float32"})


def _first_bad(x: torch.Tensor) -> str:
    return "nan" if torch.isnan(x).any() else "inf"


def _policy_grads(obj: Objective, inputs: list[torch.Tensor], beta: float):
    pc, pr = inputs[0].clone().requires_grad_(True), inputs[1].clone().requires_grad_(True)
    out = obj(pc, pr, inputs[2], inputs[3], beta)
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        return None, None, out
    g_pc, g_pr = torch.autograd.grad(out.sum(), [pc, pr], allow_unused=True)
    return g_pc, g_pr, out


def check_gradient(obj: Objective, beta: float) -> CheckResult:
    z = _wide(torch.float32)
    g_pc, g_pr, out = _policy_grads(obj, _margins(beta, z), beta)
    if g_pc is None and g_pr is None:
        if isinstance(out, torch.Tensor) and not out.requires_grad:
            return CheckResult("gradient", False, "the output is detached from the inputs (requires_grad is "
                               "False): no gradient can flow. Avoid .detach(), .item(), .data and building "
                               "new tensors from values")
        return CheckResult("gradient", False, "no gradient reaches the policy log-probs")
    grads = [g for g in (g_pc, g_pr) if g is not None]
    for g in grads:
        bad = ~torch.isfinite(g)
        if bad.any():
            return CheckResult("gradient", False, f"non-finite gradient ({_first_bad(g[bad])}) for "
                               f"{int(bad.sum())} of {len(z)} margins, beta*rho from "
                               f"{float(z[bad].min()):g} to {float(z[bad].max()):g} (float32)")
    if not any(bool((g != 0).any()) for g in grads):
        return CheckResult("gradient", False, "the gradient with respect to the policy log-probs is zero at "
                           "every margin tested: training would not move")
    return CheckResult("gradient", True, details={"z_range": [-Z_MAX, Z_MAX]})


def check_deterministic(obj: Objective, beta: float) -> CheckResult:
    batch = _batch(16, seed=3, dtype=torch.float64)
    first, second = obj(*batch, beta).detach(), obj(*batch, beta).detach()
    if not torch.allclose(first, second, rtol=0, atol=0, equal_nan=True):
        return CheckResult("deterministic", False, "two calls on the same batch gave different losses "
                           "(randomness such as torch.rand or dropout inside the loss?)")
    return CheckResult("deterministic", True)


def check_inputs_unchanged(obj: Objective, beta: float) -> CheckResult:
    batch = _batch(16, seed=5, dtype=torch.float64)
    copies = [x.clone() for x in batch]
    versions = [x._version for x in batch]
    obj(*batch, beta)
    changed = [_names(i) for i, (x, c, v) in enumerate(zip(batch, copies, versions))
               if x._version != v or not torch.equal(x, c)]
    if changed:
        return CheckResult("inputs_unchanged", False, f"modified its input(s) in place: {', '.join(changed)} "
                           "(e.g. `x += ...`, `.clamp_()`, `x[...] = ...`); compute on new tensors instead")
    return CheckResult("inputs_unchanged", True)


def check_kind(obj: Objective, beta: float) -> CheckResult:
    with torch.no_grad():
        if not torch.isfinite(obj(*_batch(8, seed=1, dtype=torch.float64), beta)).all():
            return CheckResult("kind", False, "not measured: the losses are not finite")
    kind = probe_kind(obj, beta)
    return CheckResult("kind", True, details={"kind": kind})


def check_permutation(obj: Objective, beta: float, kind: str) -> CheckResult:
    if kind != "pointwise":
        return _skipped("permutation", f"does not apply to a {kind} objective")
    batch = _batch(128, seed=11, dtype=torch.float64)
    perm = torch.randperm(128, generator=torch.Generator().manual_seed(0))
    direct = obj(*batch, beta).detach()
    permuted = obj(*[x[perm] for x in batch], beta).detach()
    if not torch.allclose(permuted, direct[perm], rtol=1e-9, atol=1e-12, equal_nan=True):
        return CheckResult("permutation", False, "the loss of a pair changes when the batch is reordered, "
                           "although the objective measured as pointwise")
    return CheckResult("permutation", True)


def _margin_grad(obj: Objective, beta: float, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """dL/drho per pair (raise the chosen and lower the rejected log-prob by half each), and L."""
    g_pc, g_pr, out = _policy_grads(obj, _margins(beta, z), beta)
    zero = torch.zeros_like(z)
    grad = 0.5 * ((zero if g_pc is None else g_pc) - (zero if g_pr is None else g_pr))
    return grad, (out.detach().double() if isinstance(out, torch.Tensor) and out.shape == z.shape else None)


def _direction_grid() -> torch.Tensor:
    """beta*rho on [-Z_MAX, Z_MAX] (spacing 0.005), finer (0.001) on [-2, 2], 0 exactly; sorted."""
    wide = torch.linspace(-Z_MAX, Z_MAX, DIRECTION_POINTS, dtype=torch.float64)
    local = torch.linspace(-LOCAL_HALF_WIDTH, LOCAL_HALF_WIDTH, LOCAL_POINTS, dtype=torch.float64)
    return torch.unique(torch.cat([wide, local, torch.zeros(1, dtype=torch.float64)]))


def _signs(g: torch.Tensor) -> torch.Tensor:
    """+1 where dL/drho > 0 (descent lowers the margin), -1 where < 0, 0 where flat or not finite."""
    finite = torch.isfinite(g)
    scale = float(g[finite].abs().max()) if finite.any() else 0.0
    s = torch.sign(g)
    s[~finite | (g.abs() <= FLAT_RTOL * scale)] = 0
    return s


def _wrong_way_runs(z: torch.Tensor, g: torch.Tensor, s: torch.Tensor) -> list[dict]:
    """The stretches of margins where descent lowers the margin, from the signs ``s`` of ``g``.

    Flat points do not split a stretch. ``low``/``high``: the stretch reaches the end of the range
    (no margin beyond it where descent raises the margin, though the gradient may underflow to 0).
    Its ends are interpolated where the sign flips between neighbouring grid points.
    """
    moving = torch.nonzero(s != 0).flatten().tolist()
    sign = s.tolist()  # plain floats: indexing a tensor per element made this loop 0.1 s a candidate
    runs, i = [], 0
    while i < len(moving):
        if sign[moving[i]] < 0:
            i += 1
            continue
        j = i
        while j + 1 < len(moving) and sign[moving[j + 1]] > 0:
            j += 1
        a, b = moving[i], moving[j]
        lo = _crossing(z, g, moving[i - 1], a) if i > 0 else float(z[0])  # a tail: to the range's end
        hi = _crossing(z, g, b, moving[j + 1]) if j + 1 < len(moving) else float(z[-1])
        runs.append({"from": lo, "to": hi, "low": i == 0, "high": j == len(moving) - 1})
        i = j + 1
    return runs


def _crossing(z: torch.Tensor, g: torch.Tensor, a: int, b: int) -> float:
    """Where g changes sign between grid points a < b (linear), or z[b] / z[a] across a flat stretch."""
    za, zb, ga, gb = float(z[a]), float(z[b]), float(g[a]), float(g[b])
    if zb - za > 0.05:  # flat in between: the stretch starts (ends) where it moves
        return zb if ga < 0 else za
    return za - ga * (zb - za) / (gb - ga)


def _z(x: float) -> str:
    return f"{x:.3g}" if round(abs(x), 3) >= 1 else f"{x:.3f}"


def _bands(runs: list[dict]) -> str:
    shown = ", ".join(f"[{_z(r['from'])}, {_z(r['to'])}]" for r in runs[:MAX_BANDS_SHOWN])
    more = len(runs) - MAX_BANDS_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def check_direction(obj: Objective, beta: float) -> tuple[CheckResult, list[str]]:
    """Never fails. Classifies where gradient descent raises the margin (dL/drho < 0: prefers the
    chosen answer) over beta*rho in [-Z_MAX, Z_MAX]: ``everywhere``, ``near_zero`` (wrong only
    in bands within |beta*rho| <= 2: LRML), ``large_positive`` (wrong above a margin: a target
    margin, as IPO), ``large_negative`` (wrong below a margin: the loss keeps falling as
    rho -> -inf), ``bands`` (wrong on bands away from 0) or ``nowhere`` (the opposite preference).
    The check's reason says it in words; a warning comes with every class but ``everywhere`` and a
    target margin above 0.
    """
    z = _direction_grid()
    g, f = _margin_grad(obj, beta, z)
    s = _signs(g)
    at_zero = float(g[int(torch.argmin(z.abs()))])
    uniform = s[torch.isin(z, torch.linspace(-Z_MAX, Z_MAX, DIRECTION_POINTS, dtype=torch.float64))]
    fraction = float((uniform > 0).sum()) / max(1, int((uniform != 0).sum()))
    runs = _wrong_way_runs(z, g, s)
    details = {"dL_drho_at_0": at_zero, "fraction_pushing_down": fraction, "z_range": [-Z_MAX, Z_MAX],
               "regions_pushing_down": [[r["from"], r["to"]] for r in runs]}
    full = f"beta*rho in [-{Z_MAX:g}, {Z_MAX:g}]"
    warnings = []
    if not bool((s != 0).any()):
        details["pattern"] = "flat"
        return CheckResult("direction", True, "no gradient on the margin anywhere", details), warnings
    if not runs:
        details["pattern"] = "everywhere"
        reason = f"raises the margin at every margin tested ({full})"
        if at_zero == 0:
            warnings.append("direction: dL/drho = 0 at rho = 0: a policy that starts at the reference gets "
                            "no learning signal")
    elif not bool((s < 0).any()):
        details["pattern"] = "nowhere"
        reason = "lowers the margin at every margin tested: learns the opposite preference"
        warnings.append(f"direction: dL/drho > 0 at every margin tested ({full}): gradient descent lowers "
                        "the margin, so this loss learns the opposite preference (is its sign flipped?); "
                        "the loss keeps decreasing as rho -> -inf")
    else:
        reason, warning = _mixed(runs, details, f, z, fraction)
        if warning:
            warnings.append(warning)
    details["interval"] = next(([r["from"], r["to"]] for r in runs if r["from"] <= 0 <= r["to"]), None)
    return CheckResult("direction", True, reason, details), warnings


def _mixed(runs: list[dict], details: dict, f: torch.Tensor | None, z: torch.Tensor,
           fraction: float) -> tuple[str, str | None]:
    """Reason and warning when descent raises the margin at some margins and lowers it at others."""
    low = runs[0] if runs[0]["low"] else None
    high = runs[-1] if runs[-1]["high"] else None
    inner = [r for r in runs if r is not low and r is not high]
    at_zero = any(r["from"] <= 0 <= r["to"] for r in runs)
    if low is not None:
        details["pattern"] = "large_negative"
        top = low["to"]
        reason = f"lowers the margin for beta*rho below {_z(top)}: the loss keeps decreasing as rho -> -inf"
        elsewhere = (f"; above {_z(top)} it raises the margin" if high is None and not inner else
                     f"; it also lowers the margin on beta*rho in {_bands(inner + ([high] if high else []))}")
        value = ""
        if f is not None and bool(torch.isfinite(f).all()):
            f_low, f_pos = float(f[0]) + 0.0, float(f[z >= 0].min()) + 0.0  # no -0.0
            details.update(f_at_low_end=f_low, f_min_at_positive=f_pos)
            if f_low <= f_pos + 1e-9 * max(1.0, abs(f_pos)):
                value = (f" It reaches {f_low:.3g} at beta*rho = -{Z_MAX:g}, no more than its lowest "
                         "at any positive margin tested.")
        return reason, (f"direction: COLLAPSE RISK: the loss keeps decreasing as rho -> -inf. For every "
                        f"beta*rho below {_z(top)} (down to -{Z_MAX:g}, the end of the range tested) "
                        "dL/drho > 0: gradient descent lowers the margin further, so the loss can be "
                        "minimised by making the chosen answer less likely and gives no incentive to prefer "
                        f"it there{elsewhere}.{value}")
    if high is not None:
        details["pattern"] = "large_positive"
        target = high["from"]
        details["target_margin"] = target
        if not inner:
            reason = f"raises the margin up to beta*rho = {_z(target)}, lowers it above: a target margin"
            if target > 0:
                return reason, None
            return reason, (f"direction: dL/drho > 0 for all beta*rho above {_z(target)}: gradient descent "
                            "lowers the margin already at rho = 0, so its target margin prefers the "
                            "rejected answer.")
        reason = (f"lowers the margin for all beta*rho above {_z(target)} and on {len(inner)} band(s) below "
                  f"it{', including at rho = 0' if at_zero else ''}")
        return reason, (f"direction: gradient descent lowers the margin (dL/drho > 0) for all beta*rho above "
                        f"{_z(target)}, and also on beta*rho in {_bands(inner)}"
                        + (", including at rho = 0" if at_zero else "")
                        + f" (fraction {fraction:.4f} of the margins tested); elsewhere it raises the margin.")
    if all(-LOCAL_HALF_WIDTH <= r["from"] and r["to"] <= LOCAL_HALF_WIDTH for r in runs):
        details["pattern"] = "near_zero"
        where = _bands(runs)
        reason = f"raises the margin except near 0 (it lowers it on beta*rho in {where})"
        return reason, (f"direction: dL/drho > 0 {'at rho = 0, ' if at_zero else 'near rho = 0, '}"
                        f"locally near 0 only (fraction {fraction:.4f} of margins tested; beta*rho in "
                        f"{where}); elsewhere it raises the margin. LRML/DiscoPOP does this by design: "
                        "make sure it is intended")
    details["pattern"] = "bands"
    reason = f"lowers the margin on beta*rho in {_bands(runs)}, raises it elsewhere"
    return reason, (f"direction: dL/drho > 0 on beta*rho in {_bands(runs)} (fraction {fraction:.4f} of the "
                    "margins tested): gradient descent lowers the margin there"
                    + (", including at rho = 0" if at_zero else "") + "; elsewhere it raises the margin.")


def _candidate_line(err: BaseException) -> int | None:
    """The line of the candidate's source (compiled as ``<candidate>``) where ``err`` was raised."""
    line, tb = None, err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<candidate>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _raised(name: str, err: Exception) -> CheckResult:
    """A check that raised: the exception's type and message, and its line in the candidate (also
    in ``details``, so that feedback can name the type and line without the candidate's text)."""
    line = _candidate_line(err)
    where = f" (at line {line} of the loss)" if line is not None else ""
    return CheckResult(name, False, f"raised {type(err).__name__}: {str(err)[:500]}{where}",
                       {"exception": type(err).__name__, "line": line})


def _guarded(name: str, fn: Callable[[], CheckResult]) -> CheckResult:
    try:
        return fn()
    except MemoryError:
        raise  # the sandbox reports it as kind "memory"
    except RuntimeError as err:
        if "can't allocate memory" in str(err):
            raise  # torch's allocator: the same, kind "memory"
        return _raised(name, err)
    except Exception as err:  # noqa: BLE001 - a check that raises is a failed check, with the reason
        return _raised(name, err)


def _skipped(name: str, why: str) -> CheckResult:
    """A check that did not run (or does not apply): neither ok nor failed, with the reason."""
    return CheckResult(name, True, f"not run: {why}", {"skipped": why}, skipped=True)


def run_checks(source: str, beta: float = 0.1) -> dict:
    """The sandbox target: load ``source`` (or a registry name) and run every check on it.

    A failure is reported once: after the ``output`` check fails the others cannot say anything
    useful and are skipped, and a later check that raises the very exception an earlier one raised
    (type, message, line) is marked skipped rather than failed again.
    """
    report = {"name": None, "form": None, "kind": None, "checks": [], "warnings": []}
    try:
        obj = load(source, probe=False)  # a registry name, or source the screen passed
    except (ObjectiveError, UnknownNameError) as err:
        line = getattr(err, "line", None)
        report["checks"].append(CheckResult("load", False, str(err), {"line": line}).to_dict())
        return report
    report.update(name=obj.name, form=obj.form)
    checks = [CheckResult("load", True, details={"form": obj.form})]
    gate, raised = None, {}
    for name, fn in (("output", check_output), ("finite", check_finite), ("gradient", check_gradient),
                     ("deterministic", check_deterministic), ("inputs_unchanged", check_inputs_unchanged),
                     ("kind", check_kind)):
        if gate:
            checks.append(_skipped(name, gate))
            continue
        result = _guarded(name, lambda fn=fn: fn(obj, beta))
        key = (result.details.get("exception"), result.details.get("line"),
               (result.reason or "").partition(": ")[2]) if "exception" in result.details else None
        if key in raised:
            result = _skipped(name, f"raises the same {key[0]} as the {raised[key]} check")
        elif key is not None:
            raised[key] = name
        checks.append(result)
        if name == "output" and not result.passed:
            gate = "the output check failed"
    by_name = {c.name: c for c in checks}
    kind = by_name["kind"].details.get("kind") if by_name["kind"].passed and not gate else None
    report["kind"] = kind
    if kind is None:
        checks.append(_skipped("permutation", gate or "the kind was not measured"))
    elif kind != "pointwise":
        checks.append(_skipped("permutation", f"does not apply to a {kind} objective"))
    else:
        checks.append(_guarded("permutation", lambda: check_permutation(obj, beta, kind)))
    blocker = next((c.name for c in checks if c.name in ("output", "gradient") and (not c.passed or c.skipped)),
                   None)
    if blocker:
        checks.append(_skipped("direction", f"the {blocker} check " + ("failed" if not by_name[blocker].passed
                                                                       else "did not run")))
    else:
        try:
            direction, warnings = check_direction(obj, beta)
            checks.append(direction)
            report["warnings"] += warnings
        except Exception as err:  # noqa: BLE001 - never fails; say why it could not run
            checks.append(_skipped("direction", f"{type(err).__name__}: {str(err)[:200]}"))
    report["checks"] = [c.to_dict() for c in checks]
    return report
