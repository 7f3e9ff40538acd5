"""objectives.candidate: one reference (name | .py file | source | Objective | Candidate), one
trusted-or-sandboxed decision, and the measured kind travelling with the candidate."""

import os
from pathlib import Path

import pytest

import objectives
from objectives import ObjectiveError
from objectives.analysis import analyse
from objectives.baselines import REGISTRY
from objectives.candidate import Candidate, isolation_for, load, resolve
from objectives.isolation import run
from objectives.fingerprint import fingerprint
from objectives.registry import UnknownNameError
from tests.objectives.sources import DPO_RHO

T = "tests.objectives.candidate_targets"
# coupled through the batch mean: probing measures "batch"
BATCH = "import torch.nn.functional as F\n\ndef centred(rho, beta):\n    return -F.logsigmoid(beta * (rho - rho.mean()))\n"
RAISES = "def broken(rho, beta):\n    return rho.no_such_method()\n"


def test_a_registry_name_is_a_trusted_candidate_with_the_registry_kind():
    c = resolve("kto_pair")
    assert (c.name, c.trusted, c.kind, c.path) == ("kto_pair", True, "batch", None)
    assert c.source == REGISTRY.get("kto_pair").source and c.ref == "kto_pair"
    assert c.load() is REGISTRY.get("kto_pair")
    assert resolve("dpo", kind="batch").kind == "pointwise"  # a built-in's kind is its own


def test_source_is_untrusted_named_after_its_function_and_unmeasured():
    c = resolve(DPO_RHO)
    assert (c.name, c.trusted, c.kind, c.path) == ("dpo", False, None, None)
    assert c.source == DPO_RHO and c.ref == DPO_RHO
    assert resolve(DPO_RHO, kind="pointwise").kind == "pointwise"


@pytest.mark.parametrize("as_path", [str, Path])
def test_a_file_is_read_and_named_after_its_function_not_the_file(tmp_path, as_path):
    path = tmp_path / "some_file.py"
    path.write_text(BATCH)
    c = resolve(as_path(path))
    assert (c.name, c.trusted, c.source, c.path) == ("centred", False, BATCH, str(path))


def test_an_objective_is_trusted_only_when_it_is_the_registry_entry():
    assert resolve(REGISTRY.get("ipo")).trusted is True
    loaded = objectives.load(BATCH)  # defined here from source: not a built-in
    c = resolve(loaded)
    assert (c.trusted, c.kind, c.name, c.source) == (False, "batch", "centred", BATCH)


def test_a_candidate_passes_through_and_takes_a_measured_kind():
    c = resolve(BATCH)
    assert resolve(c) is c
    measured = resolve(c, kind="batch")
    assert measured.kind == "batch" and c.kind is None and measured.source == c.source
    assert Candidate.from_dict(measured.to_dict()) == measured


def test_unknown_name_says_did_you_mean_and_a_missing_file_is_an_objective_error(tmp_path):
    with pytest.raises(UnknownNameError, match="did you mean 'lrml'"):
        resolve("lrlm")
    with pytest.raises(ObjectiveError, match="no such file"):
        resolve(str(tmp_path / "missing.py"))
    with pytest.raises(ObjectiveError, match="unknown kind"):
        resolve(DPO_RHO, kind="elementwise")
    with pytest.raises(ObjectiveError, match="not int"):
        resolve(42)


def test_several_lines_without_a_function_are_source_for_the_screen_not_a_name():
    c = resolve("x = 1\ny = 2\n")
    assert c.trusted is False and c.name == "candidate"
    with pytest.raises(ObjectiveError, match="no function"):
        c.load()


def test_load_takes_the_same_references_and_a_known_kind_is_not_probed(tmp_path):
    path = tmp_path / "loss.py"
    path.write_text(BATCH)
    assert load("lrml") is objectives.load("lrml") is REGISTRY.get("lrml")
    assert load(str(path)).kind == "batch" and load(str(path)).name == "centred"
    assert load(BATCH, kind="pointwise").kind == "pointwise"  # a probe would have said "batch"
    assert load(resolve(BATCH, kind="logratio")).kind == "logratio"
    assert load(BATCH, name="mine").name == "mine"


def test_isolation_for_is_the_one_decision():
    trusted, untrusted = resolve("dpo"), resolve(DPO_RHO)
    assert isolation_for(trusted) == "none"
    assert isolation_for(untrusted) == "sandbox"
    assert isolation_for(untrusted, "process") == "process"
    assert isolation_for(trusted, "sandbox") == "sandbox"
    with pytest.raises(ValueError, match="isolation must be"):
        isolation_for(trusted, "docker")


def test_run_calls_a_trusted_candidate_in_this_process():
    out = run(resolve("kto_pair"), f"{T}:seen", 1, beta=0.5)
    assert out == {"pid": os.getpid(), "name": "kto_pair", "form": "registry", "kind": "batch",
                   "args": [1], "kwargs": {"beta": 0.5}}


def test_run_calls_source_in_the_sandbox_with_the_kind_passed_on_not_probed():
    out = run(resolve(BATCH, kind="pointwise"), f"{T}:seen", "x", beta=0.5)
    assert out["pid"] != os.getpid()
    assert (out["name"], out["form"], out["args"], out["kwargs"]) == ("centred", "rho", ["x"], {"beta": 0.5})
    assert out["kind"] == "pointwise"  # what it was handed: probing in there would give "batch"
    assert run(resolve(BATCH), f"{T}:seen")["kind"] == "batch"  # unmeasured: probed in the sandbox


def test_the_losses_own_failure_in_the_sandbox_is_an_objective_error():
    in_process = run(resolve("dpo"), f"{T}:mean_loss", 0.1)
    assert run(resolve(DPO_RHO), f"{T}:mean_loss", 0.1) == pytest.approx(in_process, rel=1e-6)
    with pytest.raises(ObjectiveError, match="in the sandbox \\(error\\).*no_such_method"):
        run(resolve(RAISES), f"{T}:mean_loss", 0.1)


def test_analyse_and_fingerprint_take_a_candidate_and_keep_its_kind():
    told = analyse(resolve(BATCH, kind="pointwise"), beta=0.1)
    assert told.profile["kind"] == "pointwise" and told.summary["kind"] == "pointwise"
    assert "note" not in told.summary  # a pointwise loss needs no "slice" note
    assert analyse(BATCH, beta=0.1).profile["kind"] == "batch"
    assert fingerprint(resolve(DPO_RHO, kind="pointwise")).same_function(fingerprint("dpo"))
