"""The offline evolve proposer: valid code, deterministic given the seed, built on the archive."""

import torch

import objectives
from discovery import evolve
from discovery.archive import Archive
from discovery.proposal import Context
from objectives.screen import screen

MARGINS = torch.linspace(-100.0, 100.0, 201, dtype=torch.float64)


def contexts(n, beta=0.1, baselines=()):
    return [Context(task="synthetic", beta=beta, metric="win_rate", n_proposed=i, baselines=baselines)
            for i in range(n)]


def test_baseline_trees_compute_the_registry_losses():
    for name, tree in evolve.seed_trees(0.1).items():
        mine = objectives.load(evolve.to_code(tree, name))
        theirs = objectives.get(name)
        assert torch.allclose(mine.of_rho(MARGINS, 0.1), theirs.of_rho(MARGINS, 0.1), atol=1e-9), name
        assert evolve.parse(evolve.to_code(tree, name)) == tree  # code -> tree round trip


def test_proposals_screen_load_and_are_finite():
    proposer = evolve.EvolveProposer(seed=1)
    for context in contexts(40):
        p = proposer.propose(context)
        assert screen(p.code).params == ("rho", "beta")
        objective = objectives.load(p.code)
        rho = MARGINS.clone().requires_grad_(True)
        losses = objective.of_rho(rho, 0.1)
        losses.sum().backward()
        assert losses.shape == MARGINS.shape and torch.isfinite(losses).all(), p.code
        assert torch.isfinite(rho.grad).all(), p.code
        assert p.thought.endswith(".") and p.name.startswith(f"evo{context.n_proposed + 1}_")
        assert evolve.parse(p.code) is not None  # its own output is back in the grammar


def test_deterministic_given_seed_and_different_across_seeds():
    def run(seed):
        return [evolve.EvolveProposer(seed=seed).propose(c).code for c in contexts(12)]
    assert run(0) == run(0)
    assert run(0) != run(1)


def test_population_comes_from_the_archive_and_fitness_drives_selection(tmp_path):
    archive = Archive.create(tmp_path / "c", {})
    for name, fitness in (("dpo", 0.9), ("ipo", 0.1), ("hinge", 0.1), ("lrml", 0.1)):
        cid = archive.add(kind="baseline", name=name, code=objectives.get(name).source)
        archive.update(cid, status="done", fitness=fitness)
    strong = evolve.to_code(evolve.u("neg", evolve.u("logsigmoid", evolve.b("*", evolve.c(3.0), evolve.Z))),
                            "strong")
    cid = archive.add(kind="candidate", name="strong", code=strong)
    archive.update(cid, status="done", fitness=0.95)
    llm_style = archive.add(kind="candidate", name="llm", code="def f(pc, pr, rc, rr, beta):\n    return pc\n")
    archive.update(llm_style, status="done", fitness=0.99)  # not in the grammar: not a parent
    context = archive.context(task="synthetic", beta=0.1, metric="win_rate", n_best=8, n_recent=3,
                              n_failures=3)
    proposer = evolve.EvolveProposer(seed=0)
    names = {p[0] for p in proposer.population(context)}
    assert names == {"dpo", "ipo", "hinge", "lrml", "strong"}
    parents = [proposer.propose(Context(**{**context.__dict__, "n_proposed": i})).parents[0]
               for i in range(30)]
    assert parents.count("strong") + parents.count("dpo") > parents.count("ipo") + parents.count("hinge")


def test_never_reproposes_known_code():
    proposer = evolve.EvolveProposer(seed=0)
    first = proposer.propose(contexts(1)[0])
    again = proposer.propose(Context(task="synthetic", beta=0.1, metric="win_rate", n_proposed=0,
                                     known_codes=frozenset({" ".join(first.code.split())})))
    assert again.code != first.code


def test_fold_simplifies_what_mutations_leave_behind():
    z, c, b, u = evolve.Z, evolve.c, evolve.b, evolve.u
    assert evolve.fold(b("*", c(3.0), b("+", u("square", b("-", z, z)), u("sigmoid", u("neg", z))))) == \
        b("*", c(3.0), u("sigmoid", u("neg", z)))
    assert evolve.fold(b("*", c(1.0), b("+", z, b("*", c(0.0), u("exp", z))))) == z
    assert evolve.fold(u("exp", b("*", c(2.0), c(0.5)))) == c(round(2.718281828459045, 6))
    assert evolve.fold(b("*", c(75.0), b("*", c(0.1), u("sigmoid", z)))) == b("*", c(7.5), u("sigmoid", z))
