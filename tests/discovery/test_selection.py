"""Search strategy: island selection, novelty, the random arm, several proposals, constant sweeps."""

import ast
import random

import pytest
import torch

import objectives
from discovery import constants_sweep, evolve, selection
from discovery.config import CampaignConfig
from discovery.grammar import Z, b, c, parse, to_code, u
from discovery.proposal import Context, Entry

DPO = u("neg", u("logsigmoid", Z))
HINGE = u("relu", b("-", c(1.0), Z))


def cand(i, fitness=None, code=None, status="done", kl=None, name=None):
    code = code if code is not None else to_code(b("*", c(1.0 + i / 10), DPO), f"c{i}")
    return Entry(id=10 + i, name=name or f"c{i}", kind="candidate", status=status, code=code, fitness=fitness,
                 metrics={"mean": {"kl": kl}} if kl is not None else None)


def base(name, fitness, kl=None):
    return Entry(id=1, name=name, kind="baseline", status="done", code=objectives.get(name).source,
                 fitness=fitness, metrics={"mean": {"kl": kl}} if kl is not None else None)


BASELINES = (base("dpo", 0.5, kl=2.0), base("ipo", 0.2))


def test_selection_is_deterministic_given_its_random():
    entries = BASELINES + tuple(cand(i, fitness=i / 10) for i in range(9))
    picks = [selection.select(entries, rng=random.Random(f"s{k}"), n_islands=3, island=k % 3, beta=0.1)
             for k in range(30)]
    again = [selection.select(entries, rng=random.Random(f"s{k}"), n_islands=3, island=k % 3, beta=0.1)
             for k in range(30)]
    assert [(p.parent.id, [e.id for e in p.inspirations]) for p in picks] == \
        [(p.parent.id, [e.id for e in p.inspirations]) for p in again]
    assert len({p.parent.name for p in picks}) > 2  # it is random across streams


def test_islands_are_respected_and_baselines_belong_to_every_island():
    entries = BASELINES + tuple(cand(i, fitness=0.3 + i / 100) for i in range(7))
    assert [selection.island_of(i, 3) for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    for island, members in ((0, {"c0", "c3", "c6"}), (1, {"c1", "c4"}), (2, {"c2", "c5"})):
        seen = set()
        for k in range(200):
            s = selection.select(entries, rng=random.Random(k), n_islands=3, island=island, migration=0.0)
            assert s.island == island and s.migrant is None
            seen |= {e.name for e in s.entries}
        assert seen == members | {"dpo", "ipo"}, (island, seen)
    # no island given: the next candidate's (7 candidates so far: candidate 7 is on island 1)
    assert selection.select(entries, rng=random.Random(0), n_islands=3).island == 1


def test_tournament_prefers_fitness_and_only_finished_rows_compete():
    entries = BASELINES + (cand(0, 0.9), cand(1, None, status="failed"), cand(2, 0.1),
                           cand(3, 2.0, status="training"))
    parents = [selection.select(entries, rng=random.Random(k), n_islands=1).parent.name for k in range(300)]
    assert parents.count("c0") > parents.count("dpo") > parents.count("c2")
    assert "c1" not in parents and "c3" not in parents
    # nothing finished yet: a baseline, drawn uniformly
    fresh = tuple(Entry(id=i, name=n, kind="baseline", status="proposed", code="") for i, n in enumerate("ab"))
    got = {selection.select(fresh, rng=random.Random(k)).parent.name for k in range(50)}
    assert got == {"a", "b"}
    assert selection.select((), rng=random.Random(0)).parent is None


def test_migration_happens_at_its_rate_and_brings_another_islands_best():
    entries = BASELINES + tuple(cand(i, fitness=i / 10) for i in range(9))
    for rate in (0.0, 0.25):
        picks = [selection.select(entries, rng=random.Random(k), n_islands=3, island=0, migration=rate)
                 for k in range(2000)]
        migrants = [p.migrant for p in picks if p.migrant is not None]
        assert abs(len(migrants) / len(picks) - rate) < 0.035, (rate, len(migrants))
        assert {m.name for m in migrants} <= {"c7", "c8"}  # the best of island 1 (c1 c4 c7) or 2 (c2 c5 c8)
        assert all(p.migrant is None or p.inspirations[-1] is p.migrant for p in picks)
        assert all(len(p.inspirations) <= 2 for p in picks)
    assert {m.name for m in migrants} == {"c7", "c8"}


def test_inspirations_prefer_a_different_behaviour():
    like_dpo = [cand(i, fitness=0.9 - i / 100, kl=2.0, code=to_code(b("*", c(1 + i / 100), DPO), f"d{i}"))
                for i in range(4)]
    different = cand(4, fitness=0.05, kl=2.0, code=to_code(HINGE, "h"), name="hinge_like")
    entries = tuple(like_dpo) + (different,)
    for k in range(50):
        s = selection.select(entries, rng=random.Random(k), n_islands=1, k_inspirations=1, beta=0.1)
        assert s.parent.name != "hinge_like" and [e.name for e in s.inspirations] == ["hinge_like"]


def test_behaviour_descriptor():
    d = selection.descriptor
    dpo = cand(0, 0.5, kl=2.0, code=to_code(DPO, "dpo"))
    assert d(dpo, dpo_kl=2.0) == (0, (-1, 0, "+"))  # -logsigmoid: f'(0) = -1/2, f''(0) = 1/4
    assert d(cand(1, 0.5, kl=8.0, code=to_code(HINGE, "h")), dpo_kl=2.0) == (2, (-1, 1, "0"))
    assert d(cand(2, 0.5, kl=0.01, code=to_code(b("*", c(0.01), DPO), "s")), dpo_kl=2.0) == (-2, (-1, -2, "+"))
    assert d(cand(3, None, code=to_code(DPO, "x"))) == (None, (-1, 0, "+"))  # not trained yet
    assert d(cand(4, 0.5, kl=4.0, code=to_code(DPO, "y"))) == (2, (-1, 0, "+"))  # no DPO KL: log2(KL)
    outside = "def f(pc, pr, rc, rr, beta):\n    return -(pc - rc).mean()\n"
    assert d(cand(5, 0.1, code=outside)) == (None, None)
    inspected = Entry(id=1, name="x", kind="candidate", status="done", code=outside, metrics={
        "mean": {"kl": 1.0}, "inspection": {"fprime0": {"value": -0.26}, "convexity": {"convex": True}}})
    assert d(inspected, dpo_kl=1.0) == (0, (-1, -1, "+"))
    # a baseline whose registry code is no grammar text still has its hand-written tree
    assert selection.shape(base("ipo", 0.1), beta=0.1) is not None


def test_novelty_rejects_renamed_relaid_and_folded_duplicates_and_accepts_a_different_loss():
    original = to_code(b("*", c(0.5), DPO), "half_dpo")
    entries = [cand(0, 0.5, code=original)]
    renamed = original.replace("half_dpo", "something_else").replace("z", "m")
    relaid = original.replace("    return", "\n    # a comment\n    return").replace(" * ", "*")
    folded = original.replace("0.5 *", "0.25 * 2 *")
    rewritten = ("def r(rho, beta):\n    z = beta * rho\n    return -F.logsigmoid(z) * 0.5 + z - z\n")
    for dup in (renamed, relaid, folded, rewritten):
        assert not selection.novel(dup, entries), dup
        assert selection.duplicate(dup, entries) is entries[0]
    assert selection.novel(to_code(HINGE, "hinge"), entries)
    assert selection.novel(to_code(b("*", c(0.6), DPO), "other_scale"), entries)  # a scale is new here
    shifted = to_code(b("+", b("*", c(3.0), DPO), c(2.0)), "shifted")  # ... unless up_to_scale
    assert not selection.novel(shifted, entries, up_to_scale=True)
    assert selection.novel(to_code(b("*", c(-3.0), DPO), "negated"), entries, up_to_scale=True)
    assert selection.novel(to_code(HINGE, "hinge"), entries, up_to_scale=True)
    # code outside the grammar: compared as canonical Python
    llm = "def f(pc, pr, rc, rr, beta):\n    '''doc'''\n    x = beta * (pc - rc)\n    return -x.mean() * (2 * 3)\n"
    entries.append(cand(1, 0.1, code=llm))
    assert not selection.novel(llm.replace("x", "margin").replace("doc", "other words").replace("(2 * 3)", "6"),
                               entries[1:])
    assert selection.novel(llm.replace("(2 * 3)", "7"), entries)
    assert selection.novel("this is not python (", entries)
    # a baseline's registry code is no grammar text: with beta, its hand-written tree is compared
    twice_dpo = to_code(b("*", c(2.0), DPO), "twice")
    assert selection.novel(twice_dpo, BASELINES, up_to_scale=True)
    assert selection.duplicate(twice_dpo, BASELINES, up_to_scale=True, beta=0.1).name == "dpo"


def test_the_random_arm_samples_the_grammar_and_ignores_fitness():
    def run(history):
        proposer = evolve.EvolveProposer(seed=3, selection="random")
        return [proposer.propose(Context(task="synthetic", beta=0.1, metric="m", n_proposed=i, history=history))
                for i in range(12)]
    plain = run(())
    scored = run(tuple(cand(i, fitness=float(i)) for i in range(3)))
    rescored = run(tuple(cand(i, fitness=-float(i)) for i in range(3)))
    assert [p.code for p in scored] == [p.code for p in rescored]  # fitness plays no part
    assert len({p.code for p in plain}) == 12
    for i, p in enumerate(plain):
        tree = parse(p.code)
        assert tree is not None and evolve.plausible(tree) and p.parents == ()
        assert p.name == f"evo{i + 1}_random"
        objectives.load(p.code).of_rho(torch.linspace(-50, 50, 11, dtype=torch.float64), 0.1)


def test_the_islands_arm_builds_on_its_islands_members():
    strong = to_code(u("neg", u("logsigmoid", b("*", c(3.0), Z))), "strong")
    history = tuple(cand(i, fitness=0.1, code=to_code(b("*", c(1 + i / 7), HINGE), f"h{i}"), name=f"h{i}") for i in range(5)) + \
        (cand(5, fitness=5.0, code=strong, name="strong"),)  # candidate 5: island 2
    proposer = evolve.EvolveProposer(seed=0, islands=3, migration=0.0)
    names = {0: {"h0", "h3"}, 1: {"h1", "h4"}, 2: {"h2", "strong"}}
    baselines = {"dpo", "ipo", "hinge", "lrml"}
    got = {0: set(), 1: set(), 2: set()}
    for n in range(6, 36):
        p = proposer.propose(Context(task="synthetic", beta=0.1, metric="m", n_proposed=n, history=history))
        assert set(p.parents) <= names[n % 3] | baselines, (n, p.parents)
        if p.parents != ("dpo",) or "scaled_dpo" not in p.name:
            got[n % 3] |= set(p.parents) - baselines
    assert "strong" in got[2] and not {"strong"} & (got[0] | got[1])


def test_evolve_does_not_propose_what_deduplication_would_refuse():
    """Not DPO rescaled or blended with itself, though the archive's DPO row holds registry code."""
    ctx = Context(task="synthetic", beta=0.1, metric="m", n_proposed=0, baselines=BASELINES)
    for seed in range(4):
        for p in evolve.EvolveProposer(seed=seed).propose_many(ctx, 6):
            assert selection.novel(p.code, ctx.baselines, up_to_scale=True, beta=0.1), p.code


def test_propose_many_is_propose_for_the_next_k_candidates():
    proposer = evolve.EvolveProposer(seed=5)
    history = tuple(cand(i, fitness=i / 10) for i in range(4))
    ctx = Context(task="synthetic", beta=0.1, metric="m", n_proposed=4, history=history)
    many = proposer.propose_many(ctx, 5)
    assert many[0] == proposer.propose(ctx)
    assert [p.name.split("_")[0] for p in many] == [f"evo{i}" for i in range(5, 10)]
    assert len({" ".join(p.code.split()) for p in many}) == 5
    assert all(selection.novel(p.code, history) for p in many)
    assert [p.code for p in proposer.propose_many(ctx, 5)] == [p.code for p in many]  # deterministic
    assert proposer.propose_many(ctx, 0) == []


def test_for_context_and_from_config():
    history = tuple(cand(i, fitness=i / 10) for i in range(6))
    ctx = Context(task="synthetic", beta=0.1, metric="m", n_proposed=6, baselines=BASELINES, history=history)
    a = selection.for_context(ctx, seed=1, n_islands=3)
    assert a == selection.for_context(ctx, seed=1, n_islands=3) and a.island == 0
    assert {e.name for e in a.entries} <= {"dpo", "ipo", "c0", "c3"}
    assert selection.for_context(Context(**{**ctx.__dict__, "island": 2}), seed=1, n_islands=3).island == 2
    uniform = {selection.for_context(ctx, seed=s, n_islands=3, uniform=True).parent.name for s in range(60)}
    assert uniform > {"c1", "c2"}  # every finished entry, islands ignored
    config = CampaignConfig.from_dict({"proposer": {"seed": 4, "selection": "random", "islands": 2}})
    p = evolve.EvolveProposer.from_config(config)
    assert (p.seed, p.selection, p.islands) == (4, "random", 2)
    with pytest.raises(ValueError, match="selection"):
        evolve.EvolveProposer(selection="best")


def test_sweep_variants_are_valid_distinct_and_leave_structure_alone():
    code = ("def fam(rho, beta):\n    \"\"\"A family.\"\"\"\n    z = beta * rho\n"
            "    gate = torch.sigmoid(20 * z)\n    x = torch.stack([z, z], dim=-1).sum(-1)\n"
            "    return -F.logsigmoid(1.5 * x) * (1 - gate) + 0.1 * z ** 2 * gate + x[..., 0] * 0\n")
    assert [(v, len(w)) for v, w, _ in constants_sweep.literals(code)] == [(20.0, 1), (1.5, 1), (1.0, 1), (0.1, 1)]
    out = constants_sweep.variants(code, 6)
    assert len(out) == 6 and len({" ".join(v.split()) for v, _ in out}) == 6
    assert [d.split(" (")[0] for _, d in out] == ["The constant 20", "The constant 1.5", "The constant 1",
                                                "The constant 0.1", "The constant 20", "The constant 1.5"]
    assert "x0.5 to 10" in out[0][1] and "x2 to 40" in out[4][1]
    for variant, _ in out:
        tree = ast.parse(variant)
        assert variant != code and "** 2" in variant and "dim=-1" in variant and "sum(-1)" in variant
        assert "[..., 0]" in variant and [n.name for n in tree.body] == ["fam"]
        losses = objectives.load(variant).of_rho(torch.linspace(-20, 20, 9, dtype=torch.float64), 0.1)
        assert torch.isfinite(losses).all()
    # equal constants are one constant, scaled together; no constants, or no Python: nothing
    lrml = constants_sweep.variants(to_code(evolve.seed_trees(0.1)["lrml"], "lrml"), 2)
    assert lrml[1][0].count("sigmoid(10.0 * z)") == 2 and "2 places" in lrml[1][1]
    assert constants_sweep.variants("def f(rho, beta):\n    return -F.logsigmoid(beta * rho)\n", 5) == []
    assert constants_sweep.variants("def (", 5) == [] and constants_sweep.variants(code, 0) == []
    assert len(constants_sweep.variants(code, 100)) == 4 * len(constants_sweep.LADDER)
