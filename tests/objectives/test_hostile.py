"""Hostile and broken candidates (tests/objectives/hostile/*.py): each is refused by the screen or
contained by the sandbox, with a clear reason, and leaves nothing behind."""

import os
import time
import uuid
from pathlib import Path

import pytest

from objectives import sandbox
from objectives.validate import validate

HOSTILE = Path(__file__).parent / "hostile"
FAKE_KEY = "sk-fake-" + uuid.uuid4().hex


def source(name: str) -> str:
    return (HOSTILE / f"{name}.py").read_text()


@pytest.fixture(scope="module", autouse=True)
def warm_pool():
    old = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = FAKE_KEY
    yield sandbox.layers()
    if old is None:
        os.environ.pop("OPENAI_API_KEY", None)
    else:
        os.environ["OPENAI_API_KEY"] = old


# name, line the screen names, words in the reason
SCREENED = [
    ("os_system", 2, "'__import__'"),
    ("subclasses_walk", 2, "underscore attribute"),
    ("open_socket", 1, "import of 'socket'"),
    ("write_file", 2, "'open'"),
    ("read_api_key", 1, "import of 'os'"),
    ("read_api_key_via_torch", 2, ".os"),
    ("fork", 1, "import of 'os'"),
    ("syntax_error", 1, "syntax error"),
    ("no_function", None, "no function definition"),
]


@pytest.mark.parametrize("name,line,words", SCREENED)
def test_screen_refuses_with_line_and_reason(name, line, words):
    report = validate(source(name))
    assert not report.valid
    assert words in report.reason
    if line is not None:
        assert f"line {line}" in report.reason
    assert report.layers == [], "a screened candidate must not reach the sandbox"
    assert not Path("/tmp/disco-pwned").exists()


# name, failing check (or sandbox kind), words in the reason
CONTAINED = [
    ("infinite_loop", "sandbox", "sandbox timeout"),
    ("long_c_op", "sandbox", "sandbox timeout"),
    ("memory_bomb", "sandbox", "sandbox memory"),
    ("tensor_bomb", "sandbox", "sandbox memory"),
    ("deep_recursion", "output", "raised RecursionError: maximum recursion depth"),
    ("nan_output", "finite", "non-finite loss (nan)"),
    ("scalar_output", "output", "shape [] for a batch of 1"),
    ("detached_output", "gradient", "detached"),
    ("inplace_input", "inputs_unchanged", "policy_chosen_logps"),
    ("random_output", "deterministic", "different losses"),
]


@pytest.mark.parametrize("name,check,words", CONTAINED)
def test_sandbox_contains_with_a_reason(name, check, words):
    start = time.monotonic()
    report = validate(source(name), timeout=1.5)
    assert not report.valid
    failed = {c.name: c.reason for c in report.checks if not c.passed}
    assert check in failed, (failed, report.reason)
    assert words in (report.reason if check == "sandbox" else failed[check]), report.reason
    assert time.monotonic() - start < 10
    assert "process" in report.layers or check == "sandbox"


def test_monkeypatching_torch_does_not_poison_the_next_candidate():
    poisoned = validate(source("monkeypatch"))
    assert not poisoned.valid  # its own loss became constant: zero gradient everywhere
    honest = validate("import torch.nn.functional as F\n\ndef dpo(rho, beta):\n    return -F.logsigmoid(beta * rho)\n")
    assert honest.valid, honest.reason


def test_pool_keeps_working_after_every_hostile_candidate():
    assert validate("dpo").valid
