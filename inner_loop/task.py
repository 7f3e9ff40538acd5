"""What the inner loop needs from a task: the abstract :class:`Task`.

A task supplies the reference policy (an SFT checkpoint), its tokenizer and pre-tokenised
preference pairs, its own training defaults, and a way to score a trained policy. The registry of
tasks is :mod:`inner_loop.tasks`; the tasks are :mod:`inner_loop.synthetic` (scored by its gold
reward) and :mod:`inner_loop.recipe_task` (a chat model kept for a judge).
"""

from __future__ import annotations

import abc


class Task(abc.ABC):
    """A task as the runner (:func:`inner_loop.runner.run_candidate`) and the trainer see it.

    Data every task sets: ``name``; ``default_beta`` (the KL strength when a run names none);
    ``train_defaults`` (:class:`~inner_loop.train_config.TrainConfig` fields, beta and seed aside,
    that a run's overrides replace); ``max_completion_len``; ``config`` (a frozen dataclass);
    ``path`` (a key naming the task, its cache directory for a built one); ``tokenizer`` (a
    transformers tokenizer with pad/eos/bos); ``sft_path`` (the SFT model's folder, which an
    isolated job copies); ``train_pairs`` (a ``datasets.Dataset``, columns documented by the task).
    """

    name: str
    default_beta: float
    train_defaults: dict
    max_completion_len: int
    keeps_policy: bool = False  # score() saves the policy itself; else the runner saves its weights
    device: str = "cpu"         # where the task trains and scores unless a run asks (train_config.resolve_device):
                                # the embedded tasks' small models belong on the CPU even beside a GPU

    @abc.abstractmethod
    def load_sft(self):
        """A fresh copy of the SFT model; the reference policy and the policy's start."""

    @abc.abstractmethod
    def score(self, policy, *, seed: int, out_dir: str | None, losses: list[float], **eval_kwargs) -> dict:
        """The metrics of ``policy`` trained on this task (JSON-able; the runner fails a run whose
        number metrics are not finite). ``seed``: the run's seed; ``out_dir``: the run's folder,
        or None; ``losses``: the training job's loss log (its claim, for a summary only)."""
