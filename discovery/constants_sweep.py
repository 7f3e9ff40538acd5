"""Sweep a candidate's numeric constants without a model call: :func:`variants`.

A proposal is a *family* of losses as much as one loss: ``F.logsigmoid(1.5 * z) + 0.1 * z ** 2``
fixes two numbers a language model chose at random. When a candidate beats DPO, the campaign can
train variants of it with its constants scaled, instead of spending a model call per value
(``proposer.sweep_constants``: how many).

Which literals are swept (:func:`literals`): every int or float constant of the code (``ast``; not
``True``/``False``) in source order, except

* 0 (scaling it changes nothing),
* the exponent of ``**`` and everything inside it (``x ** 2`` is a square, not a tunable 2),
* integers passed to a call, positionally or by keyword, and constants inside a subscript
  (dimensions, counts, indices: ``x.sum(-1)``, ``x[..., 0]``, ``torch.clamp(x, min=0)``),
* the docstring (not a number anyway).

A float passed to a call stays tunable (``torch.clamp(x, -5.0, 5.0)``, ``F.softplus(x, beta=2.0)``).

Literals of equal value are one constant and are scaled together (LRML's gate writes its
temperature twice: ``sigmoid(20 * z)``). Variants: for each factor of :data:`LADDER` in turn (x0.5
and x2 first, then x0.25, x4, ...) and each constant in order of first appearance, the code with
that constant scaled (4 significant digits), written back with :func:`ast.unparse` (layout and
comments are not kept; the function's name is; a docstring gets the change appended, so that it
does not describe the old constant alone); a variant whose code equals the original or an earlier
variant is skipped; the first ``k`` are returned with a one-line description each (the candidate's
hypothesis, for the archive).
"""

from __future__ import annotations

import ast

from discovery.proposal import normalise_code

LADDER = (0.5, 2.0, 0.25, 4.0, 0.75, 1.5, 0.1, 10.0)


def _number(node) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
        and not isinstance(node.value, bool)


def _excluded(tree: ast.AST) -> set[int]:
    """ids of the constant nodes that are structure, not tuning (see the module docstring)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            out.update(id(n) for n in ast.walk(node.right))
        elif isinstance(node, ast.Subscript):
            out.update(id(n) for n in ast.walk(node.slice))
        elif isinstance(node, ast.Call):
            args = list(node.args) + [k.value for k in node.keywords]
            for a in args:
                inner = a.operand if isinstance(a, ast.UnaryOp) else a
                if _number(inner) and isinstance(inner.value, int):
                    out.add(id(inner))
    return out


def _numbers(tree: ast.AST) -> list:
    return sorted((n for n in ast.walk(tree) if _number(n)), key=lambda n: (n.lineno, n.col_offset))


def literals(code: str) -> list[tuple[float, tuple[int, ...], int]]:
    """(value, positions among the code's numeric constants, first line) of each sweepable
    constant, in order of first appearance; equal values are one constant."""
    try:
        tree = ast.parse(code or "")
    except (SyntaxError, ValueError):
        return []
    skip = _excluded(tree)
    groups: dict[float, tuple[list[int], int]] = {}
    for i, n in enumerate(_numbers(tree)):
        if id(n) not in skip and n.value != 0:
            groups.setdefault(float(n.value), ([], n.lineno))[0].append(i)
    return [(value, tuple(where), line) for value, (where, line) in groups.items()]


def _with(code: str, positions: tuple[int, ...], value: float, note: str) -> str:
    tree = ast.parse(code)
    nodes = _numbers(tree)
    for i in positions:
        nodes[i].value = value
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        doc = fn.body[0] if fn.body else None
        if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str):
            doc.value.value = doc.value.value.rstrip() + f" ({note})"
    return ast.unparse(tree) + "\n"


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def variants(code: str, k: int) -> list[tuple[str, str]]:
    """Up to ``k`` (code, description) variants of ``code`` with one constant scaled (module
    docstring); [] when the code does not parse or has no sweepable constant."""
    found = literals(code)
    if not found or k <= 0:
        return []
    seen = {normalise_code(code)}
    out = []
    for factor in LADDER:
        for value, positions, line in found:
            new = float(_fmt(value * factor))
            if new == value:
                continue
            times = f" ({len(positions)} places)" if len(positions) > 1 else ""
            note = f"sweep: the constant {_fmt(value)}{times} scaled x{factor:g} to {_fmt(new)}"
            variant = _with(code, positions, new, note)
            key = normalise_code(variant)
            if key in seen:
                continue
            seen.add(key)
            out.append((variant, f"The constant {_fmt(value)}{times} (line {line}) scaled x{factor:g} to "
                                 f"{_fmt(new)}, the rest unchanged: a sweep of the family's constants."))
            if len(out) == k:
                return out
    return out
