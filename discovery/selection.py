"""Search strategy: which archive entries the next proposal builds on, and whether a proposal is new.

Islands. The candidates are split into ``n_islands`` islands by their index among the campaign's
candidates (the row order, oldest first): candidate ``i`` lives on island ``i % n_islands``
(:func:`island_of`), so the proposal that becomes candidate ``i`` is made for island ``i % n``.
The baselines belong to every island. Nothing is stored: the islands follow from the archive's row
order, so a resumed campaign sees the same islands as an uninterrupted one. (With
``proposals_per_request`` > 1 the rows of one request fall on consecutive islands; the offline
proposer selects once per proposal, a language model once per request, for the request's first
row.)

:func:`select` (deterministic given its ``random.Random``):

* parent: a tournament of ``tournament`` (with replacement) on fitness among the *finished* entries
  of the island (``status == "done"`` with a finite fitness), baselines included; when nothing there
  is finished yet, a baseline (or any eligible entry) drawn uniformly;
* inspirations: ``k_inspirations`` more finished entries of the island, each a tournament among the
  entries whose behaviour :func:`descriptor` differs from the parent's and the inspirations' chosen
  so far (novelty first), falling back to the rest of the island;
* migration: with probability ``migration`` (one draw per selection, always made) the last
  inspiration is instead the best finished candidate of another island, drawn uniformly.

``uniform=True`` is the baseline strategy for a proposer that needs a parent (the language model
with ``proposer.selection: random``): parent and inspirations uniform over every finished entry, no
islands, no tournament, no novelty.

The behaviour descriptor of an entry (:func:`descriptor`) is the pair ``(kl, shape)``:

* ``kl``: ``round(log2(KL / DPO's KL))`` clamped to [-2, 2] from ``metrics["mean"]["kl"]`` (the
  policy's KL to the reference after training), or ``round(log2(KL))`` clamped to [-3, 6] when
  DPO's KL is unknown; None before the row has trained;
* ``shape``: how the loss behaves near z = beta * rho = 0, as ``(sign, size, curvature)``: the
  sign of f'(0) (-1, 0 when |f'(0)| < 1e-3, 1), its size class ``round(log2(|f'(0)| / 0.5))``
  clamped to [-2, 2] (None when flat; DPO's -log sigmoid(z) has f'(0) = -0.5: ``(-1, 0, "+")``),
  and the sign of f''(0) (``"+"``, ``"-"``, ``"0"`` when |f''(0)| < 1e-3, ``"?"`` unknown). Both come from the
  expression tree (:mod:`discovery.grammar`, finite differences with math, no code is run) when
  the code parses into the grammar; else from an inspection record if the entry carries one
  (``inspection["fprime0"]["value"]`` and ``inspection["convexity"]["convex"]``); else None.

:func:`duplicate` / :func:`novel` are the cheap novelty check run on a proposal before it is
validated: a proposal is a near-duplicate of an entry when their code is the same after
canonicalisation (:func:`canonical`: docstrings dropped, the function and its locals renamed in
order of appearance, constant arithmetic folded, ints written as floats; so renaming, layout and
folding ``0.5 * 2`` into ``1.0`` do not make code new), or when both parse into the grammar and
compute the same values on a grid of z in [-10, 10] (relative tolerance ``tol``: algebraic
rewrites, ``z * 0.5 * 2`` against ``z``). A scaled loss is *new* by default; with
``up_to_scale=True`` (what :mod:`discovery.evolve` uses, since the campaign's default deduplication
by training refuses such a row and the slot is spent) a grammar loss ``k * g + constant`` with k > 0
duplicates ``g``.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import math
import random
from typing import Callable, Iterable, Sequence

from discovery.grammar import evaluate, fold, parse, seed_trees
from discovery.proposal import Context, Entry

TOURNAMENT = 3
MIGRATION = 0.1             # chance per selection that one inspiration comes from another island
K_INSPIRATIONS = 2
GRID = [i / 4 for i in range(-40, 41)]  # z in [-10, 10], as discovery.evolve's plausibility grid
NOVELTY_TOL = 1e-4


def island_of(index: int, n_islands: int) -> int:
    """The island of the candidate with index ``index`` (0 = the campaign's first candidate)."""
    return index % max(1, n_islands)


@dataclasses.dataclass(frozen=True)
class Selection:
    parent: Entry | None                    # None: nothing eligible at all
    inspirations: tuple[Entry, ...]
    island: int
    migrant: Entry | None = None            # the inspiration that came from another island, if any

    @property
    def entries(self) -> tuple[Entry, ...]:
        """Parent first, then the inspirations (what ``Context.parents`` holds)."""
        return ((self.parent,) if self.parent is not None else ()) + self.inspirations


def finished(e: Entry) -> bool:
    return e.status == "done" and isinstance(e.fitness, (int, float)) and math.isfinite(e.fitness)


def _fitness(e: Entry) -> float:
    return e.fitness if finished(e) else -math.inf


# -- behaviour descriptors ------------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def tree_of_code(code: str):
    """The folded grammar tree of ``code``, or None (cached: codes repeat across proposals)."""
    tree = parse(code or "")
    return fold(tree) if tree is not None else None


def tree_of(e: Entry, beta: float | None = None):
    """``e``'s tree: its code's, or for a baseline the grammar's hand-written one (needs ``beta``)."""
    tree = tree_of_code(e.code)
    if tree is None and e.kind == "baseline" and beta is not None:
        tree = seed_trees(beta).get(e.name)
    return tree


def _class(v: float, ref: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, round(math.log2(v / ref))))


def slope_curvature(tree, h: float = 1e-3) -> tuple[float, float] | None:
    """(f'(0), f''(0)) of ``tree`` in z by central differences, or None where it is not finite."""
    try:
        fm, f0, fp = (evaluate(tree, z) for z in (-h, 0.0, h))
    except (OverflowError, ValueError, ZeroDivisionError):
        return None
    d1, d2 = (fp - fm) / (2 * h), (fp - 2 * f0 + fm) / (h * h)
    return (d1, d2) if math.isfinite(d1) and math.isfinite(d2) else None


def shape(e: Entry, beta: float | None = None) -> tuple[int, int | None, str] | None:
    """(slope class, curvature class) of ``e``'s loss near z = 0 (see the module docstring)."""
    tree = tree_of(e, beta)
    d1 = d2 = None
    if tree is not None:
        got = slope_curvature(tree)
        if got is not None:
            d1, d2 = got
    else:
        inspection = getattr(e, "inspection", None) or (e.metrics or {}).get("inspection")
        if isinstance(inspection, dict):
            v = (inspection.get("fprime0") or {}).get("value")
            d1 = v if isinstance(v, (int, float)) and math.isfinite(v) else None
            convex = (inspection.get("convexity") or {}).get("convex")
            d2 = 1.0 if convex is True else None
    if d1 is None:
        return None
    flat = abs(d1) < 1e-3
    sign, size = (0, None) if flat else ((-1 if d1 < 0 else 1), _class(abs(d1), 0.5, -2, 2))
    curve = "?" if d2 is None else "0" if abs(d2) < 1e-3 else ("+" if d2 > 0 else "-")
    return sign, size, curve


def mean_kl(e: Entry) -> float | None:
    kl = ((e.metrics or {}).get("mean") or {}).get("kl")
    return float(kl) if isinstance(kl, (int, float)) and math.isfinite(kl) and kl > 0 else None


def descriptor(e: Entry, *, dpo_kl: float | None = None, beta: float | None = None) -> tuple:
    """(KL class, shape near 0) of ``e``: see the module docstring; parts that are unknown are None."""
    kl = mean_kl(e)
    if kl is None:
        kl_class = None
    elif dpo_kl:
        kl_class = _class(kl, dpo_kl, -2, 2)
    else:
        kl_class = _class(kl, 1.0, -3, 6)
    return kl_class, shape(e, beta)


# -- selection ----------------------------------------------------------------------------------

def _members(entries: Sequence[Entry], n_islands: int) -> tuple[list[Entry], dict[int, list[Entry]]]:
    """(baselines, {island: candidates}); a candidate's index is its position among the candidates."""
    baselines, islands = [], {i: [] for i in range(max(1, n_islands))}
    index = 0
    for e in entries:
        if e.kind == "baseline":
            baselines.append(e)
        else:
            islands[island_of(index, n_islands)].append(e)
            index += 1
    return baselines, islands


def _tournament(rng: random.Random, pool: Sequence[Entry], size: int) -> int:
    """The position in ``pool`` of the fittest of ``size`` entries drawn with replacement."""
    contestants = [rng.randrange(len(pool)) for _ in range(min(size, len(pool)))]
    return max(contestants, key=lambda i: _fitness(pool[i]))  # ties: the first drawn


def select(entries: Sequence[Entry], *, rng: random.Random, n_islands: int = 1, island: int | None = None,
           k_inspirations: int = K_INSPIRATIONS, tournament: int = TOURNAMENT, migration: float = MIGRATION,
           eligible: Callable[[Entry], bool] | None = None, beta: float | None = None,
           uniform: bool = False) -> Selection:
    """The parent and inspirations of the next proposal (see the module docstring).

    ``entries``: the baselines and every candidate, candidates oldest first (their order gives their
    islands); ``island``: the island to select on (None: the next candidate's, ``len(candidates) %
    n_islands``); ``eligible``: which entries may be chosen at all (e.g. those in the grammar) --
    ineligible candidates still count for the islands' order.
    """
    n_islands = max(1, n_islands)
    baselines, islands = _members(entries, n_islands)
    if island is None:
        island = island_of(sum(len(v) for v in islands.values()), n_islands)
    island %= n_islands
    ok = eligible or (lambda e: True)
    dpo = next((b for b in baselines if b.name == "dpo"), None)
    dpo_kl = mean_kl(dpo) if dpo is not None else None
    migrate_draw, other_draw = rng.random(), rng.random()  # always drawn: stable streams

    if uniform:
        pool = [e for e in entries if finished(e) and ok(e)]
        if not pool:
            pool = [e for e in entries if ok(e)]
        if not pool:
            return Selection(None, (), island)
        picks = rng.sample(pool, min(len(pool), 1 + k_inspirations))
        return Selection(picks[0], tuple(picks[1:]), island)

    local = [e for e in baselines + islands[island] if ok(e)]
    pool = [e for e in local if finished(e)]
    if pool:
        parent = pool[_tournament(rng, pool, tournament)]
    else:
        fallback = [e for e in baselines if ok(e)] or local or [e for e in entries if ok(e)]
        if not fallback:
            return Selection(None, (), island)
        parent = fallback[rng.randrange(len(fallback))]

    @functools.lru_cache(maxsize=None)
    def desc(i: int) -> tuple:
        return descriptor(pool[i], dpo_kl=dpo_kl, beta=beta)

    seen = {descriptor(parent, dpo_kl=dpo_kl, beta=beta)}
    left = [i for i, e in enumerate(pool) if e is not parent]
    inspirations = []
    for _ in range(k_inspirations):
        if not left:
            break
        fresh = [i for i in left if desc(i) not in seen]
        among = fresh or left
        chosen_i = among[_tournament(rng, [pool[i] for i in among], tournament)]
        inspirations.append(pool[chosen_i])
        seen.add(desc(chosen_i))
        left.remove(chosen_i)

    migrant = None
    others = [i for i in range(n_islands) if i != island]
    if k_inspirations > 0 and others and migrate_draw < migration:
        source = others[min(int(other_draw * len(others)), len(others) - 1)]
        done = [e for e in islands[source] if finished(e) and ok(e)]
        if done:
            migrant = max(done, key=_fitness)
            if len(inspirations) >= k_inspirations:
                inspirations[-1] = migrant
            else:
                inspirations.append(migrant)
    return Selection(parent, tuple(inspirations), island, migrant)


def for_context(context: Context, *, seed: int, n_islands: int, k_inspirations: int = K_INSPIRATIONS,
                uniform: bool = False, eligible: Callable[[Entry], bool] | None = None,
                migration: float = MIGRATION, index: int | None = None) -> Selection:
    """:func:`select` on a proposer's context: the baselines and ``context.history``, for the
    proposal that becomes candidate ``index`` (default ``context.n_proposed``), on
    ``context.island`` when set, else that candidate's island; the random stream is
    ``Random(f"select:{seed}:{index}")``, so the same archive gives the same selection."""
    index = context.n_proposed if index is None else index
    island = context.island if context.island is not None else island_of(index, n_islands)
    return select(context.baselines + context.history, rng=random.Random(f"select:{seed}:{index}"),
                  n_islands=n_islands, island=island, k_inspirations=k_inspirations, eligible=eligible,
                  migration=migration, beta=context.beta, uniform=uniform)


# -- novelty --------------------------------------------------------------------------------------

class _Canon(ast.NodeTransformer):
    """Rename the function and its locals in order of appearance; fold constant arithmetic."""

    def __init__(self):
        self.names: dict[str, str] = {}

    def local(self, name: str) -> str:
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_FunctionDef(self, node):
        node.name = "f"
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            body = body[1:] or [ast.Pass()]
        node.body = body
        for a in node.args.args + node.args.kwonlyargs:
            a.arg = self.local(a.arg)
            a.annotation = None
        node.returns = None
        node.decorator_list = []
        for stmt in ast.walk(node):  # every name bound inside is local
            if isinstance(stmt, ast.Name) and isinstance(stmt.ctx, ast.Store):
                self.local(stmt.id)
        self.generic_visit(node)
        return node

    def visit_Name(self, node):
        if node.id in self.names:
            node.id = self.names[node.id]
        return node

    def visit_Constant(self, node):
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return ast.Constant(float(f"{float(node.value):.10g}"))
        return node

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if isinstance(node.operand, ast.Constant) and isinstance(node.operand.value, float):
            if isinstance(node.op, ast.USub):
                return ast.Constant(-node.operand.value)
            if isinstance(node.op, ast.UAdd):
                return node.operand
        return node

    def visit_BinOp(self, node):
        self.generic_visit(node)
        x, y = node.left, node.right
        if isinstance(x, ast.Constant) and isinstance(y, ast.Constant) and \
                isinstance(x.value, float) and isinstance(y.value, float):
            ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
                   ast.Div: lambda a, b: a / b, ast.Pow: lambda a, b: a ** b}
            op = ops.get(type(node.op))
            try:
                v = op(x.value, y.value) if op else None
            except (ArithmeticError, ValueError):
                v = None
            if isinstance(v, float) and math.isfinite(v):
                return ast.Constant(float(f"{v:.10g}"))
        return node


@functools.lru_cache(maxsize=4096)
def canonical(code: str) -> str | None:
    """``code`` up to names, layout, docstrings and constant arithmetic (None: not Python)."""
    try:
        module = ast.parse(code or "")
        return ast.dump(_Canon().visit(module), annotate_fields=False)
    except (SyntaxError, ValueError, RecursionError):
        return None


@functools.lru_cache(maxsize=4096)
def _values(tree) -> tuple[float, ...] | None:
    """``tree`` on :data:`GRID`, or None (not in the grammar, or not finite there)."""
    if tree is None:
        return None
    try:
        ys = tuple(evaluate(tree, z) for z in GRID)
    except (OverflowError, ValueError, ZeroDivisionError):
        return None
    return ys if all(math.isfinite(y) for y in ys) else None


def _same_values(a: tuple[float, ...], b: tuple[float, ...], tol: float) -> bool:
    scale = 1.0 + max(max(abs(y) for y in a), max(abs(y) for y in b))
    return all(abs(x - y) <= tol * scale for x, y in zip(a, b))


def _slopes(ys: tuple[float, ...]) -> list[float]:
    h = GRID[1] - GRID[0]
    return [(ys[i + 1] - ys[i - 1]) / (2 * h) for i in range(1, len(ys) - 1)]


def _same_up_to_scale(a: tuple[float, ...], b: tuple[float, ...], tol: float) -> bool:
    """Whether a = k * b + constant on the grid for some k > 0 (equal slopes up to k)."""
    da, db = _slopes(a), _slopes(b)
    norm = sum(y * y for y in db)
    if norm == 0:
        return False
    k = sum(x * y for x, y in zip(da, db)) / norm
    scale = 1.0 + max(abs(x) for x in da)
    return k > 0 and all(abs(x - k * y) <= tol * scale for x, y in zip(da, db))


def duplicate(code: str, entries: Iterable[Entry], *, tol: float = NOVELTY_TOL, up_to_scale: bool = False,
              beta: float | None = None) -> Entry | None:
    """The first entry whose code ``code`` nearly duplicates (see the module docstring), or None.
    ``up_to_scale``: grammar losses that differ by a factor > 0 and a constant count as the same
    (they train alike under Adam: the campaign's ``execution.dedupe: training`` would refuse them).
    ``beta``: a baseline whose registry code is no grammar text is compared through its
    hand-written tree (:func:`tree_of`)."""
    mine, values = canonical(code), _values(tree_of_code(code))
    for e in entries:
        if not e.code:
            continue
        if mine is not None and canonical(e.code) == mine:
            return e
        if values is not None:
            theirs = _values(tree_of(e, beta))
            if theirs is not None and (_same_values(values, theirs, tol) or
                                       (up_to_scale and _same_up_to_scale(values, theirs, tol))):
                return e
    return None


def novel(code: str, entries: Iterable[Entry], *, tol: float = NOVELTY_TOL, up_to_scale: bool = False,
          beta: float | None = None) -> bool:
    """Whether ``code`` is no near-duplicate of any entry's code (:func:`duplicate`)."""
    return duplicate(code, entries, tol=tol, up_to_scale=up_to_scale, beta=beta) is None
