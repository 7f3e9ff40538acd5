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
