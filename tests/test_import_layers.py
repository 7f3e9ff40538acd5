"""No module imports, directly or through others, one that imports it back; and the packages stand
in floors: objectives/ < inner_loop/ < discovery/ < evaluation/, with one named seam upward."""

from pathlib import Path

from tests.import_graph import circles, graph

REPO = Path(__file__).resolve().parents[1]
FLOORS = {"objectives": 1, "inner_loop": 2, "discovery": 3, "evaluation": 4}
# the one import from a lower floor to a higher one: a campaign's judge fitness
SEAMS = {("discovery.seams", "evaluation.fitness")}
ENTRY = "discovery.cli"  # the `disco` console script: it gathers every package's subcommands


def test_no_import_circles():
    assert circles(graph(str(REPO))) == []


def test_packages_import_only_downward_except_the_named_seam():
    up = sorted((a, b) for a, targets in graph(str(REPO)).items() for b in targets
                if FLOORS[b.split(".")[0]] > FLOORS[a.split(".")[0]] and (a, b) not in SEAMS and a != ENTRY)
    assert up == [], f"imports that run up a floor: {up}"


def test_the_graph_sees_lazy_and_string_imports(tmp_path):
    pkg = tmp_path / "objectives"
    pkg.mkdir()
    (pkg / "a.py").write_text("def f():\n    from objectives import b\n")
    (pkg / "b.py").write_text("TARGET = 'objectives.a:f'\n")
    assert circles(graph(str(tmp_path))) == [["objectives.a", "objectives.b"]]
