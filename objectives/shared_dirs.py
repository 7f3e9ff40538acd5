"""Folders the host shares with sandbox jobs (:mod:`objectives.sandbox`), with an optional size quota.

:func:`shared_dir` makes a fresh folder under /tmp whose name carries the creating process's pid;
with ``quota_mb`` (and root, and mounts allowed) a tmpfs of that size is mounted on it in the
host's mount namespace, so a job cannot fill the host's disk through it (RLIMIT_FSIZE only caps
one file). :func:`remove_shared` unmounts and removes one; at exit this process's own leftovers
are removed, and at first use stale quota mounts whose creating process is dead are swept.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import re
import shutil
import tempfile
import threading

from objectives.lockdown import MS_NODEV, MS_NOSUID, _mount, libc, mounts

SHARED_ROOT = "/tmp"  # where the host keeps folders a child must see (visible there, read-only)
MNT_DETACH = 2
# prefix, creator pid, mkdtemp's eight random characters
_NAME = re.compile(r"^(?P<prefix>.*?)(?P<pid>\d+)-[a-z0-9_]{8}$")
_OWN: set[str] = set()
_LOCK = threading.Lock()
_SWEPT = False
log = logging.getLogger(__name__)


def shared_dir(prefix: str, writable: bool = False, quota_mb: int | None = None) -> str:
    """A fresh folder under :data:`SHARED_ROOT` that a child can see (and write, if ``writable``).

    Made there whatever ``$TMPDIR`` says: a folder under /var/tmp or /dev/shm is covered by the
    child's private tmpfs, one under /root by its private /root, one inside a 0700 folder is closed
    to the child's uid. The path is absolute and symlink-free, so it names the same folder in the
    child (which runs in its own folder). Mode 0777 when ``writable`` (the sandbox then hands it to
    the one job that gets it as ``writable=``: its uid, mode 0700; back to root, 0700, afterwards),
    else 0755. With ``quota_mb``, a tmpfs of that many MiB (RAM) is mounted on it when this
    process may mount; :func:`quota_of` says whether it was. Remove it with :func:`remove_shared`;
    what is left at this process's exit is removed then.
    """
    sweep_once()
    path = os.path.realpath(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=SHARED_ROOT))
    mode = 0o777 if writable else 0o755
    os.chmod(path, mode)
    with _LOCK:
        _OWN.add(path)
    if quota_mb is not None:
        if int(quota_mb) <= 0:
            raise ValueError(f"quota_mb must be positive, got {quota_mb!r}")
        try:
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={int(quota_mb)}m,mode={mode:04o}")
        except OSError as err:
            log.warning("no %d MiB quota on %s (%s): the folder has no size limit", quota_mb, path, err)
    return path


def quota_of(path: str) -> int | None:
    """The size in MiB of the tmpfs mounted on ``path`` (its quota), or None if none is."""
    real = os.path.realpath(path)
    for point, _, fstype, options in reversed(mounts()):
        if point == real:
            if fstype != "tmpfs":
                return None
            size = dict(o.partition("=")[::2] for o in options.split(",")).get("size", "")
            return int(size[:-1]) // 1024 if size.endswith("k") else None
    return None


def remove_shared(path: str) -> None:
    """Unmount (if a quota was mounted) and remove a folder :func:`shared_dir` made; safe to call
    twice or on a folder already gone. Refuses (ValueError) anything not directly under
    :data:`SHARED_ROOT`."""
    real = os.path.realpath(path)
    if os.path.dirname(real) != os.path.realpath(SHARED_ROOT) or not _NAME.match(os.path.basename(real)):
        raise ValueError(f"{path!r} is not a folder made by shared_dir()")
    for _ in range(8):  # stacked mounts: one at a time
        if not any(point == real for point, *_ in mounts()):
            break
        if libc.umount2(real.encode(), 0) != 0 and libc.umount2(real.encode(), MNT_DETACH) != 0:
            log.warning("could not unmount %s: %s", real, os.strerror(ctypes.get_errno()))
            break
    shutil.rmtree(real, ignore_errors=True)
    with _LOCK:
        _OWN.discard(real)


def _remove_own() -> None:
    """At exit: this process's shared folders not removed yet (never a parent's, after a fork)."""
    with _LOCK:
        own = list(_OWN)
    for path in own:
        match = _NAME.match(os.path.basename(path))
        if match and int(match["pid"]) == os.getpid():
            try:
                remove_shared(path)
            except (OSError, ValueError):
                pass


def sweep_stale() -> list[str]:
    """Unmount and remove tmpfs quota folders under :data:`SHARED_ROOT` named ``disco-*``, and
    sandbox children's folders (``disco-sbx-*``), whose creating process is dead (a host or zygote
    killed before it could clean up); returns them. A live or reused pid keeps its folder."""
    root = os.path.realpath(SHARED_ROOT)
    stale = [point for point, _, fstype, _ in mounts() if fstype == "tmpfs" and os.path.dirname(point) == root]
    try:
        stale += [os.path.join(root, n) for n in os.listdir(root) if n.startswith("disco-sbx-")]
    except OSError:
        pass
    removed = []
    for path in dict.fromkeys(stale):
        name = os.path.basename(path)
        match = _NAME.match(name)
        if not name.startswith("disco-") or not match or _alive(int(match["pid"])):
            continue
        try:
            remove_shared(path)
            removed.append(path)
        except (OSError, ValueError):
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def sweep_once() -> None:
    """:func:`sweep_stale`, once per process."""
    global _SWEPT
    if not _SWEPT:
        _SWEPT = True
        try:
            sweep_stale()
        except OSError:
            pass


atexit.register(_remove_own)
