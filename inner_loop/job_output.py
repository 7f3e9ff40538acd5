"""The trusted parent's side of an isolated training job's output: read it as data the job controls.

The job (candidate code ran in it) leaves files in its folder: the policy's weights, its result
line, its own prints. Every one is opened here without following a link or blocking on a FIFO,
checked to be a plain single-link file, read from that one descriptor up to a size cap derived
from the task's model (:func:`read_job_file`), and only then parsed. Loading, the strict
state-dict check and scoring run under a wall-clock :class:`Deadline`. A file that fails any of
this raises :class:`Rejected`, which the runner turns into the candidate's failure with the reason.
The threat model is :mod:`inner_loop.runner`'s docstring.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from pathlib import Path

# what inner_loop.trainer.train_job writes in its folder: the weights, its result, its own prints
WEIGHTS, JOB_RESULT, JOB_LOG = "policy.safetensors", "job.json", "job.log"
MAX_JOB_LOG_BYTES = 1 << 20  # the tail of a job's own prints kept in the run's train.log
HEADER_BYTES = 2**20  # a safetensors header's allowance on top of the tensors' bytes (plus 256 per tensor)


class Rejected(RuntimeError):
    """The job's weights, or the scores they got, cannot be used; ``str()`` is the reason."""


class ScoringTimeout(Rejected):
    """Loading and scoring the job's policy ran past its deadline."""


class Deadline:
    """A wall-clock bound on the trusted side's work on a job's policy, in any thread and without
    signals: :meth:`check` between steps, and :meth:`watch` checks before every module's forward
    of the policy, so scoring stops within one module's forward of the deadline (weights full of
    subnormal floats, say, cannot stretch it further)."""

    def __init__(self, seconds: float):
        self.seconds, self.end = float(seconds), time.monotonic() + float(seconds)

    def check(self, *_):
        if time.monotonic() > self.end:
            raise ScoringTimeout(f"timeout: loading and scoring the policy took over {self.seconds:g} s")

    @contextlib.contextmanager
    def watch(self, model):
        handles = [m.register_forward_pre_hook(self.check) for m in model.modules()]
        try:
            yield
        finally:
            for h in handles:
                h.remove()


def state_bytes(model) -> int:
    """What the job's float32 copy of ``model``'s state may take: each tensor once, at least 4 bytes
    an element, plus a header allowance."""
    seen, total = set(), HEADER_BYTES
    for v in model.state_dict().values():
        if v.data_ptr() not in seen:
            seen.add(v.data_ptr())
            total += v.numel() * max(4, v.element_size()) + 256
    return total


def read_job_file(path: Path, limit: int, tail: bool = False) -> bytes:
    """The bytes of ``path``, a file the job controls: no symlink is followed (O_NOFOLLOW), a FIFO
    or device does not block the open (O_NONBLOCK), only a regular file with one link (not a hard
    link to someone else's file) is read, from the one descriptor, and at most ``limit`` bytes of
    it: a bigger file is refused, or with ``tail`` its last ``limit`` bytes are read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        why = "a symlink, refused" if err.errno == errno.ELOOP else os.strerror(err.errno)
        raise Rejected(f"cannot open {path.name} ({why})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Rejected(f"{path.name} is not a regular file (mode {stat.filemode(st.st_mode)})")
        if st.st_nlink != 1:
            raise Rejected(f"{path.name} has {st.st_nlink} links (a hard link is refused)")
        if tail:
            os.lseek(fd, max(0, st.st_size - limit), os.SEEK_SET)
        elif st.st_size > limit:
            raise Rejected(f"{path.name} is {st.st_size} bytes, over the limit of {limit}")
        chunks, size = [], 0
        while chunk := os.read(fd, min(1 << 24, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                if tail:
                    return b"".join(chunks)[-limit:]
                raise Rejected(f"{path.name} grew over the limit of {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def load_policy(task, job: Path, deadline: Deadline | None = None):
    """The trusted side: the task's own SFT architecture + the job's tensors, strictly. ``job`` is
    the job's folder: nothing in it is trusted (see :func:`_read_weights`)."""
    import torch
    from safetensors.torch import load as load_bytes
    deadline = deadline or Deadline(600.0)
    model = task.load_sft()
    data = read_job_file(job / WEIGHTS, state_bytes(model))  # limit: the SFT model's size
    deadline.check()
    try:
        state = load_bytes(data)
    except Exception as err:  # noqa: BLE001 - not a safetensors file
        raise Rejected(f"not a safetensors file: {str(err)[:200]}") from None
    del data
    deadline.check()
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise Rejected("non-finite weights")
    missing, unexpected = model.load_state_dict(state, strict=False)
    current = model.state_dict()
    loaded = {current[k].data_ptr() for k in state if k in current}
    untied = [k for k in missing if current[k].data_ptr() not in loaded]  # tied copies are fine
    if untied or unexpected:
        raise Rejected(f"weights do not match the SFT model: missing {sorted(untied)[:3]}, "
                       f"unexpected {sorted(unexpected)[:3]}")
    deadline.check()
    return model




def keep_job_log(job: Path, out_dir: str | None) -> None:
    """Append the tail of the isolated job's own prints (untrusted text, read like every job file)
    to ``out_dir/train.log``, where a campaign's and ``disco train --out``'s logs are."""
    if not out_dir:
        return
    for name in (JOB_LOG, "stderr.log"):  # the sandboxed job's; the process job's stderr
        try:
            text = read_job_file(job / name, MAX_JOB_LOG_BYTES, tail=True).decode("utf-8", "replace")
        except Rejected:
            continue  # absent, or not a plain file: nothing the parent will read
        if text:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            with open(Path(out_dir) / "train.log", "a", encoding="utf-8", errors="replace") as log_file:
                log_file.write(f"--- the training job's output ({name}) ---\n{text}\n")


def save_policy(policy, path: Path) -> None:
    """The scored policy's weights (safetensors), so a run leaves something to look at and reuse."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in policy.state_dict().items()}
    save_file(untie(state), str(path))


def untie(state: dict) -> dict:
    """safetensors refuses shared storage (tied embeddings): keep the first name of each tensor."""
    seen, kept = set(), {}
    for k, v in state.items():
        key = (v.data_ptr(), tuple(v.shape), tuple(v.stride()))
        if key not in seen:
            seen.add(key)
            kept[k] = v
    return kept
