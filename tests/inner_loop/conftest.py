"""Fixtures: a tiny synthetic task, built once per test session into a temporary cache.

``tiny_synthetic_config`` is small enough to build in a few seconds on one CPU core, and still big
enough that the SFT model learns the grammar and its samples vary in sentiment.
"""

from __future__ import annotations

import pytest

TINY_SYNTHETIC = dict(corpus_size=1500, n_embd=32, n_head=2, sft_steps=150, n_train_pairs=300,
                      n_heldout_prompts=32, max_completion_len=16, data_seed=0)


@pytest.fixture(scope="session")
def tiny_synthetic_config():
    from inner_loop.synthetic import SyntheticConfig

    return SyntheticConfig(**TINY_SYNTHETIC)


@pytest.fixture(scope="session")
def tiny_synthetic_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("disco-cache")


@pytest.fixture(scope="session")
def tiny_synthetic_task(tiny_synthetic_config, tiny_synthetic_cache):
    """The built tiny task (the call that built it: ``loaded_from_cache`` is False)."""
    from inner_loop import synthetic

    return synthetic.build(tiny_synthetic_config, cache_dir=tiny_synthetic_cache, progress=False)
