"""Run a trusted function of this project on untrusted input (LLM-written losses) in an isolated child.

``call("objectives.checks:run_checks", source, 0.1)`` imports the named function in a warm worker
(a "zygote" that has imported torch and nothing else ran), forks one child per call, locks the
child down, calls the function there and returns its JSON result. Failures raise
:class:`SandboxError` with ``kind`` in timeout / memory / crash / error / refused.

Threat model
------------
The adversary is the code of a candidate objective: written by a language model that may be wrong,
wasteful, or (through prompt injection or plain luck) hostile. It runs only in the child. Before it
runs, the child (as root, then not) sets up these layers; :func:`layers` and every
:class:`Outcome` say which of them actually ran:

* ``process``: a fork per call, so nothing the code does (monkeypatching ``F.logsigmoid``,
  leaked state) reaches the next call; results come back as one JSON line on a pipe, never pickle.
* ``rlimits``: address space (current + ``memory_mb`` minus the private tmpfs below, which hold
  RAM outside RLIMIT_AS), CPU seconds, processes, file size, open files, no core files. A
  wall-clock deadline is enforced from outside with SIGKILL, whatever the child writes on its pipe
  (nothing, a never-ending line, a line nested too deeply to parse): every way out of reading the
  answer ends in the same kill, reap and removal of the child's folder.
* ``pidns``: the child is PID 1 of a new PID namespace, so killing it kills every process it made,
  even ones that called setsid(); without it the child's process group is killed instead. The
  parent-death signal (SIGKILL) is set again after the uid drop (which clears it), and the child
  exits if the zygote died before that.
* ``netns``: a new network namespace with no interface up: no network, not even loopback.
  ``ipcns``/``utsns``: System V IPC and host name are private too.
* ``private-tmp``: a mount namespace where the world-writable places are closed: the host's /tmp
  (and anything mounted under it, such as other jobs' quota folders) is visible read-only, the
  child's own folder in it is a private tmpfs of 64 MiB, and /var/tmp, /dev/shm, /run/lock are
  fresh 8 MiB tmpfs; those 88 MiB count against ``memory_mb``, and all of it is gone when the
  child dies. ``private-proc``: a /proc that shows only the sandbox's processes;
  ``private-root``: /root replaced by a tmpfs that holds only the read-only Python installation
  (so the stdlib can be imported and nothing else there is visible). ``writable=`` directories
  stay writable; one made by :func:`shared_dir` with ``quota_mb`` is a tmpfs of that size in the
  host's mount namespace, so a job cannot fill the host's disk through it.
* ``uid-drop``: no groups and an unprivileged uid; the file system then protects everything root
  owns, and RLIMIT_NPROC binds (it does not bind root). ``uid-per-job``: that uid (and gid) is
  the child's own, 2,000,000,000 + its pid on the host, so no two live sandboxes share one, even
  from different host processes; its folder and the ``writable=`` folders made for it (mode 0777
  from :func:`shared_dir`) are handed to it with mode 0700, so no other job can read or enter
  them, and handed back to root (0700) when it is gone. Without that layer the uid is 65534 for
  every job, which then can read each other's files and share one RLIMIT_NPROC.
* ``clean-env``: the zygote is started (:func:`objectives.launcher.launch`) with a scrubbed
  environment (so even /proc/self/environ holds no secret) and the child empties ``os.environ``;
  the parent's OPENAI_API_KEY never reaches it. Unprivileged, it cannot read other processes'
  /proc/<pid>/environ either.
* ``seccomp`` (if the ``pyseccomp`` package and libseccomp are present) with ``no-new-privs``:
  sockets, exec, ptrace, mount, namespaces, kernel keyrings, bpf and module loading fail with EPERM.

Not protected against: kernel exploits (one kernel is shared, this is no VM, and the seccomp filter
is a deny-list); reading world-readable files (the repository's own code, /etc/passwd); CPU, cache
and timing side channels; the child's own answer, which is data it controls: code that escapes
the AST screen can forge whatever the child reports, a validation verdict included, so treat every
result as untrusted data and compute fitness in a trusted process. The child inherits a copy of
the zygote's memory, which holds no secret but may hold earlier requests (earlier candidates'
code). A quota folder's tmpfs is RAM the caller sizes, outside any job's ``memory_mb``; a uid is
unique per live sandbox within this machine's PID namespace (containers that share uids but not
PIDs could collide). Without root or namespaces (e.g. CI runners that forbid them) fewer layers run; the ones
that did are reported, never assumed. The AST screen (:mod:`objectives.screen`) is a fast filter
for useful error messages, not a boundary.
"""

from __future__ import annotations

import atexit
import ctypes
import dataclasses
import gc
import importlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from objectives import lockdown, shared_dirs
from objectives.launcher import Launched, environment, kill_group, launch
from objectives.lockdown import CLONE_NEWPID, PR_SET_PDEATHSIG, libc
from objectives.shared_dirs import SHARED_ROOT, quota_of, remove_shared, shared_dir  # noqa: F401 - the API

KINDS = ("timeout", "memory", "crash", "error", "refused")
MAX_RESULT_BYTES = 32 << 20  # a bigger answer is treated as a crash
PRELOAD = ("json", "socket", "encodings.idna", "traceback", "torch", "torch.nn.functional",
           "objectives.checks", "pyseccomp")  # imported by the zygote, so every fork has them
REPO = str(Path(__file__).resolve().parents[1])
# Layers not to set up: for tests of the fallback path a CI runner without namespaces would take.
# Any of "pidns", "netns", "ipcns", "mountns" (private-tmp/-root/-proc), "seccomp".
SKIP_LAYERS: frozenset[str] = frozenset()
HIDDEN = lockdown.PRIVATE_TMP + ("/root", "/proc")  # covered in the child's mount namespace


class SandboxError(RuntimeError):
    """A sandboxed call failed; ``kind`` is one of :data:`KINDS`, ``reason`` says why in words."""

    def __init__(self, reason: str, kind: str):
        if kind not in KINDS:
            raise ValueError(f"unknown SandboxError kind {kind!r}")
        self.reason, self.kind = reason, kind
        super().__init__(f"{kind}: {reason}")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a sandboxed call returned, which isolation layers it ran under, and how long it took."""

    value: object
    layers: tuple[str, ...]
    seconds: float


# -- the host side --------------------------------------------------------------------------------

def call(target: str, *args, timeout: float = 10.0, memory_mb: int | None = 2048, cold: bool = False,
         writable: tuple[str, ...] = (), **kwargs):
    """Call ``target`` ("module.path:function", trusted code of this project) in an isolated child.

    ``args``/``kwargs`` and the return value must be JSON-serialisable. ``memory_mb`` is the
    address space allowed on top of what the child starts with, the child's private tmpfs
    (88 MiB) included (None: no limit, e.g. for CUDA). ``writable``: existing directories the child
    may write to besides its own temporary folder: make them with :func:`shared_dir` (mode 0777,
    under /tmp), which the child then owns until it is gone; a 0777 folder passed again needs a new
    ``chmod(0o777)``, and one with another mode is shared as it is (e.g. read-only inputs). Paths
    handed to the target in ``args`` must be absolute, since the child runs in its own folder. The target's module is
    imported in the warm worker: it must not run torch ops at import time (forks would hang). ``cold=True`` pays for a fresh ``python -c``
    process instead of forking the warm zygote (same limits; for benchmarks).
    """
    return run(target, *args, timeout=timeout, memory_mb=memory_mb, cold=cold, writable=writable,
               **kwargs).value


def run(target: str, *args, timeout: float = 10.0, memory_mb: int | None = 2048, cold: bool = False,
        writable: tuple[str, ...] = (), **kwargs) -> Outcome:
    """Like :func:`call`, but return an :class:`Outcome` with the layers that ran."""
    request = _request(target, args, kwargs, timeout, memory_mb, writable)
    response = _cold(request, timeout) if cold else _POOL.submit(request, timeout)
    layers = tuple(str(x) for x in response.get("layers") or ())
    if response.get("ok") is True:
        return Outcome(response.get("value"), layers, float(response.get("seconds") or 0.0))
    kind = response.get("kind") if response.get("kind") in KINDS else "crash"
    raise SandboxError(str(response.get("reason") or "no reason given"), kind)


_LAYERS: list[str] | None = None


def layers() -> list[str]:
    """The isolation layers a sandboxed call gets on this machine (measured once, by a probe call)."""
    global _LAYERS
    if _LAYERS is None:
        _LAYERS = list(run("objectives.sandbox:probe", timeout=30.0).layers)
    return list(_LAYERS)


def probe() -> dict:
    """A trusted no-op target: who and where the child is."""
    return {"uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid(), "cwd": os.getcwd()}


def _request(target, args, kwargs, timeout, memory_mb, writable) -> bytes:
    if not isinstance(target, str) or target.count(":") != 1 or not all(target.split(":")):
        raise SandboxError(f"target must be 'module.path:function', got {target!r}", "refused")
    if not timeout or timeout <= 0:
        raise SandboxError(f"timeout must be positive, got {timeout!r}", "refused")
    least = lockdown.TMPFS_TOTAL_MB + lockdown.MIN_HEAP_MB
    if memory_mb is not None and memory_mb < least:
        raise SandboxError(f"memory_mb={memory_mb} is below {least} MiB: the child's private tmpfs take "
                           f"{lockdown.TMPFS_TOTAL_MB} MiB of it", "refused")
    if isinstance(writable, str):
        writable = (writable,)
    for path in writable:
        if not os.path.isdir(path):
            raise SandboxError(f"writable path {path!r} is not an existing directory", "refused")
        real = os.path.realpath(path)
        hidden = any(real == h or real.startswith(h + "/") for h in HIDDEN)
        if hidden and os.geteuid() == 0 and "mountns" not in SKIP_LAYERS:  # namespaces run as root only
            raise SandboxError(f"writable path {path!r} ({real}) is hidden in the child by its private "
                               f"mounts; make it with shared_dir() (under {SHARED_ROOT})", "refused")
    path = [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
    try:
        line = json.dumps({"target": target, "args": list(args), "kwargs": kwargs,
                           "timeout": float(timeout), "memory_mb": memory_mb, "path": path,
                           "writable": [os.path.realpath(p) for p in writable],
                           "skip": sorted(SKIP_LAYERS)})
    except (TypeError, ValueError) as err:
        raise SandboxError(f"arguments must be JSON-serialisable: {err}", "refused") from None
    return line.encode() + b"\n"


def _clean_env() -> dict:
    """The zygote's whole environment: nothing of the caller's (no API keys), one thread."""
    return environment(extra={"PYTHONPATH": REPO, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1",
                              "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                              "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"})


def _launch(once: bool, timeout: float | None = None) -> Launched:
    """Start a zygote through :func:`objectives.launcher.launch`: its own session, exactly
    :func:`_clean_env`, the protocol on stdin/stdout. No parent-death signal: the first call may
    come from a short-lived thread, whose exit would fire it. A zygote needs none: the warm one
    exits at end of file on stdin (this process gone), a cold one after its one request, and each
    child of theirs has its own parent-death signal and wall-clock kill."""
    return launch(_command(once), env=_clean_env(), cwd=REPO, timeout=timeout, die_with_parent=False,
                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)


def _command(once: bool) -> list[str]:
    return [sys.executable, "-c", f"from objectives.sandbox import serve; serve(once={once})"]


class _BadLine(ValueError):
    """A whole line arrived but is no JSON object (invalid, or nested too deeply to parse)."""


class _Lines:
    """Newline-delimited JSON objects from a file descriptor, with deadlines and a size cap."""

    def __init__(self, fd: int, limit: int = MAX_RESULT_BYTES):
        self.fd, self.limit, self.buf, self.scanned, self.eof = fd, limit, bytearray(), 0, False

    def next(self, deadline: float | None = None) -> dict | None:
        """The next JSON object; None at end of file; TimeoutError past ``deadline`` however the
        bytes arrive; OverflowError past the size cap; :class:`_BadLine` for a line that is not
        a JSON object."""
        while (end := self.buf.find(b"\n", self.scanned)) < 0:
            self.scanned = len(self.buf)
            if self.eof:
                return None
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise TimeoutError
            poller = select.poll()
            poller.register(self.fd, select.POLLIN | select.POLLHUP | select.POLLERR)
            if not poller.poll(None if wait is None else wait * 1000):
                raise TimeoutError
            chunk = os.read(self.fd, 1 << 16)
            self.eof = not chunk
            self.buf += chunk
            if len(self.buf) > self.limit:
                raise OverflowError(f"more than {self.limit} bytes")
        line = bytes(self.buf[:end])
        del self.buf[:end + 1]
        self.scanned = 0
        try:
            msg = json.loads(line)
        except RecursionError:
            raise _BadLine("a JSON line nested too deeply to parse") from None
        except ValueError as err:
            raise _BadLine(f"not JSON ({err})"[:200]) from None
        if not isinstance(msg, dict):
            raise _BadLine(f"a JSON {type(msg).__name__}, not an object")
        return msg


class _Pool:
    """One warm zygote per host process, started on first use and stopped at exit."""

    def __init__(self):
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.lines: _Lines | None = None
        self.owner = 0

    def start(self) -> None:
        self.stop()
        self.proc = _launch(once=False).proc
        self.owner = os.getpid()
        self.lines = _Lines(self.proc.stdout.fileno())
        shared_dirs.sweep_once()  # folders and quota mounts left by killed zygotes and hosts
        try:
            hello = self.lines.next(time.monotonic() + 300)
        except (TimeoutError, ValueError, OverflowError):
            hello = None
        if not hello or not hello.get("ready"):
            self.stop()
            raise SandboxError("the sandbox worker did not start", "crash")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or self.owner != os.getpid():
            return
        try:
            proc.stdin.close()
            proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            kill_group(proc.pid)
            proc.wait()
        proc.stdout.close()

    def submit(self, request: bytes, timeout: float) -> dict:
        with self.lock:
            if self.proc is None or self.proc.poll() is not None or self.owner != os.getpid():
                self.start()
            child, tmpdir = None, None
            try:
                self.proc.stdin.write(request)
                self.proc.stdin.flush()
                # the zygote enforces `timeout` itself; this backstop covers a zygote that hangs
                deadline = time.monotonic() + timeout + 60
                while True:
                    msg = self.lines.next(deadline)
                    if msg is None:
                        raise EOFError
                    if "started" in msg:
                        child, tmpdir = int(msg["started"]), str(msg.get("tmpdir") or "")
                        continue
                    return msg
            except _BadLine as err:
                if child is not None:  # the answer itself: the stream is still in step
                    return {"ok": False, "kind": "crash", "reason": f"the sandbox's answer could not be read: {err}"}
                self._drop_worker(err, child, tmpdir)
            except Exception as err:  # noqa: BLE001 - whatever went wrong, the worker is replaced
                self._drop_worker(err, child, tmpdir)

    def _drop_worker(self, err: Exception, child: int | None, tmpdir: str | None) -> None:
        """Kill the zygote (and its running child) after a protocol failure; raise SandboxError."""
        proc, self.proc = self.proc, None
        for pid in (child, proc.pid):
            if pid:
                kill_group(pid)
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if tmpdir and os.path.dirname(tmpdir) == "/tmp" and os.path.basename(tmpdir).startswith("disco-sbx-"):
            shutil.rmtree(tmpdir, ignore_errors=True)  # the child's folder, which the zygote did not remove
        hung = isinstance(err, TimeoutError)
        raise SandboxError(f"the sandbox worker {'stopped answering' if hung else 'died'} "
                           f"({type(err).__name__}); it will be restarted", "timeout" if hung else "crash") from None


def _cold(request: bytes, timeout: float) -> dict:
    cold = _launch(once=True, timeout=timeout + 300)  # the child's own deadline is `timeout`
    out, _ = cold.communicate(request)
    if cold.timed_out:  # its process group is killed and reaped
        raise SandboxError("the cold sandbox process did not finish", "timeout")
    proc = cold.proc
    unread = ""
    for line in reversed(out.splitlines()):
        try:
            msg = json.loads(line)
        except RecursionError:
            unread = " it could read (a line nested too deeply)"
            continue
        except ValueError:
            continue
        if isinstance(msg, dict) and "ok" in msg:
            return msg
    raise SandboxError(f"the cold sandbox process exited with {proc.returncode} and no answer{unread}", "crash")


_POOL = _Pool()
atexit.register(_POOL.stop)


# -- the zygote -----------------------------------------------------------------------------------

def serve(once: bool = False) -> None:
    """The zygote's loop: one JSON request per line on stdin, one JSON answer per line on stdout."""
    proto_in, proto_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)  # a stray print() in some import must not corrupt the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - optional (pyseccomp without libseccomp raises OSError)
            pass
    lockdown._passwd_max()  # read once here, inherited by every child
    gc.collect()
    gc.freeze()  # the preloaded heap is never scanned again, here or in a child (copy-on-write)
    pidns = None
    if os.geteuid() == 0:
        try:
            pidns = os.open("/proc/self/ns/pid", os.O_RDONLY)
        except OSError:
            pass
        if pidns is not None and libc.setns(pidns, CLONE_NEWPID) != 0:  # root in a user namespace:
            os.close(pidns)  # no way back from a new PID namespace, so no such layer
            pidns = None
    _send(proto_out, {"ready": True, "pid": os.getpid()})
    requests = _Lines(proto_in, limit=1 << 30)
    while True:
        request = requests.next()
        if request is None:
            return
        try:
            answer = _handle(request, proto_out, pidns)
        except Exception as err:  # noqa: BLE001 - the zygote must answer, whatever happened
            answer = {"ok": False, "kind": "crash", "reason": f"sandbox worker: {type(err).__name__}: {err}"}
        try:
            data = _encode(answer)
        except (TypeError, ValueError, RecursionError) as err:  # e.g. a value nested too deeply
            data = _encode({"ok": False, "kind": "crash", "layers": answer.get("layers") or [],
                            "reason": f"the child's answer could not be passed on ({type(err).__name__})"})
        _write(proto_out, data)
        if once:
            return


def _encode(message: dict) -> bytes:
    return json.dumps(message).encode() + b"\n"


def _write(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _send(fd: int, message: dict) -> None:
    _write(fd, _encode(message))


def _resolve(target: str, path: list[str]):
    if path and path != sys.path:
        sys.path[:] = path
        importlib.invalidate_caches()
    module, _, name = target.partition(":")
    fresh = module not in sys.modules
    obj = importlib.import_module(module)  # trusted code, imported here so that forks share it
    if fresh:
        gc.freeze()
    for part in name.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj


def _handle(request: dict, out: int, pidns: int | None) -> dict:
    start = time.perf_counter()
    try:
        fn = _resolve(request["target"], request.get("path") or [])
    except Exception as err:  # noqa: BLE001
        return {"ok": False, "kind": "refused",
                "reason": f"cannot import target {request.get('target')!r}: {type(err).__name__}: {err}"}
    timeout = float(request["timeout"])
    writable = [str(p) for p in request.get("writable") or []]
    skip = set(request.get("skip") or ())
    # named and removed here; the pid in the name lets a later sweep remove it if this zygote is killed
    tmpdir = tempfile.mkdtemp(prefix=f"disco-sbx-{os.getpid()}-", dir="/tmp")
    pid, status, fds, hello, result, failure = None, 0, list(os.pipe()), {}, None, None
    try:
        read_end, write_end = fds
        new_pidns = pidns is not None and "pidns" not in skip and libc.unshare(CLONE_NEWPID) == 0
        try:
            pid = os.fork()
            if pid == 0:  # the child never returns from here
                try:
                    os.close(read_end)
                    _child(fn, request, write_end, tmpdir)
                finally:
                    os._exit(70)
        finally:
            if new_pidns and libc.setns(pidns, CLONE_NEWPID) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the zygote's PID namespace failed")
        os.close(fds.pop())
        _send(out, {"started": pid, "tmpdir": tmpdir})
        lines, deadline = _Lines(read_end), time.monotonic() + timeout
        try:
            hello = lines.next(deadline)
            if hello is not None and "ok" not in hello:
                result = lines.next(deadline)
            else:
                hello, result = {}, hello  # setup failed before the hello
        except TimeoutError:
            killed = "its PID namespace" if new_pidns else "its process group"
            failure = ("timeout", f"no result within the wall-clock limit of {timeout:g} s; "
                                  f"the child and {killed} were killed")
        except Exception as err:  # noqa: BLE001 - whatever the child wrote, it ends in the kill below
            why = str(err) if isinstance(err, _BadLine) else f"{type(err).__name__}: {err}"
            failure = ("crash", f"the child's answer could not be read: {why}"[:300])
    finally:  # every way out: kill, reap, hand folders back, remove the child's folder
        if pid:
            kill_group(pid)  # before reaping, so the pid cannot have been reused
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            uid = hello.get("uid") if isinstance(hello, dict) else None
            lockdown.give_back(writable, uid if isinstance(uid, int) else lockdown.job_uid(pid))
        for fd in fds:
            os.close(fd)
        shutil.rmtree(tmpdir, ignore_errors=True)
    hello = hello or {}
    answer = {"layers": hello.get("layers") or [], "seconds": time.perf_counter() - start}
    if failure is None and isinstance(result, dict) and "ok" in result:
        return {**result, **answer}
    if failure is None:
        failure = _classify_exit(status, timeout)
    return {"ok": False, "kind": failure[0], "reason": failure[1], **answer}


def _classify_exit(status: int, timeout: float) -> tuple[str, str]:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return "timeout", f"the child used up its CPU-time limit (about {timeout:g} s)"
        name = signal.Signals(sig).name
        hint = " (out of memory?)" if sig == signal.SIGKILL else ""
        return "crash", f"the child was killed by {name}{hint} before returning a result"
    code = os.waitstatus_to_exitcode(status)
    if code == 70:
        return "crash", "the sandbox child failed before it could report (setup error)"
    return "crash", f"the child exited with status {code} before returning a result"


# -- the child ------------------------------------------------------------------------------------

def _child(fn, request: dict, out: int, tmpdir: str) -> None:
    """Lock this forked process down in ``tmpdir`` (made by the zygote), then call ``fn``; write
    the hello line and the result line on ``out``."""
    layers = ["process"]
    ppid = os.getppid()  # 0 as PID 1 of a new PID namespace: drop() then asks the result pipe
    os.setsid()
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, out)
    os.closerange(out + 1, 1 << 16)  # the zygote's pipes to the host are gone
    root = os.geteuid() == 0
    timeout, memory_mb = float(request["timeout"]), request.get("memory_mb")
    skip = set(request.get("skip") or ())
    uid = None
    try:
        if os.getpid() == 1:
            layers.append("pidns")
        if root:
            uid = lockdown.job_uid(lockdown.host_pid())  # read before the private /proc hides it
            writable = request.get("writable") or []
            mine = [p for p in writable if lockdown.handed_over(p)]
            layers += lockdown.namespaces(tmpdir, writable, skip)
            uid = lockdown.take_over([tmpdir, *mine], uid)
        os.chdir(tmpdir)
        os.umask(0o077)
        os.environ.clear()
        os.environ.update({"HOME": tmpdir, "TMPDIR": tmpdir, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
        tempfile.tempdir = tmpdir
        layers.append("clean-env")
        lockdown.limits(timeout, memory_mb, lockdown.TMPFS_TOTAL_MB if "private-tmp" in layers else 0)
        layers.append("rlimits")
        if root:
            lockdown.drop(uid, out, ppid)
            layers += ["uid-drop"] + (["uid-per-job"] if uid != lockdown.NOBODY else [])
        layers += [] if "seccomp" in skip else lockdown.seccomp()
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(1)
    except BaseException as err:  # noqa: BLE001 - refuse to run anything half-isolated
        _send(out, {"ok": False, "kind": "crash", "reason": f"sandbox setup failed: {type(err).__name__}: {err}"})
        os._exit(0)
    _send(out, {"layers": layers, "tmpdir": tmpdir, "uid": uid})
    # -- from here on, untrusted code may run --
    try:
        value = fn(*request["args"], **request["kwargs"])
    except BaseException as err:  # noqa: BLE001 - everything becomes a typed answer
        _send(out, _failure(err, memory_mb))
        os._exit(0)
    try:
        _send(out, {"ok": True, "value": value})
    except (TypeError, ValueError) as err:
        _send(out, {"ok": False, "kind": "error",
                    "reason": f"the target returned something that is not JSON: {type(err).__name__}: {err}"})
    os._exit(0)


def _failure(err: BaseException, memory_mb: int | None) -> dict:
    text = (f"{type(err).__name__}: {err}" if str(err) else type(err).__name__)[:4000]
    memory = isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and any(
        s in str(err) for s in ("can't allocate memory", "not enough memory", "DefaultCPUAllocator")))
    if memory:
        return {"ok": False, "kind": "memory",
                "reason": f"out of memory (limit: {memory_mb} MiB above the worker's own): {text}"}
    return {"ok": False, "kind": "error", "reason": text}
