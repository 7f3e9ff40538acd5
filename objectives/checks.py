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
* ``direction`` (never fails, may warn): the sign of dL/drho. A loss with dL/drho > 0 at rho = 0
  lowers the margin at initialisation. LRML does so by design, but only between its local
  minimum and maximum near zero; a sign-flipped DPO does so at every margin. The warning tells
  the two apart.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from objectives.base import Objective, ObjectiveError
from objectives.baselines import REGISTRY
from objectives.loader import load, probe_kind

BATCH_SIZES = (1, 2, 16, 128)
Z_MAX = 50.0  # margins tested: beta * rho in [-Z_MAX, Z_MAX]
GRID_POINTS = 2001  # on that wide range
LOCAL_HALF_WIDTH = 2.0  # the fine grid around rho = 0, in beta * rho
LOCAL_POINTS = 4001


@dataclasses.dataclass
class CheckResult:
    """One check: did it pass, why not, and what it measured."""

    name: str
    passed: bool
    reason: str | None = None
    details: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CheckResult":
        """Rebuild from the sandbox's JSON (untrusted data: coerce every field)."""
        details = data.get("details")
        reason = data.get("reason")
        return cls(name=str(data.get("name", "?")), passed=data.get("passed") is True,
                   reason=None if reason is None else str(reason),
                   details=details if isinstance(details, dict) else {})


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
        return CheckResult("permutation", True, details={"skipped": f"{kind} objective"})
    batch = _batch(128, seed=11, dtype=torch.float64)
    perm = torch.randperm(128, generator=torch.Generator().manual_seed(0))
    direct = obj(*batch, beta).detach()
    permuted = obj(*[x[perm] for x in batch], beta).detach()
    if not torch.allclose(permuted, direct[perm], rtol=1e-9, atol=1e-12, equal_nan=True):
        return CheckResult("permutation", False, "the loss of a pair changes when the batch is reordered, "
                           "although the objective measured as pointwise")
    return CheckResult("permutation", True)


def _margin_grad(obj: Objective, beta: float, z: torch.Tensor) -> torch.Tensor:
    """dL/drho per pair: raise the chosen and lower the rejected log-prob by half each."""
    g_pc, g_pr, _ = _policy_grads(obj, _margins(beta, z), beta)
    zero = torch.zeros_like(z)
    return 0.5 * ((zero if g_pc is None else g_pc) - (zero if g_pr is None else g_pr))


def check_direction(obj: Objective, beta: float) -> tuple[CheckResult, list[str]]:
    """Never fails; returns a warning when gradient descent lowers the margin at rho = 0."""
    wide, local = _wide(torch.float64), torch.linspace(-LOCAL_HALF_WIDTH, LOCAL_HALF_WIDTH, LOCAL_POINTS,
                                                      dtype=torch.float64)
    at_zero = float(_margin_grad(obj, beta, torch.zeros(1, dtype=torch.float64))[0])
    g_wide, g_local = _margin_grad(obj, beta, wide), _margin_grad(obj, beta, local)
    moving = g_wide != 0
    fraction = float((g_wide > 0).sum()) / max(1, int(moving.sum()))
    details = {"dL_drho_at_0": at_zero, "fraction_pushing_down": fraction, "z_range": [-Z_MAX, Z_MAX]}
    if not (at_zero > 0):
        warnings = []
        if at_zero == 0:
            warnings.append("direction: dL/drho = 0 at rho = 0: a policy that starts at the reference gets "
                            "no learning signal")
        return CheckResult("direction", True, details=details), warnings
    if moving.any() and bool((g_wide[moving] > 0).all()):
        message = (f"direction: dL/drho > 0 at every margin tested (beta*rho in [-{Z_MAX:g}, {Z_MAX:g}]): "
                   "gradient descent lowers the margin, so this loss learns the opposite preference "
                   "(is its sign flipped?)")
        details["pattern"] = "everywhere"
        return CheckResult("direction", True, details=details), [message]
    lo, hi = _interval_around_zero(local, g_local > 0)
    details["interval"] = [lo, hi]
    if -LOCAL_HALF_WIDTH < lo and hi < LOCAL_HALF_WIDTH:
        details["pattern"] = "local"
        message = (f"direction: dL/drho > 0 at rho = 0, locally near 0 only (fraction {fraction:.4f} of "
                   f"margins tested; beta*rho in [{lo:.3f}, {hi:.3f}]); elsewhere it raises the margin. "
                   "LRML/DiscoPOP does this by design: make sure it is intended")
    else:
        details["pattern"] = "partial"
        message = (f"direction: dL/drho > 0 at rho = 0 and on a fraction {fraction:.4f} of the margins tested "
                   f"(around 0: beta*rho in [{lo:.3f}, {hi:.3f}]): gradient descent lowers the margin there")
    return CheckResult("direction", True, details=details), [message]


def _interval_around_zero(z: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """The contiguous stretch of ``z`` where ``mask`` holds that contains z = 0."""
    mid = int(torch.argmin(z.abs()))
    lo = hi = mid
    while lo > 0 and mask[lo - 1]:
        lo -= 1
    while hi < len(z) - 1 and mask[hi + 1]:
        hi += 1
    return float(z[lo]), float(z[hi])


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


def run_checks(source: str, beta: float = 0.1) -> dict:
    """The sandbox target: load ``source`` (or a registry name) and run every check on it."""
    report = {"name": None, "form": None, "kind": None, "checks": [], "warnings": []}
    try:
        obj = REGISTRY.get(source) if source in REGISTRY else load(source, probe=False)
    except ObjectiveError as err:
        report["checks"].append(CheckResult("load", False, str(err), {"line": err.line}).to_dict())
        return report
    report.update(name=obj.name, form=obj.form)
    checks = [CheckResult("load", True, details={"form": obj.form})]
    for name, fn in (("output", check_output), ("finite", check_finite), ("gradient", check_gradient),
                     ("deterministic", check_deterministic), ("inputs_unchanged", check_inputs_unchanged),
                     ("kind", check_kind)):
        checks.append(_guarded(name, lambda fn=fn: fn(obj, beta)))
    kind = checks[-1].details.get("kind") if checks[-1].passed else None
    report["kind"] = kind
    if kind is not None:
        checks.append(_guarded("permutation", lambda: check_permutation(obj, beta, kind)))
    try:
        direction, warnings = check_direction(obj, beta)
        checks.append(direction)
        report["warnings"] += warnings
    except Exception as err:  # noqa: BLE001 - a loss that fails here has failed an earlier check
        checks.append(CheckResult("direction", True, details={"skipped": f"{type(err).__name__}: {err}"}))
    report["checks"] = [c.to_dict() for c in checks]
    return report
