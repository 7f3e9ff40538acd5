"""Tasks built on this machine into a cache folder: what the embedded ``synthetic`` and
``keypoints`` tasks share.

A build writes, once per config, ``<cache_dir>/<name>-<config_hash>/`` (``cache_dir``:
``$DISCO_CACHE`` or ``~/.cache/disco``): ``config.json``, ``tokenizer/``, ``sft/`` (a GPT-2 from a
config), ``train_pairs/`` (a ``datasets`` folder with token ids and reference log-probs),
``heldout_prompts.json`` and ``build_info.json``, written last. The build goes to a temporary
sibling renamed into place (:func:`build_cached`), so the folder appears complete or not at all,
and a builder that loses a race to another one loads the winner's. :class:`LocalTask` loads such a
folder; each task adds its gold reward and says which config class and training defaults it has.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch

from inner_loop.task import Task


def default_cache_dir() -> Path:
    return Path(os.environ.get("DISCO_CACHE") or Path.home() / ".cache" / "disco")


@contextlib.contextmanager
def quiet_libraries(quiet: bool = True):
    """Silence the datasets / transformers progress bars and warnings for the block (``--quiet``)."""
    import datasets
    from transformers.utils import logging as tlog

    if not quiet:
        yield
        return
    bars = (datasets.are_progress_bars_disabled(), tlog.is_progress_bar_enabled(), tlog.get_verbosity())
    datasets.disable_progress_bars()
    tlog.disable_progress_bar()
    tlog.set_verbosity_error()
    try:
        yield
    finally:
        if not bars[0]:
            datasets.enable_progress_bars()
        if bars[1]:
            tlog.enable_progress_bar()
        tlog.set_verbosity(bars[2])


class LocalTask(Task):
    """A built task loaded from its cache folder (see the module docstring). Subclasses set
    ``name``, ``config_class`` (the frozen config dataclass) and ``TRAIN_DEFAULTS``, and implement
    ``gold_reward``."""

    config_class: type
    TRAIN_DEFAULTS: dict

    def __init__(self, path: Path, loaded_from_cache: bool):
        from datasets import load_from_disk
        from transformers import PreTrainedTokenizerFast

        self.path = Path(path)
        self.loaded_from_cache = loaded_from_cache  # False only for the call that built it
        raw = json.loads((self.path / "config.json").read_text())
        raw.pop("build_version", None)
        self.config = self.config_class(**self.upgrade_config(raw))
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(str(self.path / "tokenizer"))
        self.sft_path = self.path / "sft"
        self.train_pairs = load_from_disk(str(self.path / "train_pairs"))
        self.heldout_prompts: list[list[int]] = json.loads((self.path / "heldout_prompts.json").read_text())
        self.build_info: dict = json.loads((self.path / "build_info.json").read_text())
        self.default_beta = self.config.beta
        self.train_defaults = dict(self.TRAIN_DEFAULTS)
        self.max_completion_len = self.config.max_completion_len

    @staticmethod
    def upgrade_config(raw: dict) -> dict:
        """The config fields of a cache written by an older build, renamed to today's."""
        return raw

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    def load_sft(self):
        """A fresh float32 GPT2LMHeadModel from ``sft_path``, in train mode (dropout is 0 anyway)."""
        from transformers import GPT2LMHeadModel

        with quiet_libraries(True):
            model = GPT2LMHeadModel.from_pretrained(str(self.sft_path), dtype=torch.float32)
        return model.train()

    def score(self, policy, *, seed: int, out_dir: str | None = None, losses=(), **eval_kwargs) -> dict:
        """The gold-reward metrics of ``policy`` on the held-out prompts
        (:func:`inner_loop.metrics.evaluate_policy`; ``eval_kwargs`` go to it, its ``seed`` is the
        run's unless they name one)."""
        from inner_loop.metrics import evaluate_policy

        policy.eval()
        return evaluate_policy(policy, self, **{"seed": seed, **eval_kwargs})


def build_cached(task_class: type, config, build_into: Callable, cache_dir: str | os.PathLike | None = None,
                 progress: bool = True, threads: int | None = 1):
    """``task_class`` loaded from ``<cache_dir>/<name>-<config_hash>/``, built first by
    ``build_into(folder, config, progress=)`` when it is not there. ``threads``: torch intra-op
    threads during a build (1 is fastest for these model sizes on a shared CPU; None leaves the
    setting alone)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = root / f"{task_class.name}-{config.config_hash()}"
    if (final / "build_info.json").exists():
        return task_class(final, loaded_from_cache=True)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.building-", dir=root))
    try:
        from inner_loop import sampling

        with sampling.torch_threads(threads), quiet_libraries(not progress):
            build_into(tmp, config, progress=progress)
        try:
            os.rename(tmp, final)  # atomic: the cache directory appears complete or not at all
        except OSError:
            if not (final / "build_info.json").exists():  # not a lost race with another builder
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return task_class(final, loaded_from_cache=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return task_class(final, loaded_from_cache=False)
