"""The child side of the sandbox: the layers a forked child puts between itself and the host.

Called by :func:`objectives.sandbox._child` as root, before it drops to its own uid: new network,
IPC, UTS and mount namespaces with small private temporary folders and a read-only view of the
rest (:func:`namespaces`), a uid of its own, to which its folders are handed (:func:`job_uid`,
:func:`take_over`), resource limits that count the private tmpfs against the memory budget
(:func:`limits`), the uid drop with the parent-death signal set again after it (:func:`drop`) and a
seccomp deny-list (:func:`seccomp`). Each says which layers it set up, so what ran is reported,
never assumed. The threat model is in :mod:`objectives.sandbox`.
"""

from __future__ import annotations

import ctypes
import errno
import math
import os
import resource
import select
import signal
import stat
import sys
from pathlib import Path

NOBODY = 65534  # uid and gid of the child where a uid of its own cannot be had
JOB_UID_BASE = 2_000_000_000  # a child's own uid and gid: this + its pid on the host (far above /etc/passwd)
REPO = str(Path(__file__).resolve().parents[1])
MAX_OPEN_FILES = 256
MAX_FILE_BYTES = 64 << 20  # RLIMIT_FSIZE
MAX_PROCESSES = 32  # RLIMIT_NPROC for the child's uid (threads count too)
PRIVATE_TMP = ("/var/tmp", "/dev/shm", "/run/lock")  # fresh tmpfs; /tmp itself becomes read-only
TMPDIR_MB, SMALL_TMPFS_MB = 64, 8  # the child's own folder; each of PRIVATE_TMP
TMPFS_TOTAL_MB = TMPDIR_MB + SMALL_TMPFS_MB * len(PRIVATE_TMP)  # RAM, taken out of memory_mb
MIN_HEAP_MB = 64  # memory_mb must leave at least this much address space after the tmpfs
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWUSER = 0x20000000, 0x40000000, 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 0x4000, 1 << 18
PR_SET_PDEATHSIG, PR_GET_PDEATHSIG = 1, 2
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
    tmpfs (:data:`TMPDIR_MB`), /var/tmp, /dev/shm and /run/lock are fresh small tmpfs
    (:data:`SMALL_TMPFS_MB` each), anything mounted under /tmp (other jobs' quota folders) is
    read-only as well, /root is a tmpfs holding only the Python installation, read-only, and /proc
    shows only the sandbox. Any other folder that the child's uid could not pass through on the way to the Python installation or this project (a
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
    for point, options in submounts("/tmp"):  # e.g. other jobs' quota folders: read-only too
        keep = sum(bit for name, bit in _KEPT_FLAGS.items() if name in options.split(","))
        _mount("none", point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags | keep)
    _mount("tmpfs", tmpdir, "tmpfs", flags, f"size={TMPDIR_MB}m,mode=0700")
    for place in PRIVATE_TMP:
        if os.path.isdir(place):
            _mount("tmpfs", place, "tmpfs", flags, f"size={SMALL_TMPFS_MB}m,mode=1777")
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


def limits(timeout: float, memory_mb: int | None, reserved_mb: int = 0) -> None:
    """Resource limits; the address space is ``memory_mb`` minus ``reserved_mb`` (the private
    tmpfs, which hold RAM outside RLIMIT_AS) on top of what the child has mapped already."""
    def limit(which, value):
        resource.setrlimit(which, (value, value))
    if memory_mb:
        heap_mb = int(memory_mb) - reserved_mb
        if heap_mb < MIN_HEAP_MB:
            raise ValueError(f"memory_mb={memory_mb} leaves {heap_mb} MiB after {reserved_mb} MiB of tmpfs")
        limit(resource.RLIMIT_AS, _vm_size() + heap_mb * (1 << 20))
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


# kept on a read-only remount (in a user namespace they may be locked, and dropping one fails)
_KEPT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": 1 << 10,
               "nodiratime": 1 << 11, "relatime": 1 << 21}


def mounts() -> list[tuple[str, str, str, str]]:
    """(mount point, per-mount options, file system type, super options) of this mount namespace."""
    found = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            fields = line.split()
            sep = fields.index("-")
            found.append((_unescape(fields[4]), fields[5], fields[sep + 1], fields[sep + 3]))
    return found


def submounts(root: str) -> list[tuple[str, str]]:
    """(mount point, per-mount options) of every mount strictly under ``root``."""
    return [(point, options) for point, options, _, _ in mounts() if point.startswith(root.rstrip("/") + "/")]


def _unescape(path: str) -> str:
    return path.encode().decode("unicode_escape").encode("latin-1").decode(errors="surrogateescape") \
        if "\\" in path else path


# -- a uid of its own -----------------------------------------------------------------------------

def host_pid() -> int | None:
    """This process's pid as the host's /proc counts it (NSpid's first field), read before the
    child's own /proc replaces it; unique among live processes, so it makes a unique uid."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("NSpid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def job_uid(pid: int | None) -> int:
    """The uid (and gid) for the sandbox child with host pid ``pid``: :data:`JOB_UID_BASE` + pid,
    below 2**31 - 1 (some tools read uids as signed) and above every uid in /etc/passwd; else
    :data:`NOBODY`."""
    if pid is None or pid <= 0:
        return NOBODY
    uid = JOB_UID_BASE + pid
    return uid if uid < 2**31 - 1 and uid > _passwd_max() else NOBODY


_PASSWD_MAX: int | None = None


def _passwd_max() -> int:
    """The highest uid or gid in /etc/passwd and /etc/group (read once; the zygote warms it)."""
    global _PASSWD_MAX
    if _PASSWD_MAX is None:
        top = NOBODY
        for path in ("/etc/passwd", "/etc/group"):
            try:
                with open(path) as f:
                    for line in f:
                        parts = line.split(":")
                        if len(parts) > 2 and parts[2].isdigit():
                            top = max(top, int(parts[2]))
            except OSError:
                pass
        _PASSWD_MAX = top
    return _PASSWD_MAX


def handed_over(path: str) -> bool:
    """Whether a ``writable=`` folder is one made to be handed to a job: mode exactly 0777 (no
    sticky bit, so never /tmp or /dev/shm) and owned by this (root) process, as
    :func:`objectives.shared_dirs.shared_dir` makes it. Others (e.g. a 0755 inputs folder) stay as
    they are."""
    st = os.lstat(path)
    return stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o777 and st.st_uid == os.geteuid()


def take_over(paths: list[str], uid: int) -> int:
    """Hand ``paths`` (the child's own folder and the writable folders made for jobs) to ``uid``,
    mode 0700, so no other job can enter them; returns the uid used: :data:`NOBODY` where
    ``uid`` does not exist in this user namespace (chown fails with EINVAL)."""
    for path in paths:
        try:
            os.chown(path, uid, uid, follow_symlinks=False)
        except OSError as err:
            if err.errno != errno.EINVAL or uid == NOBODY:
                raise
            return take_over(paths, NOBODY)
        os.chmod(path, 0o700)
    return uid


def give_back(paths: list[str], uid: int) -> None:
    """In the zygote, once the child is gone: folders it was handed return to root, mode 0700, so
    a later job that gets the same uid (a reused pid) cannot enter them; root still reads them."""
    if os.geteuid() != 0 or uid == 0:
        return
    for path in paths:
        try:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == uid:
                os.chown(path, os.geteuid(), os.getegid(), follow_symlinks=False)
                os.chmod(path, 0o700)
        except OSError:
            pass


def drop(uid: int, out: int, parent: int) -> None:
    """Become ``uid``/``uid`` with no groups, set the parent-death signal again (changing
    credentials clears it), then make sure the parent did not die before it was set: the write
    end ``out`` of the result pipe reports POLLERR once its only reader, the zygote, is gone, and
    (outside a PID namespace) ``getppid()`` changes from ``parent``."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (uid, uid, uid):
        raise OSError("uid drop did not take")
    _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    poller = select.poll()
    poller.register(out, 0)
    if poller.poll(0) or os.getppid() != parent:
        os._exit(0)  # nobody is waiting for the answer
