"""A loss's closed form: its code translated into a sympy expression by walking the AST.

Nothing of the candidate runs here. Source is screened (:func:`objectives.screen.screen`), parsed,
and each statement of the one function is mapped onto sympy: torch/F/math calls and tensor methods
become sympy functions (logsigmoid(x) = -log(1 + e^-x), relu(x) = Max(0, x), clamp -> Min/Max,
``where`` with a simple comparison -> Piecewise, ...), local assignments bind names, ``self.beta``
is the symbol beta. Anything else (loops, ``if``, indexing, batch reductions, ``detach``) makes the
translation fail with a reason and a line; the caller then falls back to numbers.

The result is expressed in z = beta * rho when the loss depends on beta only through z (DPO, SLiC,
LRML), otherwise in z with beta left as a parameter (IPO: (z/beta - 1/(2 beta))^2). A 5-argument
function is a function of rho when substituting pc = rho + rc + pr - rr removes pr, rc and rr.

Registry objectives are trusted project code: their module constants (``LRML_TAU``) and helper
functions (``margin``) are read from the module and inlined. For source text only the imports it
declares (and the torch, F, math that DiscoPOP's prompts promise) and its module-level numeric
constants (``EPS = 0.1``, which the screen allows) are known names.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import inspect
import signal
import textwrap
import threading
import time
import types

import sympy

from objectives.base import Objective, ObjectiveError
from objectives.candidate import resolve
from objectives.screen import screen

Z = sympy.Symbol("z", real=True)
RHO = sympy.Symbol("rho", real=True)
BETA = sympy.Symbol("beta", positive=True)
PC, PR, RC, RR = sympy.symbols("pc pr rc rr", real=True)

MAX_EXPONENT = 64  # a constant exponent beyond this is refused: 10**10**10 must not hang the parent
MAX_INLINE_DEPTH = 4  # helper functions of trusted registry code, inlined


class Untranslatable(Exception):
    """The code uses something that has no sympy counterpart here."""

    def __init__(self, reason: str, node: ast.AST | None = None):
        self.reason, self.line = reason, getattr(node, "lineno", None)
        super().__init__(reason)


class SymbolicTimeout(Exception):
    """A sympy computation took longer than its budget."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Interrupt pure-Python work (sympy) after ``seconds`` with SymbolicTimeout (main thread only).

    An outer SIGALRM timer (pytest-timeout's) is put back with its remaining time afterwards.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise SymbolicTimeout(f"sympy took longer than {seconds:g} s")

    start = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, expire)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay:
            remaining = max(old_delay - (time.monotonic() - start), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, remaining, old_interval)


@dataclasses.dataclass(frozen=True)
class Translation:
    """The closed form of a loss, or why there is none.

    ``variable`` is "z" (expr in Z, with BETA only if the loss depends on beta beyond z = beta*rho),
    "logps" (expr in PC, PR, RC, RR, BETA: translated but not a function of rho alone), or "" when
    translation failed.
    """

    expr: sympy.Expr | None
    variable: str
    reason: str = ""
    line: int | None = None

    @property
    def pointwise(self) -> bool:
        return self.variable == "z"

    @property
    def beta_free(self) -> bool:
        """True when the loss depends on beta only through z = beta * rho."""
        return self.pointwise and BETA not in self.expr.free_symbols

    @property
    def latex(self) -> str:
        return sympy.latex(self.expr) if self.expr is not None else ""

    def at_beta(self, beta: float) -> sympy.Expr:
        """f as an expression in z alone, at this beta."""
        if not self.pointwise:
            raise ValueError(f"not a function of z: {self.reason}")
        return self.expr.xreplace({BETA: _number(beta)})


class _Module(str):
    """A module (or its dotted path) that the code can take functions and constants from."""


class _Function(str):
    """A function imported by name, e.g. ``from torch.nn.functional import logsigmoid``."""


class _Self:
    """DiscoPOP's ``self``: ``self.beta`` is beta; ``self.label_smoothing`` is 0 as in the loader."""


@dataclasses.dataclass(frozen=True)
class _Method:
    receiver: sympy.Expr
    name: str


def _number(value) -> sympy.Expr:
    if isinstance(value, bool):
        raise Untranslatable("booleans are not numbers here")
    if isinstance(value, int):
        return sympy.Integer(value)
    if value != value:
        return sympy.nan
    if value in (float("inf"), float("-inf")):
        return sympy.oo if value > 0 else -sympy.oo
    return sympy.Rational(repr(float(value)))  # 0.05 -> 1/20: exact and readable in LaTeX


def _guard(expr):
    if isinstance(expr, sympy.Integer) and expr.p.bit_length() > 4096:
        raise Untranslatable("a constant too large to represent")
    return expr


# --- the operations: name (module function or tensor method) -> sympy builder ---------------------

def _logsigmoid(x):
    return -sympy.log(1 + sympy.exp(-x))


def _sigmoid(x):
    return 1 / (1 + sympy.exp(-x))


def _softplus(x, beta=1, threshold=None):
    return sympy.log(1 + sympy.exp(beta * x)) / beta  # the threshold only switches to x, numerically


def _clamp(x, min=None, max=None):
    if min is None and max is None:
        raise Untranslatable("clamp without bounds")
    if min is not None:
        x = sympy.Max(min, x)
    return sympy.Min(max, x) if max is not None else x


def _pow(x, exponent):
    exponent = sympy.sympify(exponent)
    if exponent.is_Number and abs(exponent) > MAX_EXPONENT:
        raise Untranslatable(f"constant exponent {exponent} is larger than {MAX_EXPONENT}")
    return _guard(x ** exponent)


def _where(condition, a, b):
    if not isinstance(condition, sympy.core.relational.Relational):
        raise Untranslatable("where() needs a simple comparison as its condition")
    return sympy.Piecewise((a, condition), (b, True))


OPS = {
    "logsigmoid": _logsigmoid, "sigmoid": _sigmoid, "expit": _sigmoid, "softplus": _softplus,
    "exp": sympy.exp, "log": sympy.log, "log1p": lambda x: sympy.log(1 + x),
    "expm1": lambda x: sympy.exp(x) - 1, "log2": lambda x: sympy.log(x, 2),
    "log10": lambda x: sympy.log(x, 10), "sqrt": sympy.sqrt, "rsqrt": lambda x: 1 / sympy.sqrt(x),
    "abs": sympy.Abs, "fabs": sympy.Abs, "absolute": sympy.Abs, "tanh": sympy.tanh,
    "sinh": sympy.sinh, "cosh": sympy.cosh, "sin": sympy.sin, "cos": sympy.cos,
    "atan": sympy.atan, "arctan": sympy.atan, "erf": sympy.erf, "square": lambda x: _pow(x, 2),
    "relu": lambda x: sympy.Max(0, x), "neg": lambda x: -x, "negative": lambda x: -x,
    "reciprocal": lambda x: 1 / x, "pow": _pow, "float_power": _pow, "clamp": _clamp, "clip": _clamp,
    "minimum": sympy.Min, "maximum": sympy.Max, "fmin": sympy.Min, "fmax": sympy.Max,
    "min": sympy.Min, "max": sympy.Max, "where": _where,
    "logaddexp": lambda a, b: sympy.log(sympy.exp(a) + sympy.exp(b)),
    "silu": lambda x: x * _sigmoid(x), "elu": lambda x, alpha=1: sympy.Piecewise(
        (x, x > 0), (alpha * (sympy.exp(x) - 1), True)),
    "float": lambda x: x, "double": lambda x: x, "clone": lambda x: x, "contiguous": lambda x: x,
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "ones_like": lambda x: sympy.Integer(1),
    "zeros_like": lambda x: sympy.Integer(0), "full_like": lambda x, v: v, "tensor": lambda v: v,
    "as_tensor": lambda v: v,
}
WHY_NOT = {
    "detach": "detach() stops gradients, so the closed form would give the wrong derivative",
    "mean": "a reduction over the batch couples the pairs", "sum": "a reduction over the batch",
    "std": "a reduction over the batch", "var": "a reduction over the batch",
}
MODULE_ROOTS = ("torch", "math")
CONSTANTS = {"pi": sympy.pi, "e": sympy.E, "tau": 2 * sympy.pi, "inf": sympy.oo}
BUILTINS = {"abs": sympy.Abs, "min": sympy.Min, "max": sympy.Max, "pow": _pow, "float": lambda x: x}
COMPARE = {ast.Lt: sympy.Lt, ast.LtE: sympy.Le, ast.Gt: sympy.Gt, ast.GtE: sympy.Ge}
BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
          ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b, ast.Pow: _pow}


class _Translator:
    """Walks one function body; ``names`` are the module-level names it may see."""

    def __init__(self, names: dict, trusted_globals: dict | None = None, depth: int = 0):
        self.names, self.trusted, self.depth = names, trusted_globals, depth

    def function(self, fn: ast.FunctionDef, env: dict) -> sympy.Expr:
        for stmt in fn.body:
            if isinstance(stmt, ast.Return):
                if stmt.value is None:
                    raise Untranslatable("return without a value", stmt)
                return self._tensor(stmt.value, env)
            if isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(
                    stmt.value, ast.Constant) and isinstance(stmt.value.value, str)):
                continue
            if isinstance(stmt, ast.Assign):
                value = self.expr(stmt.value, env)
                for target in stmt.targets:
                    self._bind(target, value, env)
            elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                self._bind(stmt.target, self.expr(stmt.value, env), env)
            elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
                op = BINOPS.get(type(stmt.op))
                if op is None or stmt.target.id not in env:
                    raise Untranslatable(f"augmented assignment {type(stmt.op).__name__}", stmt)
                env[stmt.target.id] = _guard(op(env[stmt.target.id], self._tensor(stmt.value, env)))
            else:
                raise Untranslatable(f"{type(stmt).__name__} statements have no closed form here", stmt)
        raise Untranslatable("the function does not end in a return", fn)

    def _bind(self, target, value, env):
        if isinstance(target, ast.Name):
            env[target.id] = value
        elif isinstance(target, ast.Tuple) and isinstance(value, tuple) and len(value) == len(
                target.elts):
            for t, v in zip(target.elts, value):
                self._bind(t, v, env)
        else:
            raise Untranslatable("only assignments to names (or tuples of names)", target)

    def _tensor(self, node, env) -> sympy.Expr:
        value = self.expr(node, env)
        if isinstance(value, (int, float)):
            return _number(value)
        if not isinstance(value, sympy.Basic) or isinstance(value, sympy.core.relational.Relational):
            raise Untranslatable(f"expected a number or tensor, got {type(value).__name__}", node)
        return value

    def expr(self, node, env):
        try:
            return self._expr(node, env)
        except Untranslatable as err:
            if err.line is None:
                err.line = getattr(node, "lineno", None)
            raise

    def _expr(self, node, env):
        if isinstance(node, ast.Constant):
            if node.value is None or isinstance(node.value, (int, float)):
                return None if node.value is None else _number(node.value)
            raise Untranslatable(f"constant {node.value!r}", node)
        if isinstance(node, ast.Name):
            return self._name(node, env)
        if isinstance(node, ast.Attribute):
            return self._attribute(node, env)
        if isinstance(node, ast.Tuple):
            return tuple(self.expr(e, env) for e in node.elts)
        if isinstance(node, ast.BinOp) and type(node.op) in BINOPS:
            return _guard(BINOPS[type(node.op)](self._tensor(node.left, env),
                                                self._tensor(node.right, env)))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = self._tensor(node.operand, env)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in COMPARE:
            return COMPARE[type(node.ops[0])](self._tensor(node.left, env),
                                              self._tensor(node.comparators[0], env))
        if isinstance(node, ast.Call):
            return self._call(node, env)
        raise Untranslatable(f"{type(node).__name__} expressions have no closed form here", node)

    def _name(self, node, env):
        if node.id in env:
            return env[node.id]
        if node.id in self.names:
            return self.names[node.id]
        if self.trusted is not None and node.id in self.trusted:
            value = self.trusted[node.id]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return _number(value)
            if isinstance(value, types.ModuleType):
                return _Module(value.__name__)
            if isinstance(value, types.FunctionType):
                return value
        if node.id in BUILTINS:
            return _Function("builtins." + node.id)
        raise Untranslatable(f"unknown name {node.id!r}", node)

    def _attribute(self, node, env):
        base = self.expr(node.value, env)
        if isinstance(base, _Self):
            if node.attr == "beta":
                return BETA
            if node.attr == "label_smoothing":
                return sympy.Integer(0)
            raise Untranslatable(f"self.{node.attr} is unknown (only self.beta)", node)
        if isinstance(base, _Module):
            if node.attr in CONSTANTS:
                return CONSTANTS[node.attr]
            return _Module(f"{base}.{node.attr}")
        if isinstance(base, sympy.Basic):
            return _Method(base, node.attr)
        raise Untranslatable(f"attribute .{node.attr}", node)

    def _call(self, node, env):
        func = self.expr(node.func, env)
        args = [self._argument(a, env) for a in node.args]
        kwargs = {k.arg: self.expr(k.value, env) for k in node.keywords if k.arg is not None}
        if len(kwargs) != len(node.keywords):
            raise Untranslatable("**kwargs in a call", node)
        if isinstance(func, types.FunctionType):  # a helper of trusted registry code
            return self._inline(func, args, node)
        if isinstance(func, _Method):
            name, args = func.name, [func.receiver, *args]
        elif isinstance(func, (_Module, _Function)):
            root, _, name = func.rpartition(".")
            if root.split(".")[0] not in MODULE_ROOTS + ("builtins",):
                raise Untranslatable(f"{func} is not a torch or math function", node)
            if root == "builtins":
                return BUILTINS[name](*args, **kwargs)
        else:
            raise Untranslatable("call of something that is not a known function", node)
        if name in WHY_NOT:
            raise Untranslatable(f"{name}(): {WHY_NOT[name]}", node)
        if name not in OPS:
            raise Untranslatable(f"{name}() has no sympy counterpart here", node)
        try:
            return _guard(OPS[name](*args, **kwargs))
        except TypeError as err:
            raise Untranslatable(f"{name}(): {err}", node) from None

    def _argument(self, node, env):
        if isinstance(node, ast.Starred):
            raise Untranslatable("*args in a call", node)
        value = self.expr(node, env)
        if isinstance(value, sympy.core.relational.Relational):
            return value  # the condition of where()
        return self._tensor(node, env) if not isinstance(value, sympy.Basic) else value

    def _inline(self, fn: types.FunctionType, args: list, node) -> sympy.Expr:
        if self.depth >= MAX_INLINE_DEPTH:
            raise Untranslatable(f"helpers nested deeper than {MAX_INLINE_DEPTH}", node)
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        defn = tree.body[0]
        params = [a.arg for a in defn.args.args]
        if len(args) != len(params):
            raise Untranslatable(f"{fn.__name__}() called with {len(args)} of {len(params)} args", node)
        inner = _Translator({}, fn.__globals__, self.depth + 1)
        return inner.function(defn, dict(zip(params, args)))


DEFAULT_NAMES = {"torch": _Module("torch"), "F": _Module("torch.nn.functional"),
                 "math": _Module("math")}


def _imported_names(tree: ast.Module) -> dict:
    names = dict(DEFAULT_NAMES)
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = _Module(alias.name)
                else:
                    root = alias.name.split(".")[0]
                    names[root] = _Module(root)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                is_module = full in ("torch.nn.functional", "torch.nn", "torch.special")
                names[alias.asname or alias.name] = (_Module if is_module else _Function)(full)
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:  # a screened module-level constant (EPS = 0.1): numbers become exact sympy numbers
                value = _Translator({}).expr(node.value, {})
            except (Untranslatable, ZeroDivisionError, TypeError, ValueError):
                continue
            if isinstance(value, sympy.Number):
                names[node.targets[0].id] = value
    return names


def _parse(x) -> tuple[ast.FunctionDef, dict, dict | None]:
    """The function node, the names it sees, and (for registry code) the trusted module globals."""
    if not (isinstance(x, Objective) and x.form == "registry"):
        candidate = resolve(x)
        x = candidate.load() if candidate.trusted else candidate.source  # a built-in: no code runs
    if isinstance(x, Objective):
        tree = ast.parse(textwrap.dedent(inspect.getsource(x.fn)))
        return tree.body[0], {}, x.fn.__globals__
    screened = screen(x)  # raises ObjectiveError with a line for refused code
    tree = ast.parse(x)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == screened.function_name)
    return fn, _imported_names(tree), None


def _only_rho(expr: sympy.Expr) -> sympy.Expr | None:
    """Rewrite f(pc, pr, rc, rr) in rho, or None when it is not a function of rho alone."""
    rest = {PR, RC, RR}
    out = expr.xreplace({PC: RHO + RC + PR - RR})  # rho = (pc - rc) - (pr - rr)
    if not out.free_symbols & rest:
        return out
    # beta*(pc - rc) - beta*(pr - rr) needs products distributed before the terms cancel
    out = sympy.expand(out, deep=True, power_exp=False, power_base=False, log=False,
                       multinomial=False, basic=False)
    return out if not out.free_symbols & rest else None


def translate(x, *, timeout: float = 10.0) -> Translation:
    """The closed form of anything :func:`objectives.candidate.resolve` takes (a registry name or
    built-in Objective, a Candidate, a .py path or source text).

    Raises ObjectiveError when the screen refuses source; returns a Translation with an empty
    ``variable`` and a ``reason`` when the code cannot be translated.
    """
    fn, names, trusted = _parse(x)
    params = [a.arg for a in fn.args.args]
    if params and params[0] == "self" and len(params) == 5:
        env = dict(zip(params, (_Self(), PC, PR, RC, RR)))
    elif len(params) == 5:
        env = dict(zip(params, (PC, PR, RC, RR, BETA)))
    elif len(params) == 2:
        env = dict(zip(params, (RHO, BETA)))
    else:
        raise ObjectiveError(f"cannot tell the form from the parameters ({', '.join(params)})")
    try:
        with time_limit(timeout):
            raw = _Translator(names, trusted).function(fn, env)
            f_rho = _only_rho(raw) if len(params) == 5 else raw
            if f_rho is None:
                return Translation(raw, "logps", reason="depends on the log-probs through more "
                                   "than rho = (pc - rc) - (pr - rr), so it is not pointwise")
            return Translation(f_rho.xreplace({RHO: Z / BETA}), "z")
    except Untranslatable as err:
        return Translation(None, "", reason=err.reason, line=err.line)
    except SymbolicTimeout as err:
        return Translation(None, "", reason=str(err))
    except (RecursionError, ValueError, TypeError, ZeroDivisionError) as err:
        return Translation(None, "", reason=f"sympy could not build it: {type(err).__name__}: {err}")
