"""The child side of the sandbox: the layers a forked child puts between itself and the host.

Called by :func:`objectives.sandbox._child` as root, before it drops to uid 65534: new network,
IPC, UTS and mount namespaces with private temporary folders and a read-only view of the rest
(:func:`namespaces`), resource limits (:func:`limits`) and a seccomp deny-list (:func:`seccomp`).
Each returns the names of the layers it set up, so what ran is reported, never assumed. The threat
model is in :mod:`objectives.sandbox`.
"""

from __future__ import annotations

import ctypes
import math
import os
import resource
import stat
import sys
from pathlib import Path

NOBODY = 65534  # uid and gid of the child
REPO = str(Path(__file__).resolve().parents[1])
MAX_OPEN_FILES = 256
MAX_FILE_BYTES = 64 << 20  # RLIMIT_FSIZE
MAX_PROCESSES = 32  # RLIMIT_NPROC for uid 65534 (threads count too)
PRIVATE_TMP = ("/var/tmp", "/dev/shm", "/run/lock")  # fresh tmpfs; /tmp itself becomes read-only
TMPFS_MB = 256  # size of each private tmpfs
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWUSER = 0x20000000, 0x40000000, 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 0x4000, 1 << 18
PR_SET_PDEATHSIG = 1
libc = ctypes.CDLL(None, use_errno=True)

DENIED_SYSCALLS = (
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4", "execve", "execveat",
    "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "pivot_root", "chroot",
    "unshare", "setns", "keyctl", "add_key", "request_key", "bpf", "perf_event_open",
    "userfaultfd", "init_module", "finit_module", "delete_module", "kexec_load", "reboot",
    "swapon", "swapoff", "io_uring_setup", "open_by_handle_at", "name_to_handle_at")


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype, flags, data=None) -> None:
    enc = (lambda s: s.encode() if isinstance(s, str) else s)
    _check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def namespaces(tmpdir: str, writable: list[str], skip: set[str]) -> list[str]:
    """New network/IPC/UTS/mount namespaces, then the mounts; returns the layers that were set up.

    In the mount namespace the host's /tmp stays visible but read-only (inputs other code left
    there, e.g. the inner loop's, remain readable), the child's own ``tmpdir`` becomes a private
    tmpfs, /var/tmp, /dev/shm and /run/lock are fresh tmpfs, /root is a tmpfs holding only the
    Python installation, read-only, and /proc shows only the sandbox. Any other folder that uid
    65534 could not pass through on the way to the Python installation or this project (a
    checkout under ``mktemp -d``, mode 0700) is covered the same way: a tmpfs holding only those
    paths, read-only, so lazy imports after the uid drop work. A mount that fails raises: the
    child then refuses to run rather than run half-isolated.
    """
    got = []
    if "netns" not in skip and libc.unshare(CLONE_NEWNET) == 0:
        got.append("netns")
    if "ipcns" not in skip and libc.unshare(CLONE_NEWIPC | CLONE_NEWUTS) == 0:
        got += ["ipcns", "utsns"]
    if "mountns" in skip or libc.unshare(CLONE_NEWNS) != 0:
        return got
    _mount("none", "/", None, MS_REC | MS_PRIVATE)
    # opened before the read-only views and tmpfs hide them: code under closed folders, writable dirs
    covers = _closed_covers(_code_dirs())
    handles = {cover: [(os.open(p, os.O_PATH | os.O_DIRECTORY), p) for p in paths]
               for cover, paths in covers.items()}
    shared = [(os.open(p, os.O_PATH | os.O_DIRECTORY), p) for p in writable]
    flags = MS_NOSUID | MS_NODEV
    _mount("/tmp", "/tmp", None, MS_BIND | MS_REC)
    _mount("none", "/tmp", None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
    _mount("tmpfs", tmpdir, "tmpfs", flags, f"size={TMPFS_MB}m,mode=0700")
    for place in PRIVATE_TMP:
        if os.path.isdir(place):
            _mount("tmpfs", place, "tmpfs", flags, f"size={TMPFS_MB}m,mode=1777")
    got.append("private-tmp")
    for cover, opened in handles.items():
        _mount("tmpfs", cover, "tmpfs", flags, "size=1m,mode=0755")
        for fd, path in opened:
            os.makedirs(path, mode=0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            _mount("none", path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
            os.close(fd)
        got.append("private-root" if cover == "/root" else "private-ancestors")
    for fd, path in shared:  # on top of the read-only views: these stay writable
        if not os.path.isdir(path):  # its folder was covered above: make the mount point
            os.makedirs(path, mode=0o755, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        _mount("none", path, None, MS_REMOUNT | MS_BIND | flags)
        os.close(fd)
    if os.getpid() == 1:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        got.append("private-proc")
    return got


def _code_dirs() -> list[str]:
    """The Python installation, the sys.path entries and this project: what the child imports from."""
    found: list[str] = []
    for p in [sys.base_prefix, sys.prefix, *sys.path, REPO]:
        p = os.path.realpath(p) if p else ""
        if os.path.isdir(p) and p != "/" and not any(p == q or p.startswith(q + "/") for q in found):
            found = [q for q in found if not q.startswith(p + "/")] + [p]
    return found


def _closed_covers(paths: list[str]) -> dict[str, list[str]]:
    """{folder to cover with a tmpfs: the paths to bind back under it}. /root is always covered
    (its contents stay hidden); elsewhere the highest ancestor that others may not pass through."""
    covers: dict[str, list[str]] = {"/root": []} if os.path.isdir("/root") else {}
    for p in paths:
        parts = p.strip("/").split("/")
        ancestors = ["/" + "/".join(parts[:i]) for i in range(1, len(parts))]
        closed = next((a for a in ancestors if a == "/root" or not os.stat(a).st_mode & stat.S_IXOTH), None)
        if closed is not None:
            covers.setdefault(closed, []).append(p)
    for c in list(covers):  # a cover inside another cover is bound back with it
        if any(c != o and c.startswith(o + "/") for o in covers):
            del covers[c]
    return {c: [p for p in paths if p.startswith(c + "/")] for c in covers}


def limits(timeout: float, memory_mb: int | None) -> None:
    def limit(which, value):
        resource.setrlimit(which, (value, value))
    if memory_mb:
        limit(resource.RLIMIT_AS, _vm_size() + int(memory_mb) * (1 << 20))
    cpu = int(math.ceil(timeout)) * max(1, os.cpu_count() or 1) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    limit(resource.RLIMIT_NPROC, MAX_PROCESSES)
    limit(resource.RLIMIT_FSIZE, MAX_FILE_BYTES)
    limit(resource.RLIMIT_NOFILE, MAX_OPEN_FILES)
    limit(resource.RLIMIT_CORE, 0)


def _vm_size() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmSize in /proc/self/status")


def seccomp() -> list[str]:
    """An optional layer: without pyseccomp/libseccomp, or where filters cannot load, none."""
    try:
        import pyseccomp
        flt = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    except (ImportError, OSError, AttributeError):
        return []
    for name in DENIED_SYSCALLS:
        try:
            flt.add_rule(pyseccomp.ERRNO(1), name)  # EPERM
        except (OSError, ValueError, RuntimeError):
            pass  # a syscall this architecture does not have
    # no new user namespace through clone(); clone3's flags are out of a filter's reach, so
    # ENOSYS makes glibc fall back to clone()
    flt.add_rule(pyseccomp.ERRNO(1), "clone",
                 pyseccomp.Arg(0, pyseccomp.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
    flt.add_rule(pyseccomp.ERRNO(38), "clone3")  # ENOSYS
    try:
        flt.load()  # also sets no_new_privs (libseccomp's default)
    except OSError:
        return []
    return ["seccomp", "no-new-privs"]
