"""objectives.launcher: the one process launcher (environment, own process group, deadline,
cancel, death with the parent). Every test ends within a few seconds."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from objectives.launcher import environment, launch, python

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable

# prints the pid of a grandchild it starts (in the same process group), then sleeps
SPAWN = ("import subprocess, sys, time\n"
         "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
         "print(g.pid, flush=True)\n"
         "time.sleep(60)\n")


def _dead(pid: int, within: float = 3.0) -> bool:
    """Gone or a zombie (its reaper may not be us) within ``within`` seconds."""
    end = time.monotonic() + within
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.02)


def _grandchild(launched) -> int:
    return int(launched.proc.stdout.readline())


def test_the_deadline_kills_the_whole_group_a_grandchild_included():
    start = time.monotonic()
    launched = launch([PY, "-c", SPAWN], env=environment(), timeout=1.0, stdout=subprocess.PIPE)
    grandchild = _grandchild(launched)
    assert launched.wait() == -signal.SIGKILL
    assert launched.timed_out
    assert 0.9 <= time.monotonic() - start < 10
    assert _dead(grandchild), "the grandchild outlived the deadline"


def test_poll_enforces_the_deadline_too():
    launched = launch([PY, "-c", "import time; time.sleep(60)"], env=environment(), timeout=0.5)
    assert launched.poll() is None and not launched.timed_out
    end = time.monotonic() + 10
    while (rc := launched.poll()) is None and time.monotonic() < end:
        time.sleep(0.05)
    assert rc == -signal.SIGKILL and launched.timed_out


def test_wait_with_a_shorter_timeout_leaves_it_running_then_cancel_kills_the_group():
    launched = launch([PY, "-c", SPAWN], env=environment(), stdout=subprocess.PIPE)
    grandchild = _grandchild(launched)
    assert os.getpgid(launched.pid) == launched.pid  # its own process group (and session)
    assert os.getsid(launched.pid) == launched.pid
    with pytest.raises(subprocess.TimeoutExpired):
        launched.wait(timeout=0.2)
    assert launched.poll() is None and not _dead(grandchild, within=0)
    launched.cancel()
    assert launched.proc.returncode == -signal.SIGKILL and not launched.timed_out
    assert _dead(grandchild)
    launched.cancel()  # a no-op once it has ended


def test_an_exit_before_the_deadline_is_not_a_timeout():
    launched = launch([PY, "-c", "import sys; sys.stdout.write(sys.stdin.read().upper())"],
                      env=environment(), timeout=30, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = launched.communicate(b"abc")
    assert (out, launched.proc.returncode, launched.timed_out) == (b"ABC", 0, False)


def test_communicate_past_the_deadline_kills_and_says_so():
    launched = launch([PY, "-c", SPAWN], env=environment(), timeout=1.0, stdout=subprocess.PIPE)
    grandchild = _grandchild(launched)
    launched.communicate()
    assert launched.timed_out and launched.proc.returncode == -signal.SIGKILL
    assert _dead(grandchild)


def test_environment_clean_keep_drop_and_extra(monkeypatch):
    monkeypatch.setenv("DISCO_TEST_SECRET", "sk-secret")
    monkeypatch.setenv("DISCO_TEST_THREADS", "3")
    monkeypatch.delenv("DISCO_TEST_UNSET", raising=False)
    clean = environment()
    assert set(clean) == {"PATH", "LANG"}
    kept = environment(keep=("DISCO_TEST_THREADS", "DISCO_TEST_UNSET"), extra={"A": "1"})
    assert kept == {**clean, "DISCO_TEST_THREADS": "3", "A": "1"}
    assert "DISCO_TEST_THREADS" not in environment(keep=("DISCO_TEST_THREADS",), drop=("DISCO_TEST_THREADS",))
    inherited = environment(True, drop=("DISCO_TEST_SECRET",), extra={"PATH": "/bin"})
    assert "DISCO_TEST_SECRET" not in inherited and inherited["DISCO_TEST_THREADS"] == "3"
    assert inherited["PATH"] == "/bin" and inherited.get("HOME") == os.environ.get("HOME")
    assert environment(True)["DISCO_TEST_SECRET"] == "sk-secret"


def test_the_child_gets_exactly_the_environment_it_is_given(monkeypatch):
    monkeypatch.setenv("DISCO_TEST_SECRET", "sk-secret")
    launched = launch([PY, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
                      env=environment(extra={"A": "1"}), timeout=30, stdout=subprocess.PIPE)
    out, _ = launched.communicate()
    assert json.loads(out) == {"PATH": environment()["PATH"], "LANG": "C.UTF-8", "A": "1"}


PARENT = """
import sys, time
from objectives.launcher import environment, launch
child = launch([sys.executable, "-c", "import time; time.sleep(60)"], env=environment(),
               die_with_parent={die})
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux only")
@pytest.mark.parametrize("die", [True, False])
def test_a_child_dies_with_its_parent_unless_told_not_to(die):
    """SIGKILL the parent alone (the child has its own process group): the death signal kills it."""
    parent = launch([PY, "-c", PARENT.format(die=die)], env=environment(extra={"PYTHONPATH": str(REPO)}),
                    cwd=REPO, timeout=30, stdout=subprocess.PIPE)
    child = int(parent.proc.stdout.readline())
    try:
        assert os.getpgid(child) == child != parent.pid
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert _dead(child, within=3.0 if die else 1.0) is die  # alive a second after: no signal
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_python_runs_a_module_with_this_interpreter():
    assert python("inner_loop.runner", "--x", 3) == [sys.executable, "-m", "inner_loop.runner", "--x", "3"]
