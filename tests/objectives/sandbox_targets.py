"""Trusted sandbox targets that deliberately try to escape, for tests/objectives/test_sandbox.py.

The AST screen stops candidate code long before it could try any of this, so these functions test
the process boundary itself: each is imported in the warm zygote and called in a sandbox child,
where it tries what hostile code would try once past the screen.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time


def whoami() -> dict:
    try:
        os.setuid(0)
        regained = True
    except PermissionError:
        regained = False
    return {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "pid": os.getpid(),
            "cwd": os.getcwd(), "tmpdir": os.environ.get("TMPDIR"), "regained_root": regained}


def read_secrets(host_pid: int) -> dict:
    """Everything a loss could try in order to read the parent's API key."""
    found = {"environ": dict(os.environ)}
    for path in ("/proc/1/environ", f"/proc/{host_pid}/environ", "/proc/self/environ",
                 f"/proc/{os.getppid()}/environ", "/root/.bashrc", "/root/.gitconfig"):
        try:
            with open(path, "rb") as f:
                found[path] = f.read().decode(errors="replace")
        except OSError as err:
            found[path] = f"{type(err).__name__}: {err}"
    try:
        found["listdir_root"] = sorted(os.listdir("/root"))
    except OSError as err:
        found["listdir_root"] = f"{type(err).__name__}"
    return found


def write_files(paths: list[str]) -> dict:
    """Try to create each file; report what happened (the host checks what is visible afterwards)."""
    done = {}
    for path in paths + [os.path.join(os.getcwd(), "own.txt")]:
        try:
            with open(path, "w") as f:
                f.write("written from the sandbox")
            done[path] = "written"
        except OSError as err:
            done[path] = f"{type(err).__name__}: {err}"
    return done


def connect(port: int) -> str:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.sendall(b"secret")
        return "connected"
    except OSError as err:
        return f"{type(err).__name__}: {err}"


def fork_many(n: int, name: str) -> dict:
    """Fork ``n`` sleepers that leave our session and carry ``name`` as their process name."""
    made, errors = 0, []
    for _ in range(n):
        try:
            pid = os.fork()
        except OSError as err:
            errors.append(f"{type(err).__name__}: {err}")
            break
        if pid == 0:
            os.setsid()
            ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME
            time.sleep(120)
            os._exit(0)
        made += 1
    return {"made": made, "errors": errors}


def run_shell() -> str:
    try:
        return f"exit {subprocess.run(['/bin/true']).returncode}"
    except OSError as err:
        return f"{type(err).__name__}: {err}"


def exec_true() -> str:
    """exec in this very process (no fork, so RLIMIT_NPROC cannot be what stops it)."""
    try:
        os.execv("/bin/true", ["true"])
    except OSError as err:
        return f"{type(err).__name__}: {err}"


def sleep_forever() -> None:
    while True:
        time.sleep(1)


def spin_forever() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        pass


def allocate(gib: int) -> int:
    block = bytearray(gib << 30)
    return len(block)


def allocate_tensor(gib: int) -> int:
    import torch
    return torch.ones(gib << 28).numel()  # float32: 4 bytes each


def segfault() -> None:
    ctypes.string_at(0)


def fail() -> None:
    raise ValueError("deliberate failure")


def not_json() -> object:
    return {1, 2}


def noisy(value: int) -> int:
    print("this must not reach the protocol", flush=True)
    os.write(1, b"nor this\n")
    return value


def poison_logsigmoid() -> str:
    import torch.nn.functional as F
    F.logsigmoid = lambda x: x * 0
    return "poisoned"


def logsigmoid_of_zero() -> float:
    import torch
    import torch.nn.functional as F
    return float(F.logsigmoid(torch.zeros(1))[0])


def echo(*args, **kwargs) -> dict:
    return {"args": list(args), "kwargs": kwargs}


def import_late(name: str) -> str:
    """Import a module only now, after the uid drop (as transformers does with its model classes)."""
    import importlib
    return importlib.import_module(name).VALUE


# -- for tests/objectives/test_sandbox_review.py ------------------------------------------------

def _name_and_mark(name: str, marker_dir: str | None) -> None:
    """Carry ``name`` as this process's name; leave the folder we run in as ``marker_dir``/cwd.txt."""
    ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME
    if marker_dir:
        with open(os.path.join(marker_dir, "cwd.txt"), "w") as f:
            f.write(os.getcwd())


def _result_fd() -> int:
    """The pipe the sandbox reads our answer from: the only FIFO left open in the child."""
    import stat
    for fd in range(3, 1024):
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                return fd
        except OSError:
            pass
    raise RuntimeError("no result pipe found")


def write_raw_then_sleep(kind: str, name: str, marker_dir: str | None, seconds: float) -> None:
    """Write something hostile straight onto the result pipe, then linger."""
    _name_and_mark(name, marker_dir)
    fd = _result_fd()
    if kind == "nested":
        data = b"[" * 100_000 + b"\n"
        while data:
            data = data[os.write(fd, data):]
    elif kind == "flood":  # a line that never ends
        while True:
            os.write(fd, b"[" * 65536)
    elif kind == "dribble":  # a byte at a time, never a newline
        while True:
            os.write(fd, b" ")
            time.sleep(0.002)
    time.sleep(seconds)


def nested_value(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def pdeathsig() -> int:
    sig = ctypes.c_int(-1)
    ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG
    return sig.value


def named_sleep(name: str, seconds: float) -> None:
    _name_and_mark(name, None)
    time.sleep(seconds)


def hold_secret(folder: str, go: str, seconds: float) -> dict:
    """Job A: write a 0600 file in our own folder, then wait (up to ``seconds``) for ``go``."""
    path = os.path.join(folder, "secret.txt")
    with open(path, "w") as f:
        f.write("job A's secret")
    end = time.monotonic() + seconds
    while not os.path.exists(go) and time.monotonic() < end:
        time.sleep(0.05)
    return {"uid": os.getuid(), "mode": oct(os.stat(path).st_mode & 0o777), "saw_go": os.path.exists(go)}


def read_file(path: str) -> dict:
    """Job B: try to read someone else's file."""
    try:
        with open(path) as f:
            return {"uid": os.getuid(), "read": f.read()}
    except OSError as err:
        return {"uid": os.getuid(), "error": type(err).__name__}


def write_megabytes(folder: str, n: int) -> list[str]:
    """Write ``n`` files of 1 MiB into ``folder``; what happened to each."""
    done = []
    for i in range(n):
        try:
            with open(os.path.join(folder, f"block{i}.bin"), "wb") as f:
                f.write(b"\1" * (1 << 20))
            done.append("written")
        except OSError as err:
            done.append(f"{type(err).__name__}: {err}")
    return done


def allocate_mib(mib: int) -> int:
    block = bytearray(mib << 20)
    return len(block)
