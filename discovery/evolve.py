"""``evolve``: an offline proposer that searches loss expressions symbolically, with no language model.

A loss is an expression tree in ``z = beta * rho`` over the small grammar of torch operations in
:mod:`discovery.grammar` (which builds, renders, parses and evaluates the trees). The population is
rebuilt from the archive before every proposal: the baselines as the grammar's hand-written trees
(DPO, IPO, SLiC hinge, LRML), and every finished candidate whose code parses back into the grammar
(all of ``evolve``'s own, and language-model ones that fit). Parents are picked by fitness
(tournament of three); a child comes from one of five operators: replace a subtree, perturb a
constant, wrap a subtree in an operation, cross two parents over, or blend two parents with a
sigmoid gate on z as DiscoPOP's LRML does. A child is kept only if, on a grid of z, it is finite,
not constant, and lower for z > 0 than for z < 0 (it prefers the chosen answer: :func:`plausible`,
evaluated with :mod:`math`, no code executed); the sandbox validator still checks it afterwards.

Everything is drawn from ``random.Random(f"{seed}:{n_proposed}")``, so a proposal depends only on
the seed and the archive, and a resumed campaign proposes what an uninterrupted one would.
"""

from __future__ import annotations

import math
import random
import re

from discovery.grammar import (
    UNARY, Z, at, b, blend, c, depth, evaluate, fmt, fold, parse, paths, render, replace, seed_trees,
    size, to_code, u,
)
from discovery.parsing import slug
from discovery.proposal import Context, Proposal, normalise_code

OPERATORS = ("subtree", "constant", "wrap", "crossover", "blend")
OPERATOR_WEIGHTS = (0.25, 0.2, 0.2, 0.2, 0.15)
CONSTANTS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
MAX_NODES, MAX_DEPTH, TRIES = 30, 8, 60
GRID = [i / 4 for i in range(-40, 41)]  # z in [-10, 10]: margins up to +-100 at beta = 0.1


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
                        f"Perturbed the constant {fmt(old)} -> {fmt(new)} in `{p[0]}` ({fit}) "
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
