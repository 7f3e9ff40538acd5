"""``evolve``: an offline proposer that searches loss expressions symbolically, with no language model.

A loss is an expression tree in ``z = beta * rho`` over a small grammar of torch operations::

    expr := z | constant | op(expr) | expr + expr | expr - expr | expr * expr | -expr
    op   := logsigmoid | sigmoid | exp | log1p | softplus | tanh | relu | abs | square

Trees are stored as nested tuples: ``("z",)``, ``("c", 0.5)``, ``("u", "exp", child)``,
``("b", "+", left, right)``. The population is rebuilt from the archive before every proposal: the
baselines as hand-written trees (DPO, IPO, SLiC hinge, LRML), and every finished candidate whose
code parses back into the grammar (all of ``evolve``'s own, and language-model ones that fit).
Parents are picked by fitness (tournament of three); a child comes from one of five operators:
replace a subtree, perturb a constant, wrap a subtree in an operation, cross two parents over, or
blend two parents with a sigmoid gate on z as DiscoPOP's LRML does. A child is kept only if, on a
grid of z, it is finite, not constant, and lower for z > 0 than for z < 0 (it prefers the chosen
answer); the sandbox validator still checks it afterwards.

Everything is drawn from ``random.Random(f"{seed}:{n_proposed}")``, so a proposal depends only on
the seed and the archive, and a resumed campaign proposes what an uninterrupted one would.
The trees are evaluated here with :mod:`math` by a small interpreter: no code is executed.
"""

from __future__ import annotations

import ast
import math
import random
import re

from discovery.parsing import slug
from discovery.proposal import Context, Proposal, normalise_code

UNARY = ("logsigmoid", "sigmoid", "exp", "log1p", "softplus", "tanh", "relu", "abs", "square")
TORCH_NAME = {"logsigmoid": "F.logsigmoid", "softplus": "F.softplus"}  # the rest: torch.<op>
OPERATORS = ("subtree", "constant", "wrap", "crossover", "blend")
OPERATOR_WEIGHTS = (0.25, 0.2, 0.2, 0.2, 0.15)
CONSTANTS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
MAX_NODES, MAX_DEPTH, TRIES = 30, 8, 60
GRID = [i / 4 for i in range(-40, 41)]  # z in [-10, 10]: margins up to +-100 at beta = 0.1

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
    """The baselines as trees in z = beta * rho."""
    return {
        "dpo": u("neg", u("logsigmoid", Z)),
        # IPO: (rho - 1/(2 beta))^2 = (z - 1/2)^2 / beta^2
        "ipo": b("*", c(round(1 / beta ** 2, 4)), u("square", b("-", Z, c(0.5)))),
        "hinge": u("relu", b("-", c(1.0), Z)),
        "lrml": blend(u("neg", u("logsigmoid", Z)), u("exp", u("neg", Z)), 0.05),
    }


# -- rendering and parsing --------------------------------------------------------------------

def _fmt(v: float) -> str:
    s = f"{v:.4g}"
    return s if "e" not in s else repr(float(s))


def render(t, torch_names: bool = True) -> str:
    """Python source for tree ``t`` (``F.``/``torch.`` prefixes unless ``torch_names=False``)."""
    def go(t, level: int) -> str:
        tag = t[0]
        if tag == "z":
            return "z"
        if tag == "c":
            s = _fmt(t[1])
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
    return (f"def {name}(rho, beta):\n"
            f"    \"\"\"loss = {render(t, torch_names=False)}, with z = beta * rho.\"\"\"\n"
            f"    z = beta * rho\n"
            f"    return {render(t)}\n")


# -- evaluation on a grid (pure math, for the pre-check) --------------------------------------

def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


MATH = {"logsigmoid": lambda x: -_softplus(-x), "sigmoid": _sigmoid, "exp": math.exp,
        "log1p": math.log1p, "softplus": _softplus, "tanh": math.tanh,
        "relu": lambda x: max(x, 0.0), "abs": abs, "square": lambda x: x * x, "neg": lambda x: -x}


def evaluate(t, z: float) -> float:
    tag = t[0]
    if tag == "z":
        return z
    if tag == "c":
        return t[1]
    if tag == "u":
        return MATH[t[1]](evaluate(t[2], z))
    x, y = evaluate(t[2], z), evaluate(t[3], z)
    return x + y if t[1] == "+" else x - y if t[1] == "-" else x * y


def plausible(t) -> bool:
    """Finite and bounded on the grid, not constant, and lower for z > 0 than for z < 0."""
    try:
        ys = [evaluate(t, z) for z in GRID]
    except (OverflowError, ValueError, ZeroDivisionError):
        return False
    if not all(math.isfinite(y) and abs(y) < 1e6 for y in ys):
        return False
    mid = len(GRID) // 2
    if max(ys) - min(ys) < 1e-3:
        return False
    return ys[mid - 4] > ys[mid + 4] and ys[mid - 20] > ys[mid + 20]  # z = -1 vs 1, -5 vs 5


# -- tree surgery -----------------------------------------------------------------------------

def paths(t, here=()):
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


def _short(parent: str) -> str:
    """``dpo`` stays ``dpo``; ``evo12_wrap_dpo`` becomes ``of12`` (names do not nest)."""
    m = re.match(r"evo(\d+)_", parent)
    return f"of{m.group(1)}" if m else parent


class EvolveProposer:
    """The offline proposer: tournament selection, five operators, a plausibility pre-check."""

    name = "evolve"

    def __init__(self, seed: int = 0, tournament: int = 3):
        self.seed = seed
        self.tournament = tournament

    def population(self, context: Context) -> list[tuple[str, float | None, tuple]]:
        """(name, fitness, tree) for the baselines and every finished candidate in the grammar."""
        seeds = seed_trees(context.beta)
        pop = []
        for e in context.baselines:
            tree = seeds.get(e.name) or parse(e.code)
            if tree is not None:
                pop.append((e.name, e.fitness, tree))
        for e in context.best + tuple(r for r in context.recent if r.status == "done"):
            tree = parse(e.code)
            if tree is not None and all(p[0] != e.name for p in pop):
                pop.append((e.name, e.fitness, tree))
        have = {p[0] for p in pop}
        pop.extend((n, None, t) for n, t in seeds.items() if n not in have)  # before baselines ran
        return pop

    def _pick(self, rng: random.Random, pop):
        contestants = [rng.choice(pop) for _ in range(min(self.tournament, len(pop)))]
        return max(contestants, key=lambda p: -math.inf if p[1] is None else p[1])

    def _small(self, rng: random.Random, d: int = 2):
        if d == 0 or rng.random() < 0.3:
            return Z if rng.random() < 0.65 else c(rng.choice(CONSTANTS))
        if rng.random() < 0.6:
            return u(rng.choice(UNARY + ("neg",)), self._small(rng, d - 1))
        return b(rng.choice("+-*"), self._small(rng, d - 1), self._small(rng, d - 1))

    def _mutate(self, rng: random.Random, pop):
        op = rng.choices(OPERATORS, OPERATOR_WEIGHTS)[0]
        p = self._pick(rng, pop)
        tree, spots = p[2], list(paths(p[2]))
        fit = "not yet scored" if p[1] is None else f"fitness {p[1]:.3f}"
        if op == "subtree":
            where, new = rng.choice(spots), self._small(rng)
            old = at(tree, where)
            return (op, replace(tree, where, new), (p[0],),
                    f"Replaced the part `{render(old, False)}` of `{p[0]}` ({fit}) with "
                    f"`{render(new, False)}` to change the shape of the loss there.")
        if op == "constant":
            consts = [s for s in spots if at(tree, s)[0] == "c"]
            if consts:
                where = rng.choice(consts)
                old = at(tree, where)[1]
                new = float(f"{old * math.exp(rng.gauss(0, 0.5)):.3g}")
                return (op, replace(tree, where, c(new)), (p[0],),
                        f"Perturbed the constant {_fmt(old)} -> {_fmt(new)} in `{p[0]}` ({fit}) "
                        f"to tune its scale or offset.")
            op = "wrap"
        if op == "wrap":
            where = rng.choice(spots)
            old = at(tree, where)
            kind = rng.random()
            if kind < 0.5:
                new = u(rng.choice(UNARY), old)
                if new[1] == "log1p":
                    new = u("log1p", u("abs", old))
            elif kind < 0.75:
                new = b("*", c(rng.choice(CONSTANTS)), old)
            else:
                new = b("+", old, b("*", c(rng.choice(CONSTANTS)), u(rng.choice(UNARY), u("neg", Z))))
            return (op, replace(tree, where, new), (p[0],),
                    f"Wrapped `{render(old, False)}` in `{p[0]}` ({fit}) as `{render(new, False)}` "
                    f"to reshape how the loss responds to the margin.")
        q = self._pick(rng, pop)
        qfit = "not yet scored" if q[1] is None else f"fitness {q[1]:.3f}"
        if op == "crossover":
            where, donor = rng.choice(spots), rng.choice(list(paths(q[2])))
            part = at(q[2], donor)
            return (op, replace(tree, where, part), (p[0], q[0]),
                    f"Crossed `{p[0]}` ({fit}) with `{q[0]}` ({qfit}): put `{render(part, False)}` "
                    f"from the second in place of `{render(at(tree, where), False)}` in the first.")
        tau = rng.choice((0.05, 0.1, 0.25, 0.5, 1.0))
        return (op, blend(tree, q[2], tau), (p[0], q[0]),
                f"Blended `{p[0]}` ({fit}) for negative margins with `{q[0]}` ({qfit}) for positive "
                f"ones through a sigmoid gate on z/{tau}, as LRML mixes the logistic and "
                f"exponential losses.")

    def propose(self, context: Context) -> Proposal:
        rng = random.Random(f"{self.seed}:{context.n_proposed}")
        pop = self.population(context)
        number = context.n_proposed + 1
        for _ in range(TRIES):
            op, tree, parents, thought = self._mutate(rng, pop)
            tree = fold(tree)
            if size(tree) > MAX_NODES or depth(tree) > MAX_DEPTH or not plausible(tree):
                continue
            name = slug(f"evo{number}_{op}_{_short(parents[0])}")
            code = to_code(tree, name)
            if normalise_code(code) in context.known_codes or any(
                    render(tree) == render(p[2]) for p in pop):
                continue
            return Proposal(thought=thought, name=name, code=code, proposer=self.name,
                            parents=parents)
        # nothing plausible and new in TRIES draws: a rescaled DPO is always both
        k = float(f"{rng.uniform(0.3, 3.0):.3g}")
        name = slug(f"evo{number}_scaled_dpo")
        return Proposal(thought=f"Scaled DPO's logistic loss by {k} to change its effective step size.",
                        name=name, code=to_code(b("*", c(k), u("neg", u("logsigmoid", Z))), name),
                        proposer=self.name, parents=("dpo",))
