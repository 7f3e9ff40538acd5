"""Feedback to the language model never carries free text the candidate produced."""

import json

import pytest
import torch

from campaign_fakes import fake_config
from discovery.archive import Archive
from discovery.campaign import run_campaign
from discovery.feedback import GENERIC, safe_reason
from fake_openai import FakeOpenAI, reply

# Markers computed at run time: they are in no code the model wrote, only in the exception messages.
A, B, C, D = 982451653, 961748941, 879190747, 817504243
MARKER_VALIDATION, MARKER_TRAINING = str(A * B), str(C * D)
RAISES = {"thought": "leaky", "name": "leaky",
          "code": f"def leaky(rho, beta):\n    x = rho * 1.0\n    raise ValueError({A} * {B})\n"}
RAISES_IN_TRAINING = {
    "thought": "leaky later", "name": "leaky_later",
    "code": f"def later(rho, beta):\n    if rho.requires_grad:\n        raise RuntimeError({C} * {D})\n"
            "    return -F.logsigmoid(5 * beta * rho)\n"}
STEEP = {"thought": "steeper", "name": "steep", "code": "def steep(rho, beta):\n    return -F.logsigmoid(3 * beta * rho)\n"}
STEEPER = {"thought": "steeper still", "name": "steeper",
           "code": "def steeper(rho, beta):\n    return -F.logsigmoid(4 * beta * rho)\n"}
CODE = "def f(rho, beta):\n    y = rho * 2\n    return -F.logsigmoid(beta * y)\n"


def test_exception_messages_never_reach_the_endpoint(tmp_path):
    script = [reply(json.dumps(x)) for x in (RAISES, RAISES_IN_TRAINING, STEEP, STEEPER)]
    with FakeOpenAI(script) as server:
        cfg = fake_config(candidates=4, seeds=(0,), proposer="openai", base_url=server.url,
                          model="fake", api_key_env="DISCO_UNSET_KEY")
        run_campaign(tmp_path / "c", cfg, progress=False)
    with Archive.open(tmp_path / "c") as a:
        rows = a.rows(kind="candidate")
    assert [r["status"] for r in rows] == ["invalid", "failed", "done", "done"]
    assert MARKER_VALIDATION in rows[0]["reason"] and MARKER_TRAINING in rows[1]["reason"]  # kept
    sent = [json.dumps(r["body"], ensure_ascii=False) for r in server.requests]
    assert len(sent) == 4
    for body in sent:
        assert MARKER_VALIDATION not in body and MARKER_TRAINING not in body
    prompts = server.prompts()
    assert "ValueError raised at line 3 of the loss" in prompts[1]  # the type and the line did
    assert "seed 0: sandbox error: RuntimeError raised" in prompts[2]
    assert "ValueError raised at line 3" in prompts[3] and "RuntimeError raised" in prompts[3]


@pytest.mark.parametrize("reason, expected", [
    ("finite: raised ValueError: myhost\n(at line 2 of the loss)",
     "finite: ValueError raised at line 2 of the loss (message withheld: text produced by the candidate)"),
    ("finite: raised ValueError: myhost (at line 9 of the loss)",  # no such line: not shown
     "finite: ValueError raised (message withheld: text produced by the candidate)"),
    ("output: raised SecretHostnameIsMyhostError: x",  # not a known exception class
     "output: an exception raised (message withheld: text produced by the candidate)"),
    ("seed 1: sandbox error: ZeroDivisionError: /etc/hostname says hi",
     "seed 1: sandbox error: ZeroDivisionError raised (message withheld: text produced by the candidate)"),
    ("the trainer raised KeyError: 'secret'",
     "the trainer raised KeyError (message withheld: text produced by the candidate)"),
    ("seed 0: out of memory: secret tail", "seed 0: out of memory (details withheld: text produced by the candidate)"),
    ("sandbox memory: out of memory (limit: 2048 MiB above the worker's own): MemoryError: secret",
     "sandbox memory: out of memory (limit: 2048 MiB above the worker's own) (details withheld: text "
     "produced by the candidate)"),
    ("seed 0: job exited with code 1: secret", "seed 0: job exited with code 1 (details withheld: text "
     "produced by the candidate)"),
    ("sandbox timeout: forged verdict with a secret", f"sandbox timeout: {GENERIC}"),
    ("finite: forged verdict with a secret", f"finite: {GENERIC}"),
    ("screen: forged (the code passes the screen)", f"screen: {GENERIC}"),
    ("anything at all", GENERIC),
    ("non-finite loss (secret) at step 3", GENERIC),
    ("computes the same function as #3 steep", "computes the same function as #3 steep"),
    ("seed 0: non-finite loss (nan) at step 3", "seed 0: non-finite loss (nan) at step 3"),
    ("seed 2: timeout: 600 s used up after step 12", "seed 2: timeout: 600 s used up after step 12"),
    ("sandbox timeout: no result within the wall-clock limit of 20 s; the child and its PID namespace were "
     "killed", None),
    ("sandbox crash: the child was killed by SIGKILL (out of memory?) before returning a result", None),
    ("the reply could not be parsed: the reply was empty; answer with one JSON object with the keys "
     "\"thought\", \"name\" and \"code\"", None),
    ("training was interrupted 3 times (the process died each time); not retried", None),
    ("", ""),
])
def test_safe_reason(reason, expected):
    assert safe_reason(reason, CODE) == (reason if expected is None else expected)


def test_screen_reasons_are_recomputed_here():
    bad = "import os\ndef f(rho, beta):\n    return rho\n"
    assert safe_reason("screen: line 1: import of 'os' is not allowed (allowed: torch, torch.nn.functional, "
                       "math)", bad) == "screen: line 1: import of 'os' is not allowed (allowed: torch, " \
                                        "torch.nn.functional, math)"
    assert safe_reason("screen: a forged message", bad).startswith("screen: line 1: import of 'os'")
    assert safe_reason("load: a forged message", bad).startswith("load: line 1: import of 'os'")


def _objective(code: str):
    import objectives
    return objectives.load(code, probe=False)


@pytest.mark.parametrize("check, code", [
    ("check_output", "def f(rho, beta):\n    return (rho * beta).mean()\n"),
    ("check_output", "def f(rho, beta):\n    return rho > 0\n"),
    ("check_finite", "def f(rho, beta):\n    return torch.log(rho)\n"),
    ("check_gradient", "def f(rho, beta):\n    return (rho * beta).detach()\n"),
    ("check_gradient", "def f(rho, beta):\n    return torch.zeros_like(rho) + rho * 0\n"),
    ("check_deterministic", "def f(rho, beta):\n    return -F.logsigmoid(beta * rho) + torch.rand_like(rho)\n"),
    ("check_inputs_unchanged",
     "def f(pc, pr, rc, rr, beta):\n    pc.mul_(1.0)\n    return -F.logsigmoid(beta * (pc - pr - rc + rr))\n"),
])
def test_the_project_check_messages_pass_unchanged(check, code):
    """A drift guard: the templates in discovery/feedback.py still match objectives/checks.py."""
    from objectives import checks
    result = checks._guarded(check, lambda: getattr(checks, check)(_objective(code), 0.1))
    assert not result.passed, result
    reason = f"{result.name}: {result.reason}"
    assert safe_reason(reason, code) == reason


def test_a_raising_check_names_type_and_line():
    from objectives.checks import run_checks
    code = "def f(rho, beta):\n    x = rho * 1.0\n    raise ValueError(x.shape, 'the secret')\n"
    failed = [c for c in run_checks(code)["checks"] if not c["passed"]][0]
    assert failed["details"] == {"exception": "ValueError", "line": 3}
    assert safe_reason(f"{failed['name']}: {failed['reason']}", code) == \
        f"{failed['name']}: ValueError raised at line 3 of the loss (message withheld: text produced by the candidate)"


def test_a_nonfinite_training_loss_passes_unchanged():
    assert torch.isnan(torch.tensor(float("nan")))
    reason = f"seed 0: non-finite loss ({float('nan')}) at step 4"  # NonFiniteLoss's wording
    assert safe_reason(reason, CODE) == reason
