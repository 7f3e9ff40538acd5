"""Running trusted analysis code on a candidate where :func:`objectives.candidate.isolation_for`
says: in this process for a built-in objective, in :mod:`objectives.sandbox` for anything else.

The fingerprint (:func:`objectives.fingerprint.measure`), the profile behind the plots
(:func:`objectives.analysis.profile`) and the inspector's reference curve all go through
:func:`run`; in the sandbox, :func:`objectives.candidate.apply` loads the candidate with the kind
it carries (no probe) and calls the target.
"""

from __future__ import annotations

from objectives import sandbox
from objectives.base import ObjectiveError
from objectives.candidate import Candidate, isolation_for, target_function


def run(candidate: Candidate, target: str, *args, timeout: float = 20.0, memory_mb: int | None = 2048,
        **kwargs):
    """Call ``target`` ("module:function", trusted code whose first argument is an Objective) on
    ``candidate``: in this process when it is trusted, else in :mod:`objectives.sandbox` with the
    candidate's kind passed on. Arguments and result must be JSON-serialisable for the sandbox;
    its failures (timeout, memory, crash, the loss raising) come back as :class:`ObjectiveError`."""
    if isolation_for(candidate) == "none":
        return target_function(target)(candidate.load(), *args, **kwargs)
    try:
        return sandbox.call("objectives.candidate:apply", target, candidate.to_dict(), *args,
                            timeout=timeout, memory_mb=memory_mb, **kwargs)
    except sandbox.SandboxError as err:
        raise ObjectiveError(f"in the sandbox ({err.kind}): {err.reason}") from None
