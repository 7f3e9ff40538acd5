"""The expression grammar that :mod:`discovery.evolve` searches: loss trees in ``z = beta * rho``.

::

    expr := z | constant | op(expr) | expr + expr | expr - expr | expr * expr | -expr
    op   := logsigmoid | sigmoid | exp | log1p | softplus | tanh | relu | abs | square

Trees are nested tuples: ``("z",)``, ``("c", 0.5)``, ``("u", "exp", child)``,
``("b", "+", left, right)``. This module builds them (:func:`c`, :func:`u`, :func:`b`,
:func:`blend`), holds the baselines that fit the grammar as trees (:func:`seed_trees`), turns a tree
into Python source (:func:`render`, :func:`to_code`) and source back into a tree (:func:`parse`),
evaluates a tree with :mod:`math` (:func:`evaluate`; no code is executed), simplifies it
(:func:`fold`) and walks it (:func:`paths`, :func:`at`, :func:`replace`, :func:`size`,
:func:`depth`). The search itself (selection, mutation, the pre-check) is in :mod:`discovery.evolve`.
"""

from __future__ import annotations

import ast
import math

from objectives.baselines import LRML_TAU

UNARY = ("logsigmoid", "sigmoid", "exp", "log1p", "softplus", "tanh", "relu", "abs", "square")
TORCH_NAME = {"logsigmoid": "F.logsigmoid", "softplus": "F.softplus"}  # the rest: torch.<op>

Z = ("z",)


def c(v: float):
    return ("c", float(v))


def u(op: str, x):
    return ("u", op, x)


def b(op: str, x, y):
    return ("b", op, x, y)


def gate(tau: float):
    return u("sigmoid", b("*", c(round(1 / tau, 4)), Z))


def blend(x, y, tau: float):
    """x * (1 - sigmoid(z / tau)) + y * sigmoid(z / tau): DiscoPOP's gated mix (LRML, Eq. 5)."""
    return b("+", b("*", x, b("-", c(1.0), gate(tau))), b("*", y, gate(tau)))


def seed_trees(beta: float) -> dict[str, tuple]:
    """The baselines of :mod:`objectives.baselines` that fit the grammar, as trees in z = beta * rho
    (tests/discovery/test_evolve.py checks that each computes its registry loss)."""
    return {
        "dpo": u("neg", u("logsigmoid", Z)),
        # IPO: (rho - 1/(2 beta))^2 = (z - 1/2)^2 / beta^2
        "ipo": b("*", c(round(1 / beta ** 2, 4)), u("square", b("-", Z, c(0.5)))),
        "hinge": u("relu", b("-", c(1.0), Z)),
        "lrml": blend(u("neg", u("logsigmoid", Z)), u("exp", u("neg", Z)), LRML_TAU),
    }


# -- rendering and parsing --------------------------------------------------------------------

def fmt(v: float) -> str:
    """A constant as the rendered code writes it (4 significant digits)."""
    s = f"{v:.4g}"
    return s if "e" not in s else repr(float(s))


def render(t, torch_names: bool = True) -> str:
    """Python source for tree ``t`` (``F.``/``torch.`` prefixes unless ``torch_names=False``)."""
    def go(t, level: int) -> str:
        tag = t[0]
        if tag == "z":
            return "z"
        if tag == "c":
            s = fmt(t[1])
            return f"({s})" if t[1] < 0 else s
        if tag == "u":
            if t[1] == "neg":
                s = "-" + go(t[2], 3)
                return f"({s})" if level > 1 else s
            if t[1] == "square" and torch_names:  # x ** 2 reads better than torch.square(x)
                inner = go(t[2], 0)
                atom = t[2][0] == "z" or (t[2][0] == "u" and t[2][1] != "neg")
                return f"{inner} ** 2" if atom else f"({inner}) ** 2"
            fn = (TORCH_NAME.get(t[1], f"torch.{t[1]}")) if torch_names else t[1]
            return f"{fn}({go(t[2], 0)})"
        op, mine = t[1], (1 if t[1] in "+-" else 2)
        s = f"{go(t[2], mine)} {op} {go(t[3], mine + (op == '-') + (op == '*'))}"
        return f"({s})" if mine < level else s
    return go(t, 0)


class NotInGrammar(ValueError):
    pass


def _expr(node, env):
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        raise NotInGrammar(f"free name {node.id}")
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool):
        return c(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        x = _expr(node.operand, env)
        return x if isinstance(node.op, ast.UAdd) else (c(-x[1]) if x[0] == "c" else u("neg", x))
    if isinstance(node, ast.BinOp):
        names = {type(node.left), type(node.right)}
        if isinstance(node.op, ast.Mult) and names == {ast.Name} and \
                {node.left.id, node.right.id} == {"beta", "rho"}:
            return Z
        x, y = _expr(node.left, env), _expr(node.right, env)
        if isinstance(node.op, ast.Pow) and y == c(2):
            return u("square", x)
        if isinstance(node.op, ast.Div) and y[0] == "c" and y[1] != 0:
            return b("*", c(1 / y[1]), x)
        ops = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}
        if type(node.op) in ops:
            return b(ops[type(node.op)], x, y)
    if isinstance(node, ast.Call) and len(node.args) == 1 and not node.keywords:
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and \
            f.value.id in ("F", "torch") else (f.id if isinstance(f, ast.Name) else None)
        if name in UNARY:
            return u(name, _expr(node.args[0], env))
    raise NotInGrammar(ast.dump(node)[:80])


def parse(code: str):
    """The tree of a ``(rho, beta)`` function written in the grammar, or None."""
    try:
        module = ast.parse(code)
        fns = [n for n in module.body if isinstance(n, ast.FunctionDef)]
        if len(fns) != 1 or [a.arg for a in fns[0].args.args] != ["rho", "beta"]:
            return None
        env: dict = {}
        for stmt in fns[0].body:
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                continue
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and \
                    isinstance(stmt.targets[0], ast.Name):
                env[stmt.targets[0].id] = _expr(stmt.value, env)
            elif isinstance(stmt, ast.Return) and stmt.value is not None:
                return _expr(stmt.value, env)
            else:
                return None
    except (SyntaxError, NotInGrammar, RecursionError):
        return None
    return None


def to_code(t, name: str) -> str:
    """A ``(rho, beta)`` function named ``name`` that computes tree ``t``; :func:`parse` reads it back."""
    return (f"def {name}(rho, beta):\n"
            f"    \"\"\"loss = {render(t, torch_names=False)}, with z = beta * rho.\"\"\"\n"
            f"    z = beta * rho\n"
            f"    return {render(t)}\n")


# -- evaluation with math (no code is executed) -----------------------------------------------

def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


MATH = {"logsigmoid": lambda x: -_softplus(-x), "sigmoid": _sigmoid, "exp": math.exp,
        "log1p": math.log1p, "softplus": _softplus, "tanh": math.tanh,
        "relu": lambda x: max(x, 0.0), "abs": abs, "square": lambda x: x * x, "neg": lambda x: -x}


def evaluate(t, z: float) -> float:
    """Tree ``t`` at ``z`` (may raise OverflowError, ValueError or ZeroDivisionError)."""
    tag = t[0]
    if tag == "z":
        return z
    if tag == "c":
        return t[1]
    if tag == "u":
        return MATH[t[1]](evaluate(t[2], z))
    x, y = evaluate(t[2], z), evaluate(t[3], z)
    return x + y if t[1] == "+" else x - y if t[1] == "-" else x * y


# -- walking and simplifying ------------------------------------------------------------------

def paths(t, here=()):
    """The path (tuple of child indices) of every node of ``t``, root first."""
    yield here
    for i, child in enumerate(t[2:] if t[0] in ("u", "b") else (), start=2):
        if isinstance(child, tuple):
            yield from paths(child, here + (i,))


def at(t, path):
    for i in path:
        t = t[i]
    return t


def replace(t, path, new):
    if not path:
        return new
    i = path[0]
    return t[:i] + (replace(t[i], path[1:], new),) + t[i + 1:]


def size(t) -> int:
    return sum(1 for _ in paths(t))


def depth(t) -> int:
    return 1 + max((depth(x) for x in t[2:] if isinstance(x, tuple)), default=0) if t[0] in ("u", "b") \
        else 1


def fold(t):
    """Fold constant subtrees; simplify x - x, x * 0, x * 1, x + 0, a * (b * x)."""
    if t[0] == "u":
        x = fold(t[2])
        if x[0] == "c":
            try:
                v = MATH[t[1]](x[1])
                return c(round(v, 6)) if math.isfinite(v) else u(t[1], x)
            except (OverflowError, ValueError):
                return u(t[1], x)
        return u(t[1], x)
    if t[0] == "b":
        x, y = fold(t[2]), fold(t[3])
        if x[0] == "c" and y[0] == "c":
            return c(round(evaluate(b(t[1], x, y), 0.0), 6))
        if t[1] == "-" and x == y:
            return c(0)
        if t[1] == "*" and x[0] == "c" and y[0] == "b" and y[1] == "*" and y[2][0] == "c":
            return fold(b("*", c(float(f"{x[1] * y[2][1]:.4g}")), y[3]))  # a * (b * e) = ab * e
        if t[1] == "*" and c(0) in (x, y):
            return c(0)
        if (t[1] == "*" and x == c(1)) or (t[1] == "+" and x == c(0)):
            return y
        if (t[1] == "*" and y == c(1)) or (t[1] in "+-" and y == c(0)):
            return x
        return b(t[1], x, y)
    return t
