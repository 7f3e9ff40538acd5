"""Attacks from a security review of the sandbox, each with the fix it needs to stay out.

1. whatever a child writes on its result pipe, it is killed, reaped and its folder removed, and
   neither the zygote nor the host raises; 2. the parent-death signal survives the uid drop;
3. each child has a uid of its own; 4. the private tmpfs are small and counted against
   ``memory_mb``, and a job's writable folder can have a size quota. Tests that need a layer this
   machine cannot give are skipped with the reason.
"""

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from objectives import lockdown, sandbox, shared_dirs
from objectives.sandbox import SandboxError
from tests.objectives import sandbox_targets
from tests.objectives.test_sandbox import _alive_named

T = sandbox_targets.__name__


def need(*layers: str):
    missing = [layer for layer in layers if layer not in sandbox.layers()]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (layers here: {', '.join(sandbox.layers())})")


def _gone(name: str, within: float = 2.0) -> bool:
    end = time.monotonic() + within
    while _alive_named(name) and time.monotonic() < end:
        time.sleep(0.05)
    return not _alive_named(name)


@pytest.fixture
def marker_dir():
    path = sandbox.shared_dir("disco-test-marker-", writable=True)
    yield path
    sandbox.remove_shared(path)


# -- 1. cleanup that cannot be skipped ----------------------------------------------------------

@pytest.mark.parametrize("kind", ["nested", "flood", "dribble"])
def test_whatever_the_child_writes_it_is_killed_reaped_and_cleaned_up(kind, marker_dir):
    name = "dsc" + uuid.uuid4().hex[:10]
    start = time.monotonic()
    with pytest.raises(SandboxError) as err:
        sandbox.call(f"{T}:write_raw_then_sleep", kind, name, marker_dir, 8.0, timeout=2.0,
                     writable=[marker_dir])
    took = time.monotonic() - start
    assert _gone(name, within=0.5), f"the child ({kind}) outlived its call"
    cwd = Path(marker_dir, "cwd.txt").read_text()
    assert Path(cwd).name.startswith("disco-sbx-") and not Path(cwd).exists(), "the child's folder was left"
    assert took < 2.0 + 1.5, f"the call took {took:.1f} s with a 2 s limit"
    assert err.value.kind in ("crash", "timeout"), err.value
    if kind == "nested":
        assert err.value.kind == "crash" and "nested too deeply" in err.value.reason, err.value.reason
    elif kind == "dribble":
        assert err.value.kind == "timeout", err.value.reason
    assert sandbox.call(f"{T}:echo", 1) == {"args": [1], "kwargs": {}}  # the pool still works


def _deep(levels: int, fn):
    return fn() if levels == 0 else _deep(levels - 1, fn)


@pytest.mark.parametrize("cold", [False, True])
def test_an_answer_too_nested_for_the_host_is_a_crash_not_a_recursion_error(cold):
    """The child and the zygote parse it (shallow stacks); the host, deeper, cannot."""
    sandbox.call(f"{T}:echo")
    zygote = sandbox._POOL.proc.pid
    with pytest.raises(SandboxError) as err:
        _deep(150, lambda: sandbox.call(f"{T}:nested_value", 950, cold=cold, timeout=30))
    assert err.value.kind == "crash" and "nested too deeply" in err.value.reason, err.value.reason
    if not cold:
        assert sandbox._POOL.proc.pid == zygote, "a bad answer must not cost the warm worker"


def test_lines_reader_turns_a_nested_line_into_a_bad_line():
    read, write = os.pipe()
    try:
        os.write(write, b"[" * 30_000 + b"\n" + b'{"ok": true}\n' + b"[1]\n")
        lines = sandbox._Lines(read)
        with pytest.raises(sandbox._BadLine, match="nested too deeply"):
            lines.next(time.monotonic() + 5)
        assert lines.next(time.monotonic() + 5) == {"ok": True}
        with pytest.raises(sandbox._BadLine, match="not an object"):
            lines.next(time.monotonic() + 5)
    finally:
        os.close(read)
        os.close(write)


# -- 2. the parent-death signal after the uid drop ----------------------------------------------

def test_parent_death_signal_is_set_after_the_uid_drop():
    need("uid-drop")
    assert sandbox.call(f"{T}:pdeathsig") == 9  # SIGKILL; setresuid had cleared it to 0


def test_a_child_does_not_outlive_its_zygote():
    """Kill the zygote (not through the pool, whose backstop would kill the child too)."""
    need("uid-drop")
    name = "dsc" + uuid.uuid4().hex[:10]
    request = sandbox._request(f"{T}:named_sleep", (name, 8.0), {}, 20.0, 2048, ())
    zygote = subprocess.Popen(sandbox._command(once=True), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env=sandbox._clean_env(), cwd=sandbox.REPO, start_new_session=True)
    try:
        lines = sandbox._Lines(zygote.stdout.fileno())
        assert lines.next(time.monotonic() + 120).get("ready")
        zygote.stdin.write(request)
        zygote.stdin.flush()
        started = lines.next(time.monotonic() + 30)
        assert "started" in started
        end = time.monotonic() + 10
        while not _alive_named(name) and time.monotonic() < end:
            time.sleep(0.02)
        assert _alive_named(name), "the child never started"
        time.sleep(0.3)  # past the uid drop: it is sleeping in the target now
        zygote.kill()
        zygote.wait()
        assert _gone(name, within=2.0), "the child outlived its zygote"
        tmpdir = started["tmpdir"]  # the killed zygote could not remove it: a later sweep does
        assert Path(tmpdir).is_dir() and f"-{zygote.pid}-" in tmpdir
        assert tmpdir in shared_dirs.sweep_stale() and not Path(tmpdir).exists()
    finally:
        zygote.kill()
        zygote.wait()
        zygote.stdin.close()
        zygote.stdout.close()


# -- 3. one uid per concurrent sandbox ----------------------------------------------------------

def _uids_of_our_own_exist() -> bool:
    """Whether this user namespace maps the uids the sandbox gives its jobs (2e9 + pid)."""
    probe = Path(sandbox.shared_dir("disco-test-uid-"))
    try:
        os.chown(probe, 2_000_000_001, 2_000_000_001)  # lockdown.JOB_UID_BASE + 1
        return True
    except OSError:
        return False
    finally:
        sandbox.remove_shared(str(probe))


def test_concurrent_jobs_have_their_own_uids_and_cannot_read_each_others_files():
    need("uid-drop")
    if not _uids_of_our_own_exist():
        pytest.skip("this user namespace has no uids beyond 65535: every job runs as 65534")
    a_dir = sandbox.shared_dir("disco-test-job-a-", writable=True)
    b_dir = sandbox.shared_dir("disco-test-job-b-", writable=True)
    go_dir = sandbox.shared_dir("disco-test-go-")
    go = os.path.join(go_dir, "go")
    result: dict = {}

    def job_a():  # a second zygote (a cold process): really concurrent with the pool's child
        try:
            result["a"] = sandbox.run(f"{T}:hold_secret", a_dir, go, 30.0, writable=[a_dir], cold=True, timeout=60)
        except Exception as err:  # noqa: BLE001 - reported below
            result["a"] = err

    thread = threading.Thread(target=job_a)
    thread.start()
    try:
        end = time.monotonic() + 90
        while not Path(a_dir, "secret.txt").exists() and thread.is_alive() and time.monotonic() < end:
            time.sleep(0.05)
        assert Path(a_dir, "secret.txt").exists(), f"job A did not start: {result.get('a')}"
        b = sandbox.run(f"{T}:read_file", os.path.join(a_dir, "secret.txt"), writable=[b_dir])
    finally:
        Path(go).touch()
        thread.join(60)
    a = result["a"]
    assert not isinstance(a, Exception), a
    assert a.value["saw_go"], "job A finished before job B ran: not concurrent"
    assert b.value.get("error") == "PermissionError", b.value
    assert a.value["uid"] != b.value["uid"]
    assert {"uid-drop", "uid-per-job"} <= set(a.layers) & set(b.layers)
    assert a.value["mode"] == "0o600"
    st = os.stat(a_dir)  # handed back to root once job A was gone
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o700)
    for path in (a_dir, b_dir, go_dir):
        sandbox.remove_shared(path)


# -- 4. tmpfs sizes, memory, quotas ------------------------------------------------------------

def test_private_tmpfs_are_small():
    need("private-tmp")
    shm = sandbox.call(f"{T}:write_megabytes", "/dev/shm", 12)
    assert shm[:7] == ["written"] * 7 and "No space left" in shm[-1], shm
    own = sandbox.call(f"{T}:write_megabytes", ".", 72)
    assert own.count("written") <= 64 and "No space left" in own[-1], own[-3:]


def test_tmpfs_count_against_memory_mb():
    need("private-tmp")
    assert sandbox.call(f"{T}:allocate_mib", 16, memory_mb=200) == 16 << 20
    with pytest.raises(SandboxError) as err:  # 200 MiB minus 88 MiB of tmpfs leaves 112
        sandbox.call(f"{T}:allocate_mib", 150, memory_mb=200)
    assert err.value.kind == "memory", err.value.reason
    with pytest.raises(SandboxError) as err:
        sandbox.call(f"{T}:echo", memory_mb=100)
    assert err.value.kind == "refused" and "tmpfs" in err.value.reason


def _quota_dir(prefix: str, mb: int) -> str:
    path = sandbox.shared_dir(prefix, writable=True, quota_mb=mb)
    if sandbox.quota_of(path) is None:
        sandbox.remove_shared(path)
        pytest.skip("this process cannot mount a tmpfs (not root, or mounts are not allowed)")
    return path


def test_a_quota_folder_stops_a_job_from_filling_the_disk():
    path = _quota_dir("disco-test-quota-", 4)
    try:
        assert sandbox.quota_of(path) == 4
        assert f"-{os.getpid()}-" in Path(path).name
        done = sandbox.call(f"{T}:write_megabytes", path, 8, writable=[path])
        assert "written" in done and "No space left" in done[-1], done
        used = sum(f.stat().st_blocks * 512 for f in Path(path).rglob("*") if f.is_file())
        assert used <= 4 << 20, used
    finally:
        sandbox.remove_shared(path)
    assert not Path(path).exists()
    assert not any(point == path for point, *_ in lockdown.mounts())
    sandbox.remove_shared(path)  # twice is fine


def test_another_jobs_quota_folder_is_read_only_in_the_child():
    need("private-tmp")
    other = _quota_dir("disco-test-other-", 1)  # mode 0777, mounted under /tmp
    try:
        done = sandbox.call(f"{T}:write_files", [os.path.join(other, "planted.txt")])
        assert "Read-only file system" in done[os.path.join(other, "planted.txt")], done
        assert not Path(other, "planted.txt").exists()
    finally:
        sandbox.remove_shared(other)


def test_stale_quota_mounts_are_swept_and_own_ones_removed_at_exit():
    probe = _quota_dir("disco-test-probe-", 1)
    sandbox.remove_shared(probe)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"/tmp/disco-test-stale-{dead.pid}-{uuid.uuid4().hex[:8]}"
    os.mkdir(stale)
    lockdown._mount("tmpfs", stale, "tmpfs", lockdown.MS_NOSUID | lockdown.MS_NODEV, "size=1m")
    assert stale in shared_dirs.sweep_stale()
    assert not Path(stale).exists() and sandbox.quota_of(stale) is None
    made = subprocess.run([sys.executable, "-c", "from objectives.shared_dirs import shared_dir\n"
                           "print(shared_dir('disco-test-exit-', writable=True, quota_mb=1))"],
                          cwd=sandbox.REPO, capture_output=True, text=True, timeout=60)
    path = made.stdout.strip()
    assert path.startswith("/tmp/disco-test-exit-"), made.stderr
    assert not Path(path).exists() and sandbox.quota_of(path) is None


def test_remove_shared_refuses_other_folders(tmp_path):
    with pytest.raises(ValueError):
        sandbox.remove_shared(str(tmp_path))
    with pytest.raises(ValueError):
        sandbox.remove_shared("/tmp")
