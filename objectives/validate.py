"""Validation of a candidate objective: the static screen here, then the checks in the sandbox.

``validate(x)`` (source, a ``.py`` path, a registry name or a Candidate) gives a
:class:`ValidationReport`. The screen (:mod:`objectives.screen`) runs
in this process and costs nothing: a refusal comes back at once with its line number. Code that
passes is loaded and exercised only inside :mod:`objectives.sandbox`, by
:func:`objectives.checks.run_checks`; a timeout, memory bomb or crash there is a failed report with
the sandbox's reason, never an exception. The report's ``layers`` say which isolation layers ran.

``disco validate FILE [--beta B] [--json]`` prints the report (exit 0 valid, 1 not).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from objectives import sandbox
from objectives.base import ObjectiveError
from objectives.candidate import resolve
from objectives.checks import CheckResult
from objectives.loader import detect_form
from objectives.registry import UnknownNameError
from objectives.screen import screen

MEMORY_MB = 2048  # address space the checks may use on top of the worker's own


@dataclasses.dataclass
class ValidationReport:
    """Whether a candidate may be trained, why not, and everything the checks measured."""

    valid: bool
    reason: str | None
    checks: list[CheckResult] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    kind: str | None = None
    form: str | None = None
    name: str | None = None
    layers: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return {"valid": self.valid, "reason": self.reason, "checks": [c.to_dict() for c in self.checks],
                "warnings": list(self.warnings), "kind": self.kind, "form": self.form, "name": self.name,
                "layers": list(self.layers)}


def validate(x, beta: float = 0.1, timeout: float = 20.0, *, cold: bool = False) -> ValidationReport:
    """Screen ``x`` (anything :func:`objectives.candidate.resolve` takes: a Candidate, source, a
    ``.py`` path or a registry name), then check it in the sandbox; the report's ``kind`` is the
    kind measured there, for the caller to pass on (``resolve(x, kind=report.kind)``).

    Every candidate's checks run in the sandbox, a trusted built-in's too (their verdict is the
    same either way, and one path is simpler to trust). ``cold=True`` runs them in a fresh sandboxed
    interpreter instead of the warm pool (same isolation, about two seconds slower;
    benchmarks/validate_speed.py compares the two).
    """
    try:
        candidate = resolve(x)
        form = "registry" if candidate.trusted else detect_form(screen(candidate.source).params)
    except (ObjectiveError, UnknownNameError) as err:
        line = getattr(err, "line", None)
        return ValidationReport(False, f"screen: {err}", [CheckResult("screen", False, str(err), {"line": line})])
    checks = [CheckResult("screen", True, "registry objective (trusted)" if candidate.trusted else None)]
    try:
        outcome = sandbox.run("objectives.checks:run_checks", candidate.ref, float(beta), timeout=timeout,
                              memory_mb=MEMORY_MB, cold=cold)
    except sandbox.SandboxError as err:
        checks.append(CheckResult("sandbox", False, err.reason, {"kind": err.kind}))
        return ValidationReport(False, f"sandbox {err.kind}: {err.reason}", checks, form=form)
    result = outcome.value if isinstance(outcome.value, dict) else {}
    checks += [CheckResult.from_dict(c) for c in result.get("checks", []) if isinstance(c, dict)]
    failed = [c for c in checks if not c.passed]
    if len(checks) == 1:
        failed = [CheckResult("sandbox", False, "the checks returned no results")]
        checks += failed
    reason = f"{failed[0].name}: {failed[0].reason}" if failed else None
    text = (lambda v: None if v is None else str(v))
    return ValidationReport(valid=not failed, reason=reason, checks=checks,
                            warnings=[str(w) for w in result.get("warnings", []) if isinstance(w, str)],
                            kind=text(result.get("kind")), form=text(result.get("form")) or form,
                            name=text(result.get("name")), layers=list(outcome.layers))


def render(report: ValidationReport) -> str:
    """The report for a terminal."""
    head = "VALID" if report.valid else f"INVALID: {report.reason}"
    lines = [head]
    if report.name or report.kind:
        lines.append(f"  name {report.name}  form {report.form}  kind {report.kind}")
    for c in report.checks:
        mark = "skip" if c.skipped else ("ok  " if c.passed else "FAIL")
        why = c.details.get("skipped") if c.skipped else c.reason
        lines.append(f"  [{mark}] {c.name}" + (f": {why}" if why else ""))
    for w in report.warnings:
        lines.append(f"  warning: {w}")
    if report.layers:
        lines.append(f"  isolation: {', '.join(report.layers)}")
    return "\n".join(lines)


def main_validate(args) -> int:
    """``disco validate FILE [--beta B] [--json]``: exit 0 when valid, 1 when not (a missing file
    or an unknown name too)."""
    try:
        candidate = resolve(args.file)
    except (ObjectiveError, UnknownNameError) as err:
        report = ValidationReport(False, str(err))
    else:
        report = validate(candidate, beta=args.beta)
    if getattr(args, "json", False):
        print(json.dumps(report.to_dict()))
    else:
        print(render(report), file=sys.stdout)
    return 0 if report.valid else 1
