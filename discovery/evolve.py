"""``evolve``: an offline proposer that searches loss expressions symbolically, with no language model.

A loss is an expression tree in ``z = beta * rho`` over the small grammar of torch operations in
:mod:`discovery.grammar` (which builds, renders, parses and evaluates the trees). The population is
rebuilt from the archive before every proposal: the baselines as the grammar's hand-written trees
(DPO, IPO, SLiC hinge, LRML), and every finished candidate whose code parses back into the grammar
(all of ``evolve``'s own, and language-model ones that fit). The parent and its partners are chosen
by :mod:`discovery.selection` (``selection="islands"``: a tournament of three on fitness within the
proposal's island, inspirations of a different behaviour first, an occasional migrant from another
island), the same selection a language-model proposer is given; a child comes from one of five
operators: replace a subtree, perturb a constant, wrap a subtree in an operation, cross the parent
over with an inspiration, or blend the two with a sigmoid gate on z as DiscoPOP's LRML does.
``selection="random"`` is the baseline of ``benchmarks/search_quality.py``: every proposal is a tree
sampled from the grammar at random, with no parent and no use of the archive but to avoid repeats.
A child is kept only if, on a grid of z, it is finite, not constant, and lower for z > 0 than for
z < 0 (it prefers the chosen answer: :func:`plausible`, evaluated with :mod:`math`, no code
executed) and new (:func:`discovery.selection.duplicate` with ``up_to_scale``: no near-duplicate of
any row's code or of a sibling proposal, a positive multiple plus a constant included, which the
campaign's deduplication by training would refuse); the sandbox validator still checks it afterwards. evolve selects for itself
(only entries in the grammar can be parents): it honours ``Context.island`` and ignores
``Context.parents``.

Everything about the proposal that becomes candidate ``i`` is drawn from
``random.Random(f"{seed}:{i}")`` and it is made for island ``i % islands``, so a proposal depends
only on the seed and the archive, and a resumed campaign proposes what an uninterrupted one would.
:meth:`EvolveProposer.propose_many` makes the proposals for candidates ``n_proposed .. n_proposed +
k - 1`` from one context, the j-th avoiding the ones before it; its first is :meth:`propose`'s.
(A campaign that records all k rows of a request before working on any keeps the resume guarantee.)
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
from discovery.proposal import Context, Entry, Proposal, normalise_code
from discovery.selection import K_INSPIRATIONS, MIGRATION, duplicate, finished, island_of, select, tree_of

# the grammar's names callers and tests reach through this module (parse is not used here)
__all__ = ["EvolveProposer", "plausible", "parse", "seed_trees", "to_code", "fold", "evaluate", "Z", "b", "c", "u"]

OPERATORS = ("subtree", "constant", "wrap", "crossover", "blend")
OPERATOR_WEIGHTS = (0.25, 0.2, 0.2, 0.2, 0.15)
CONSTANTS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
MAX_NODES, MAX_DEPTH, TRIES = 30, 8, 60
RANDOM_TRIES, RANDOM_DEPTH = 400, 4     # the random arm: draws per proposal, depth of a sampled tree
SELECTIONS = ("islands", "random")
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
    """The offline proposer: selection (:mod:`discovery.selection`), five operators, a plausibility
    and novelty pre-check; or, with ``selection="random"``, random trees of the grammar."""

    name = "evolve"

    def __init__(self, seed: int = 0, tournament: int = 3, selection: str = "islands", islands: int = 3,
                 inspirations: int = K_INSPIRATIONS, migration: float = MIGRATION):
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, not {selection!r}")
        self.seed, self.tournament, self.selection = seed, tournament, selection
        self.islands, self.inspirations, self.migration = max(1, int(islands)), inspirations, migration

    @classmethod
    def from_config(cls, config) -> "EvolveProposer":
        """From a :class:`discovery.config.CampaignConfig` (``proposer.seed/selection/islands``)."""
        p = config.proposer
        return cls(seed=p.seed, selection=p.selection, islands=p.islands)

    # -- the archive as evolve sees it ------------------------------------------------------------

    def _entries(self, context: Context) -> tuple[list[Entry], list[Entry], bool]:
        """(baselines, candidates oldest first, whether the candidates' order is the archive's).

        Baselines the archive does not hold yet are the grammar's trees with no fitness. A context
        without ``history`` (an older producer) gives its best and recent finished rows, whose
        positions say nothing of islands: they are then treated as one island."""
        seeds = seed_trees(context.beta)
        baselines = list(context.baselines)
        have = {e.name for e in baselines}
        baselines += [Entry(id=0, name=n, kind="baseline", status="pending", code=to_code(t, n))
                      for n, t in seeds.items() if n not in have]
        if context.history:
            return baselines, list(context.history), True
        seen, rows = set(), []
        for e in context.best + tuple(r for r in context.recent if r.status == "done"):
            if e.id not in seen:
                seen.add(e.id)
                rows.append(e)
        return baselines, rows, False

    def population(self, context: Context) -> list[tuple[str, float | None, tuple]]:
        """(name, fitness, tree) for the baselines and every finished candidate in the grammar."""
        baselines, candidates, _ = self._entries(context)
        out = []
        for e in baselines + [e for e in candidates if finished(e)]:
            tree = tree_of(e, context.beta)
            if tree is not None and all(p[0] != e.name for p in out):
                out.append((e.name, e.fitness, tree))
        return out

    # -- operators --------------------------------------------------------------------------------

    def _small(self, rng: random.Random, d: int = 2):
        if d == 0 or rng.random() < 0.3:
            return Z if rng.random() < 0.65 else c(rng.choice(CONSTANTS))
        if rng.random() < 0.6:
            return u(rng.choice(UNARY + ("neg",)), self._small(rng, d - 1))
        return b(rng.choice("+-*"), self._small(rng, d - 1), self._small(rng, d - 1))

    def _random_tree(self, rng: random.Random):
        """A tree drawn from the grammar (the random arm), with a constant scale half the time."""
        tree = self._small(rng, RANDOM_DEPTH)
        return b("*", c(rng.choice(CONSTANTS)), tree) if rng.random() < 0.5 else tree

    def _mutate(self, rng: random.Random, p, partners):
        """(operator, child, parent names, thought); ``p`` and each partner are (name, fitness, tree)."""
        op = rng.choices(OPERATORS, OPERATOR_WEIGHTS)[0]
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
        q = partners[rng.randrange(len(partners))]
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

    # -- proposing --------------------------------------------------------------------------------

    def propose(self, context: Context) -> Proposal:
        return self._propose(context, context.n_proposed, ())

    def propose_many(self, context: Context, k: int) -> list[Proposal]:
        """Proposals for the next ``k`` candidates (``n_proposed`` .. ``n_proposed + k - 1``), each
        new to the archive and to the ones before it; the first is :meth:`propose`'s."""
        out: list[Proposal] = []
        for j in range(max(0, int(k))):
            out.append(self._propose(context, context.n_proposed + j, tuple(out)))
        return out

    def _propose(self, context: Context, index: int, siblings: tuple[Proposal, ...]) -> Proposal:
        rng = random.Random(f"{self.seed}:{index}")
        number = index + 1
        baselines, candidates, indexed = self._entries(context)
        known = set(context.known_codes) | {normalise_code(s.code) for s in siblings}
        against = baselines + candidates + [
            Entry(id=0, name=s.name, kind="candidate", status="proposed", code=s.code) for s in siblings]

        def fresh(tree, name: str) -> str | None:
            """The code of ``tree`` when it fits, is plausible and is new; else None."""
            if size(tree) > MAX_NODES or depth(tree) > MAX_DEPTH or not plausible(tree):
                return None
            code = to_code(tree, name)
            if normalise_code(code) in known or duplicate(code, against, up_to_scale=True, beta=context.beta) is not None:
                return None
            return code

        if self.selection == "random":
            name = slug(f"evo{number}_random")
            for _ in range(RANDOM_TRIES):
                tree = fold(self._random_tree(rng))
                code = fresh(tree, name)
                if code is not None:
                    return Proposal(thought=f"Sampled `{render(tree, False)}` at random from the grammar "
                                            f"(random search: no parent).",
                                    name=name, code=code, proposer=self.name)
        else:
            n = self.islands if indexed else 1
            first = context.island if context.island is not None and indexed else index
            island = island_of(first + (index - context.n_proposed), n)
            beta = context.beta
            chosen = select(baselines + candidates, rng=rng, n_islands=n, island=island,
                            k_inspirations=self.inspirations, tournament=self.tournament,
                            migration=self.migration, eligible=lambda e: tree_of(e, beta) is not None,
                            beta=beta)
            where = ""
            if n > 1:
                where = f" (island {island + 1} of {n}"
                where += f"; `{chosen.migrant.name}` migrated from another island)" if chosen.migrant else ")"
            if chosen.parent is not None:
                parent = (chosen.parent.name, chosen.parent.fitness, tree_of(chosen.parent, beta))
                partners = [(e.name, e.fitness, tree_of(e, beta)) for e in chosen.inspirations] or [parent]
                for _ in range(TRIES):
                    op, tree, parents, thought = self._mutate(rng, parent, partners)
                    tree = fold(tree)
                    name = slug(f"evo{number}_{op}_{_short(parents[0])}")
                    code = fresh(tree, name)
                    if code is not None:
                        return Proposal(thought=thought[:-1] + where + ".", name=name, code=code,
                                        proposer=self.name, parents=parents)
        # nothing plausible and new in all those draws: a rescaled DPO is always both
        k = float(f"{rng.uniform(0.3, 3.0):.3g}")
        name = slug(f"evo{number}_scaled_dpo")
        return Proposal(thought=f"Scaled DPO's logistic loss by {k} to change its effective step size.",
                        name=name, code=to_code(b("*", c(k), u("neg", u("logsigmoid", Z))), name),
                        proposer=self.name, parents=("dpo",))
