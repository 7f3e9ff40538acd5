"""The one way this project starts a child process: the campaign's training workers, the runner's
``"process"`` isolation and the sandbox's zygote and cold path all go through :func:`launch`.

What every child gets, so that no caller has to remember it:

* an environment the caller states (:func:`environment`): either a clean one holding only what is
  listed, or the caller's minus named variables (an API key never reaches a child by accident);
* its own session and process group, so :meth:`Launched.cancel` kills the child *and* everything it
  started (a training job's dataloader workers, a zygote's forks) with one ``SIGKILL``;
* on Linux, death with its parent (``PR_SET_PDEATHSIG``): a ``kill -9`` of the campaign leaves
  no orphan training on. Off for a child started from a short-lived thread (the signal fires when
  the *thread* that forked it exits), which is why it is a parameter;
* an optional deadline, checked by :meth:`Launched.poll` and :meth:`Launched.wait`: past it the
  group is killed and ``timed_out`` is set.

:class:`Executor` is the shape of a backend that runs campaign jobs (``submit / poll / cancel``):
:class:`discovery.training.LocalExecutor` runs them as local processes through :func:`launch`; a
cluster backend plugs in beside it with the same three methods.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any, Iterable, Mapping, Protocol

CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"


def environment(inherit: bool = False, *, drop: Iterable[str] = (), keep: Iterable[str] = (),
                extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A child's whole environment.

    ``inherit=False``: ``PATH`` and ``LANG`` only, plus the caller's values of the names in
    ``keep`` that are set (thread counts, ``CUDA_VISIBLE_DEVICES``) and then ``extra``.
    ``inherit=True``: this process's environment without the names in ``drop``, then ``extra``.
    """
    drop = {d for d in drop if d}
    if inherit:
        env = {k: v for k, v in os.environ.items() if k not in drop}
    else:
        env = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8"}
        env.update({k: os.environ[k] for k in keep if k in os.environ and k not in drop})
    env.update(extra or {})
    return env


def _die_with_parent() -> None:
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def kill_group(pid: int) -> None:
    """SIGKILL process group ``pid`` (and ``pid`` itself, should it have left the group)."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Launched:
    """A started child: its ``proc`` (``subprocess.Popen``), deadline and how it ended."""

    def __init__(self, proc: subprocess.Popen, timeout: float | None):
        self.proc = proc
        self.deadline = None if timeout is None else time.monotonic() + float(timeout)
        self.timeout = timeout
        self.timed_out = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        """The exit status, or None while it runs; past its deadline the group is killed first."""
        rc = self.proc.poll()
        if rc is None and self.deadline is not None and time.monotonic() >= self.deadline:
            self.timed_out = True
            self.cancel()
            rc = self.proc.returncode
        return rc

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit (at most ``timeout`` s more: then ``subprocess.TimeoutExpired``, the
        child left running); past the deadline the group is killed and the status returned."""
        limit = None if timeout is None else time.monotonic() + timeout
        if self.deadline is not None:
            limit = self.deadline if limit is None else min(limit, self.deadline)
        try:
            return self.proc.wait(timeout=None if limit is None else max(0.0, limit - time.monotonic()))
        except subprocess.TimeoutExpired:
            if self.deadline is None or time.monotonic() < self.deadline:
                raise
        self.timed_out = True
        self.cancel()
        return self.proc.returncode

    def communicate(self, data: bytes | None = None) -> tuple[bytes | None, bytes | None]:
        """Send ``data`` to stdin, read stdout/stderr to the end, within the deadline (else the group
        is killed and what was read before is lost: ``timed_out`` says so)."""
        remaining = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        try:
            return self.proc.communicate(data, timeout=remaining)
        except subprocess.TimeoutExpired:
            self.timed_out = True
            self.cancel()
            return self.proc.communicate()

    def cancel(self) -> None:
        """Kill the child's whole process group and reap the child; a no-op once it has exited."""
        if self.proc.poll() is None:
            kill_group(self.proc.pid)
        self.proc.wait()


def launch(cmd: list[str], *, env: Mapping[str, str], cwd: str | os.PathLike | None = None,
           timeout: float | None = None, die_with_parent: bool = True, **popen: Any) -> Launched:
    """Start ``cmd`` in its own session with exactly ``env``; ``popen``: stdin/stdout/stderr and
    other ``subprocess.Popen`` arguments (stdin defaults to /dev/null, file descriptors are closed)."""
    popen.setdefault("stdin", subprocess.DEVNULL)
    popen.setdefault("close_fds", True)
    preexec = _die_with_parent if die_with_parent and sys.platform == "linux" else None
    proc = subprocess.Popen(list(map(str, cmd)), env=dict(env), cwd=None if cwd is None else str(cwd),
                            start_new_session=True, preexec_fn=preexec, **popen)
    return Launched(proc, timeout)


def python(module: str, *args: str) -> list[str]:
    """The command running ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *map(str, args)]


class Executor(Protocol):
    """A backend for a campaign's training jobs. ``submit`` starts one job (a JSON-able spec) and
    returns a handle; ``poll(handle)`` is None while it runs, then its results; ``cancel(handle)``
    stops it, losing nothing the archive has recorded."""

    def submit(self, spec: dict) -> Any: ...

    def poll(self, handle: Any) -> list[dict] | None: ...

    def cancel(self, handle: Any) -> None: ...
