"""``DIR/campaign.lock``: one process runs a campaign at a time, and ``disco status`` can tell a
running campaign from a stopped one.

:func:`acquire` takes an exclusive ``flock`` on the file and writes the holder's pid into it (a
second ``disco resume`` of a running campaign would train its rows twice); the OS drops the lock
when the holder dies, even by ``kill -9``. :func:`release` removes the file while still holding it.
:func:`lock_state` probes it without creating it: (held by a live process, the pid written there).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from discovery.archive import ArchiveError

LOCK = "campaign.lock"


def acquire(directory: Path):
    """Hold ``DIR/campaign.lock`` for the campaign's lifetime: a second ``disco resume`` of a running
    campaign would train its rows twice. The OS drops the lock when the holder dies (even by -9);
    the holder removes the file when it stops (:func:`release`), so a file left behind with no
    holder is a crashed campaign's. The file holds the holder's pid (see :func:`lock_state`)."""
    import fcntl
    path = directory / LOCK
    for attempt in range(20):  # a `disco status` probing the lock holds it for a moment
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            if attempt < 5:
                time.sleep(0.05)
                continue
            raise ArchiveError(f"{directory} is being run by another process (pid {holder}); "
                               "wait for it or stop it before resuming") from None
        try:  # the file we locked may have been removed by a holder that was stopping: lock the new one
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()
    else:
        raise ArchiveError(f"could not lock {path}: it keeps being replaced")
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def release(handle, directory: Path) -> None:
    """Remove ``DIR/campaign.lock`` (still holding it, so no one else's), then let it go."""
    try:
        (directory / LOCK).unlink(missing_ok=True)
    finally:
        handle.close()


def lock_state(directory) -> tuple[bool, str | None]:
    """(whether a live process holds ``DIR/campaign.lock``, the pid written in it). Probing takes the
    lock for a moment when no one holds it (:func:`acquire` waits that out); it never creates the file."""
    import fcntl
    try:
        handle = open(Path(directory) / LOCK)
    except FileNotFoundError:
        return False, None
    with handle:
        pid = handle.read().strip() or None
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True, pid
        return False, pid
