"""One reference to an objective, wherever a person or a campaign names one.

A command line, a config file, an archive row or a test may name an objective as a built-in
registry name (``dpo``), a ``.py`` file or source text. :func:`resolve` turns any of them into a
:class:`Candidate`: its source, its name, whether it is *trusted* (a built-in of this package, run in
this process) and, once measured, its *kind* (pointwise / logratio / batch), which then travels
with it so no later step probes the code again.

:func:`isolation_for` is the one place that decides where an objective's code runs: a trusted
candidate in this process, anything else in the sandbox (or a plain child process when asked).
:func:`objectives.isolation.run` applies that decision to a trusted analysis function
("module:function" taking an :class:`~objectives.base.Objective`): the fingerprint, the profile
behind the plots. This module imports no sandbox: the sandbox's zygote preloads the checks, which
load candidates through it.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import os
from pathlib import Path

from objectives.base import KINDS, Objective, ObjectiveError

ISOLATIONS = ("auto", "none", "process", "sandbox")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """An objective as data: what to run, what to call it, and how far to trust it."""

    source: str
    name: str
    trusted: bool            # a built-in of objectives/baselines.py: runs in this process
    kind: str | None = None  # "pointwise" | "logratio" | "batch"; None: not measured yet
    path: str | None = None  # the file it was read from, if any

    def __post_init__(self):
        if self.kind is not None and self.kind not in KINDS:
            raise ObjectiveError(f"unknown kind {self.kind!r} (expected one of {', '.join(KINDS)})")

    @property
    def ref(self) -> str:
        """What names it in a job spec: the registry name of a trusted one, else the source."""
        return self.name if self.trusted else self.source

    def with_kind(self, kind: str | None) -> "Candidate":
        return self if kind is None or kind == self.kind else dataclasses.replace(self, kind=kind)

    def load(self, *, probe: bool = True) -> Objective:
        """The callable objective. For source this defines the function in this process (no
        candidate logic runs; without a kind, :func:`objectives.loader.probe_kind` calls it, or
        with ``probe=False`` the kind is guessed from the form): call it only where its code may
        run, i.e. inside the sandbox for an untrusted candidate."""
        from objectives.baselines import REGISTRY
        if self.trusted:
            return REGISTRY.get(self.name)
        from objectives.loader import from_source
        return from_source(self.source, name=self.name, kind=self.kind, probe=probe)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Candidate":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def _function_name(source: str) -> str | None:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    return next((node.name for node in tree.body if isinstance(node, ast.FunctionDef)), None)


def is_path(ref) -> bool:
    """Whether ``ref`` names a file rather than holding source: a Path, or one line ending in .py."""
    return isinstance(ref, Path) or (isinstance(ref, str) and "\n" not in ref and ref.strip().endswith(".py"))


def resolve(ref, *, kind: str | None = None) -> Candidate:
    """A :class:`Candidate` from a Candidate, an Objective, a registry name, a ``.py`` path or
    source text (``kind``: the kind already measured, e.g. by validation).

    An unknown name raises the registry's error with a "did you mean"; a missing or unreadable
    file an :class:`ObjectiveError`. Nothing is run and nothing is screened here."""
    from objectives.baselines import REGISTRY
    if isinstance(ref, Candidate):
        return ref.with_kind(kind)
    if isinstance(ref, Objective):
        trusted = ref.form == "registry" and ref.name in REGISTRY and REGISTRY.get(ref.name) is ref
        return Candidate(ref.source, ref.name, trusted, kind or ref.kind)
    if not isinstance(ref, (str, Path)):
        raise ObjectiveError(f"an objective is a registry name, a .py file or source text, not {type(ref).__name__}")
    if isinstance(ref, str) and ref in REGISTRY:
        obj = REGISTRY.get(ref)
        return Candidate(obj.source, obj.name, True, obj.kind)
    if is_path(ref):
        path = Path(ref).expanduser()
        try:
            source = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ObjectiveError(f"no such file: {path}") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ObjectiveError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
        return Candidate(source, _function_name(source) or path.stem, False, kind, str(path))
    if "def " not in ref and "\n" not in ref.strip():
        REGISTRY.get(ref)  # one line and no function: a misspelt name; raises with a "did you mean"
    return Candidate(ref, _function_name(ref) or "candidate", False, kind)


def load(ref, *, name: str | None = None, kind: str | None = None, probe: bool = True) -> Objective:
    """``objectives.load``: the callable :class:`Objective` for any reference :func:`resolve` takes
    (an Objective as it is). ``name`` renames a loaded source; ``kind``: the kind already measured
    (no probe then). Source is defined in this process: see :meth:`Candidate.load`."""
    if isinstance(ref, Objective):
        return ref
    candidate = resolve(ref, kind=kind)
    if name is not None and not candidate.trusted:
        candidate = dataclasses.replace(candidate, name=name)
    return candidate.load(probe=probe)


def isolation_for(candidate: Candidate, requested: str = "auto") -> str:
    """Where ``candidate``'s code runs: ``"none"`` (this process), ``"process"`` or ``"sandbox"``.

    ``"auto"`` gives ``"none"`` for a trusted candidate and ``"sandbox"`` for anything else. An
    explicit ``"none"`` is honoured (tests of the trainer's own defences need it): it is for
    trusted code only, which is why no campaign or command passes it for a candidate's source."""
    if requested not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}, not {requested!r}")
    if requested == "auto":
        return "none" if candidate.trusted else "sandbox"
    return requested


def target_function(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def apply(target: str, candidate: dict, *args, **kwargs):
    """``target(candidate.load(), *args, **kwargs)``: the sandbox's side of
    :func:`objectives.isolation.run`."""
    return target_function(target)(Candidate.from_dict(candidate).load(), *args, **kwargs)


def describe(candidate: Candidate) -> str:
    """``dpo (built-in)`` / ``my_loss (from path.py)`` / ``my_loss (source)``, for messages."""
    where = "built-in" if candidate.trusted else (f"from {os.path.basename(candidate.path)}"
                                                  if candidate.path else "source")
    return f"{candidate.name} ({where})"
