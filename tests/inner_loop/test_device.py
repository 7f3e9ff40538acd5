"""Device placement is chosen, not inherited: the task says where it trains and scores, a run may
ask otherwise, and gradient checkpointing on a GPU follows an estimate of the memory the step
needs against the memory free, not the parameter count. CUDA is simulated where the logic needs it
(this suite runs without a GPU); the GPU numbers themselves come from benchmarks/gpu_throughput.py."""

from __future__ import annotations

import types

import pytest
import torch

from inner_loop import train_config
from inner_loop.train_config import TrainConfig, device_defaults, largest_batch, resolve_device, training_memory


@pytest.fixture
def cuda_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


def test_the_embedded_task_stays_on_the_cpu_beside_a_gpu_and_a_recipe_takes_the_gpu(cuda_visible):
    from inner_loop.recipe_base import RecipeTask
    from inner_loop.synthetic import SyntheticTask
    assert SyntheticTask.device == "cpu" and RecipeTask.device == "cuda"
    assert resolve_device("auto", SyntheticTask.device) == "cpu"
    assert resolve_device(None, RecipeTask.device) == "cuda"
    assert resolve_device("cpu", RecipeTask.device) == "cpu"         # a run may ask otherwise
    assert resolve_device("cuda", SyntheticTask.device) == "cuda"


def test_without_a_gpu_a_recipe_falls_back_and_asking_for_cuda_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", "cuda") == "cpu"
    with pytest.raises(ValueError, match="no CUDA device is visible"):
        resolve_device("cuda", "cpu")
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu", "cpu")


def test_a_cpu_run_trains_on_the_cpu_even_when_cuda_is_visible(cuda_visible):
    from inner_loop.trainer import dpo_config
    model = torch.nn.Linear(4, 4)
    cfg = TrainConfig(device="cpu").resolved(model)
    assert (cfg.device, cfg.precision, cfg.gradient_checkpointing) == ("cpu", "fp32", False)
    assert dpo_config(cfg, "/tmp/unused").use_cpu
    assert TrainConfig().resolved(model).device == "cpu"             # auto: where the model is


def gemma_2b_like(n_params: float = 2.51e9):
    """What training_memory reads of a model: its config and its parameter count (no weights)."""
    config = types.SimpleNamespace(hidden_size=2048, num_hidden_layers=18, vocab_size=256_000)
    return types.SimpleNamespace(config=config, parameters=lambda: iter([FakeParam(n_params)]))


class FakeParam:
    def __init__(self, n):
        self.n = int(n)

    def numel(self):
        return self.n


def test_checkpointing_follows_the_memory_estimate_not_the_parameter_count(cuda_visible):
    model = gemma_2b_like()
    need = training_memory(model, precision="bf16", batch_pairs=4, seq_len=1024, checkpointing=False)
    assert 40e9 < need < 80e9            # 2.5B params x 16 B of weights, grads and AdamW + activations
    saved = training_memory(model, precision="bf16", batch_pairs=4, seq_len=1024, checkpointing=True)
    assert saved < need
    # an H200 with 20 GB in use: no checkpointing at batch 4 (the 30,400 vs 25,284 tokens/s)
    assert device_defaults(model, "cuda", batch_pairs=4, seq_len=1024, free_bytes=121e9) == ("bf16", False)
    # a 24 GB card: it must checkpoint, and more so at a larger batch
    assert device_defaults(model, "cuda", batch_pairs=4, seq_len=1024, free_bytes=60e9) == ("bf16", True)
    assert device_defaults(model, "cpu") == ("fp32", False)


def test_the_largest_batch_that_fits(cuda_visible):
    model = gemma_2b_like()
    batch, checkpointing = largest_batch(model, precision="bf16", seq_len=1024, free_bytes=121e9)
    assert not checkpointing and batch >= 8
    assert training_memory(model, precision="bf16", batch_pairs=batch, seq_len=1024, checkpointing=False) \
        <= train_config.MEMORY_HEADROOM * 121e9
    assert training_memory(model, precision="bf16", batch_pairs=2 * batch, seq_len=1024, checkpointing=False) \
        > train_config.MEMORY_HEADROOM * 121e9
    assert largest_batch(model, precision="bf16", seq_len=1024, free_bytes=54e9) == (1, True)  # only with it
    assert largest_batch(model, precision="bf16", seq_len=1024, free_bytes=10e9) is None


def test_disco_train_device_cuda_without_a_gpu_is_one_line(monkeypatch, capsys):
    from discovery.cli import main
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--objective", "dpo", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "disco: error: --device cuda: no CUDA device is visible (use --device cpu or auto)"
