"""Recipe tasks through run_candidate: a registry objective trains in this process, source code in
the sandbox (the runner's auto policy), and both keep a from_pretrained-loadable policy in out_dir."""

from __future__ import annotations

import json

import pytest
import torch

from inner_loop.runner import run_candidate
from inner_loop.tasks import TASKS, get_task, task_defaults
from tests.inner_loop.test_recipes import make_tiny_gemma

DPO_SOURCE = "def f(rho, beta):\n    return -F.logsigmoid(beta * rho)\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_gemma(tmp_path_factory.mktemp("recipe-task"))


def _train(objective, tiny, out, isolation="auto"):
    model, data = tiny
    return run_candidate(objective, task="recipe:zephyr-gemma", seed=0, out_dir=str(out), isolation=isolation,
                         model=str(model), dataset=str(data), max_steps=3, grad_accum=1, learning_rate=1e-3)


def _moved(model_dir, start_dir) -> list[str]:
    from transformers import AutoModelForCausalLM
    trained = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()
    start = AutoModelForCausalLM.from_pretrained(start_dir, dtype=torch.float32).state_dict()
    return [k for k, v in trained.items() if not torch.allclose(v, start[k])]


def test_every_recipe_is_a_task_and_its_beta_needs_no_model():
    assert {"recipe:zephyr-gemma", "recipe:gemma-2b"} <= set(TASKS)
    task = get_task("recipe:zephyr-gemma", model="/nowhere", dataset="/nowhere.jsonl")
    assert task.default_beta == 0.05 and task.train_defaults["learning_rate"] == 5e-7
    assert "seed" not in task.train_defaults
    defaults = task_defaults("recipe:zephyr-gemma", {"model": "/nowhere", "learning_rate": 1.0})
    assert (defaults.beta, defaults.train) == (task.default_beta, task.train_defaults)
    assert task_defaults("recipe:zephyr-gemma", {"beta": 0.2}).beta == 0.2
    with pytest.raises(KeyError, match="did you mean"):
        get_task("recipe:zephyr-gema")
    with pytest.raises(TypeError, match="unknown recipe field"):
        get_task("recipe:zephyr-gemma", colour="blue")


def test_registry_objective_trains_in_process_and_keeps_the_policy(tiny, tmp_path):
    result = _train("lrml", tiny, tmp_path / "seed-0")
    assert result.status == "done", result.reason
    assert result.config["isolation"] == "none" and result.steps == 3 and len(result.losses) == 3
    m = result.metrics
    assert m["model_dir"] == str((tmp_path / "seed-0" / "model").resolve())
    assert m["train_loss_first"] == result.losses[0] and m["train_loss_last"] == result.losses[-1]
    assert result.config["task_config"]["model"] == str(tiny[0])
    assert result.config["train"]["learning_rate"] == 1e-3 and result.config["train"]["precision"] == "bf16"
    saved = json.loads((tmp_path / "seed-0" / "result.json").read_text())
    assert saved["metrics"]["model_dir"] == m["model_dir"]
    assert _moved(m["model_dir"], tiny[0]), "training changed no weights"
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(m["model_dir"])
    assert "<|assistant|>" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                                      add_generation_prompt=True)


def test_source_code_trains_isolated_and_the_parent_saves_the_recipe_model(tiny, tmp_path):
    result = _train(DPO_SOURCE, tiny, tmp_path / "seed-0")
    assert result.status == "done", result.reason
    assert result.config["isolation"] in ("sandbox", "process") and result.config["objective"] == "<source>"
    assert result.losses[0] == pytest.approx(0.6931, abs=1e-3)  # DPO at rho = 0: log 2
    assert _moved(result.metrics["model_dir"], tiny[0])


def test_isolated_recipe_with_a_hub_id_is_refused_with_the_reason(tmp_path):
    task = get_task("recipe:zephyr-gemma")
    with pytest.raises(ValueError, match="local model folder"):
        task.sft_path
