"""The sandbox's process boundary, tested with trusted targets that deliberately try to escape.

The AST screen would stop candidate code from trying any of this; these tests show that the
process boundary holds on its own. Tests that need a layer the machine cannot give (namespaces,
root for the uid drop, seccomp) are skipped with the reason, and ``test_layers_reported`` prints
which layers ran.
"""

import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from objectives import lockdown, sandbox
from objectives.sandbox import SandboxError
from tests.objectives import sandbox_targets

T = sandbox_targets.__name__
FAKE_KEY = "sk-fake-" + uuid.uuid4().hex


@pytest.fixture(scope="module", autouse=True)
def warm_pool():
    """Put a fake API key in this process's environment, then start the warm pool once."""
    old = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = FAKE_KEY
    sandbox._POOL.stop()  # a pool started earlier in the session would not have seen the key
    layers = sandbox.layers()
    yield layers
    if old is None:
        os.environ.pop("OPENAI_API_KEY", None)
    else:
        os.environ["OPENAI_API_KEY"] = old


def need(layer: str):
    if layer not in sandbox.layers():
        pytest.skip(f"the {layer!r} layer is not available here (layers: {', '.join(sandbox.layers())})")


def test_layers_reported(warm_pool):
    print("isolation layers:", ", ".join(warm_pool))
    assert {"process", "rlimits", "clean-env"} <= set(warm_pool)
    if os.geteuid() == 0:
        assert "uid-drop" in warm_pool, "running as root, the child must drop to an unprivileged uid"


def test_returns_json_value_with_args_and_kwargs():
    assert sandbox.call(f"{T}:echo", 1, "two", [3.5], flag=True) == {
        "args": [1, "two", [3.5]], "kwargs": {"flag": True}}


def test_child_is_unprivileged_in_its_own_folder():
    need("uid-drop")
    me = sandbox.call(f"{T}:whoami")
    assert me["uid"] == me["gid"] and me["groups"] == []
    if "uid-per-job" in sandbox.layers():  # a uid of its own: 2e9 + its pid on the host
        assert lockdown.JOB_UID_BASE < me["uid"] < 2**31 - 1
    else:
        assert me["uid"] == lockdown.NOBODY
    assert me["regained_root"] is False
    assert me["cwd"] == me["tmpdir"] and Path(me["cwd"]).name.startswith("disco-sbx-")


def test_api_key_is_not_readable_in_the_child():
    found = sandbox.call(f"{T}:read_secrets", os.getpid())
    assert FAKE_KEY not in json.dumps(found)
    assert "OPENAI_API_KEY" not in found["environ"]
    if "uid-drop" in sandbox.layers():
        # the /proc/1/environ trap: after the uid drop no root process's environ is readable
        assert found["/proc/1/environ"].startswith("PermissionError")
        assert "Error" in found[f"/proc/{os.getpid()}/environ"]  # the host's environ: unreadable
        assert "Error" in found["/root/.gitconfig"]
    if "private-proc" in sandbox.layers():
        assert "No such file" in found[f"/proc/{os.getpid()}/environ"]  # the host is not even visible
    if "private-root" in sandbox.layers():
        assert found["listdir_root"] == [".pyenv"] or all(
            not name.startswith((".bash", ".git", ".config")) for name in found["listdir_root"])


def test_a_dead_worker_is_replaced():
    sandbox.call(f"{T}:echo")
    zygote = sandbox._POOL.proc
    os.kill(zygote.pid, 9)
    zygote.wait()
    assert sandbox.call(f"{T}:echo", 2) == {"args": [2], "kwargs": {}}
    assert sandbox._POOL.proc.pid != zygote.pid


def test_cold_process_runs_the_same_thing_and_does_not_see_the_key_either():
    warm = sandbox.run(f"{T}:read_secrets", os.getpid())
    cold = sandbox.run(f"{T}:read_secrets", os.getpid(), cold=True, timeout=30)
    assert FAKE_KEY not in json.dumps(cold.value)
    assert cold.layers == warm.layers


def test_writes_outside_the_sandbox_leave_no_trace(tmp_path):
    marker = f"disco-escape-{uuid.uuid4().hex}"
    repo_file = Path(__file__).parent / marker
    tries = [str(repo_file), f"/tmp/{marker}", f"/var/tmp/{marker}", f"/dev/shm/{marker}", f"/etc/{marker}"]
    done = sandbox.call(f"{T}:write_files", tries)
    own = [p for p in done if p.endswith("own.txt")]
    assert done[own[0]] == "written"  # its own folder is writable
    if "uid-drop" in sandbox.layers():
        # refused by ownership, or (a checkout under /tmp) by the sandbox's read-only view of /tmp
        refused = ("PermissionError", "OSError: [Errno 30] Read-only file system")
        assert done[str(repo_file)].startswith(refused), done[str(repo_file)]
        assert done[f"/etc/{marker}"].startswith(refused), done[f"/etc/{marker}"]
    assert not repo_file.exists() and not Path(f"/etc/{marker}").exists()
    assert not Path(own[0]).exists(), "the child's folder must be gone afterwards"
    if "private-tmp" in sandbox.layers():
        for place in ("/tmp", "/var/tmp", "/dev/shm"):
            assert not Path(place, marker).exists(), f"{place} write escaped the private tmpfs"


def test_writable_directory_is_shared_on_request():
    """As inner_loop.runner does: a 0777 folder in /tmp that the child writes its weights to."""
    shared = Path(tempfile.mkdtemp(prefix="disco-test-job-"))
    try:
        shared.chmod(0o777)
        target, elsewhere = shared / "weights.bin", f"/tmp/disco-escape-{uuid.uuid4().hex}"
        done = sandbox.call(f"{T}:write_files", [str(target), elsewhere], writable=[str(shared)])
        assert done[str(target)] == "written"
        assert target.read_text() == "written from the sandbox"
        if "private-tmp" in sandbox.layers():  # without it (no root, no namespaces) /tmp is open
            assert "Read-only file system" in done[elsewhere]
            assert not Path(elsewhere).exists()
    finally:
        shutil.rmtree(shared)
        Path(elsewhere).unlink(missing_ok=True)


def test_shared_dir_is_reachable_and_hidden_writable_paths_are_refused():
    """A folder under /var/tmp exists on the host but not in the child (a private tmpfs covers it):
    refused up front with a reason, instead of a job failing later on a missing file."""
    shared = Path(sandbox.shared_dir("disco-test-shared-", writable=True))
    try:
        assert shared.is_absolute() and str(shared).startswith(sandbox.SHARED_ROOT + "/")
        done = sandbox.call(f"{T}:write_files", [str(shared / "w.bin")], writable=[str(shared)])
        assert done[str(shared / "w.bin")] == "written"
    finally:
        shutil.rmtree(shared)
    if "private-tmp" in sandbox.layers() and os.path.isdir("/var/tmp"):
        hidden = tempfile.mkdtemp(prefix="disco-test-hidden-", dir="/var/tmp")
        try:
            with pytest.raises(sandbox.SandboxError, match="hidden in the child") as err:
                sandbox.call(f"{T}:write_files", [hidden + "/w.bin"], writable=[hidden])
            assert err.value.kind == "refused"
        finally:
            shutil.rmtree(hidden)


def test_no_network_even_to_a_local_listener():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        result = sandbox.call(f"{T}:connect", port)
        assert result != "connected", "the child reached the host's loopback"
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
    if "seccomp" in sandbox.layers():
        assert "PermissionError" in result  # socket() itself refused
    elif "netns" in sandbox.layers():
        assert "unreachable" in result.lower()


def _alive_named(name: str) -> list[int]:
    alive = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and Path("/proc", entry, "comm").read_text().strip() == name:
                alive.append(int(entry))
        except OSError:
            pass
    return alive


def test_fork_bomb_is_bounded_and_leaves_no_process():
    need("uid-drop")  # RLIMIT_NPROC does not bind root
    name = "dsc" + uuid.uuid4().hex[:10]
    result = sandbox.call(f"{T}:fork_many", 50, name, timeout=20)
    assert result["made"] < 50 and result["errors"], result
    time.sleep(0.2)
    if "pidns" not in sandbox.layers():
        pytest.skip("no PID namespace: sleepers that called setsid() outlive the process group kill")
    assert _alive_named(name) == [], "forked sleepers survived the sandbox"


def test_exec_is_refused():
    need("seccomp")
    assert "PermissionError" in sandbox.call(f"{T}:exec_true")
    # fork + exec: exec refused; or no fork at all (as uid 65534, others' processes count too)
    shell = sandbox.call(f"{T}:run_shell")
    assert "PermissionError" in shell or "BlockingIOError" in shell, shell


@pytest.mark.parametrize("target", ["sleep_forever", "spin_forever"])
def test_timeout_kills_the_child(target):
    start = time.monotonic()
    with pytest.raises(SandboxError) as err:
        sandbox.call(f"{T}:{target}", timeout=1.0)
    assert err.value.kind == "timeout"
    assert "1 s" in err.value.reason and "were killed" in err.value.reason
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("target", ["allocate", "allocate_tensor"])
def test_memory_bomb_hits_the_limit(target):
    with pytest.raises(SandboxError) as err:
        sandbox.call(f"{T}:{target}", 64, memory_mb=512)
    assert err.value.kind == "memory", err.value.reason


def test_crash_is_reported():
    with pytest.raises(SandboxError) as err:
        sandbox.call(f"{T}:segfault")
    assert err.value.kind == "crash" and "SIGSEGV" in err.value.reason


def test_exception_reports_type_and_message():
    with pytest.raises(SandboxError) as err:
        sandbox.call(f"{T}:fail")
    assert err.value.kind == "error"
    assert err.value.reason == "ValueError: deliberate failure"


def test_non_json_result_is_an_error():
    with pytest.raises(SandboxError) as err:
        sandbox.call(f"{T}:not_json")
    assert err.value.kind == "error" and "not JSON" in err.value.reason


def test_bad_targets_and_arguments_are_refused():
    for target in ("no_colon", "objectives.nothing_here:f", f"{T}:no_such_function"):
        with pytest.raises(SandboxError) as err:
            sandbox.call(target)
        assert err.value.kind == "refused", target
    with pytest.raises(SandboxError) as err:
        sandbox.call(f"{T}:echo", object())
    assert err.value.kind == "refused" and "JSON" in err.value.reason


def test_prints_do_not_corrupt_the_protocol():
    assert sandbox.call(f"{T}:noisy", 7) == 7


def test_monkeypatching_dies_with_the_child():
    assert sandbox.call(f"{T}:poison_logsigmoid") == "poisoned"
    assert sandbox.call(f"{T}:logsigmoid_of_zero") == pytest.approx(-0.6931471805599453)


def test_pool_survives_failures_and_stays_warm():
    with pytest.raises(SandboxError):
        sandbox.call(f"{T}:segfault")
    start = time.perf_counter()
    assert sandbox.call(f"{T}:echo", 1) == {"args": [1], "kwargs": {}}
    assert time.perf_counter() - start < 1.0  # forked, not a fresh interpreter


def test_fallback_without_namespaces_or_seccomp_still_contains(monkeypatch):
    """What a runner that forbids namespaces gets: fork + rlimits + uid drop + clean environment.

    The network and /tmp are then open to the child (see the threat model); time, memory, secrets,
    root-owned files and the next call stay protected."""
    monkeypatch.setattr(sandbox, "SKIP_LAYERS", frozenset({"pidns", "netns", "ipcns", "mountns", "seccomp"}))
    found = sandbox.run(f"{T}:read_secrets", os.getpid())
    print("fallback layers:", ", ".join(found.layers))
    assert not set(found.layers) & {"pidns", "netns", "private-tmp", "private-proc", "private-root", "seccomp"}
    assert {"process", "rlimits", "clean-env"} <= set(found.layers)
    assert FAKE_KEY not in json.dumps(found.value)
    if "uid-drop" in found.layers:  # the host's /proc: pid 1 and this process are root's
        assert found.value["/proc/1/environ"].startswith("PermissionError")
        assert found.value[f"/proc/{os.getpid()}/environ"].startswith("PermissionError")
    with pytest.raises(SandboxError) as err:
        sandbox.call(f"{T}:spin_forever", timeout=1.0)
    assert err.value.kind == "timeout"
    with pytest.raises(SandboxError) as err:
        sandbox.call(f"{T}:allocate", 64, memory_mb=512)
    assert err.value.kind == "memory"
    me = sandbox.call(f"{T}:whoami")
    assert not Path(me["cwd"]).exists(), "the child's folder in the host's /tmp must be removed"
    if "uid-drop" in found.layers:
        repo_file = Path(__file__).parent / f"disco-escape-{uuid.uuid4().hex}"
        assert sandbox.call(f"{T}:write_files", [str(repo_file)])[str(repo_file)].startswith("PermissionError")
        assert not repo_file.exists()
    report = sandbox.call("objectives.checks:run_checks", "dpo", 0.1)
    assert all(c["passed"] for c in report["checks"]), report


def test_code_under_a_folder_closed_to_others_still_imports_after_the_uid_drop(monkeypatch):
    """A checkout under `mktemp -d` (mode 0700): the child's uid cannot pass through it, yet the child
    imports from it lazily. The sandbox covers such folders with a tmpfs holding only the code."""
    if "uid-drop" not in sandbox.layers() or "private-tmp" not in sandbox.layers():
        pytest.skip(f"needs the uid drop and a mount namespace (layers: {', '.join(sandbox.layers())})")
    closed = Path(tempfile.mkdtemp(prefix="disco-closed-"))  # mode 0700, root's
    try:
        (closed / "code").mkdir(mode=0o755)
        name = f"late_{uuid.uuid4().hex}"
        (closed / "code" / f"{name}.py").write_text("VALUE = 'imported'\n")
        (closed / "code" / f"{name}.py").chmod(0o644)
        (closed / "secret.txt").write_text("not for the child")
        monkeypatch.syspath_prepend(str(closed / "code"))
        assert sandbox.call(f"{T}:import_late", name) == "imported"
        seen = sandbox.call(f"{T}:write_files", [str(closed / "secret.txt")])
        assert (closed / "secret.txt").read_text() == "not for the child"
        assert "written" not in seen[str(closed / "secret.txt")]
    finally:
        shutil.rmtree(closed)
