"""Recipes end to end on a tiny Gemma: the zephyr-gemma code path (conversational dpo-mix-7k rows in
JSONL, the zephyr chat template, prompt splitting and truncation, TRL's reference precompute,
bf16 + gradient checkpointing as the recipe says, saving) with a 2-layer GemmaForCausalLM and a
word-level tokenizer trained on the test rows. Nothing is downloaded."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer

from inner_loop import recipe_task
from inner_loop.recipes import run_recipe

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>"]


def _rows():
    q = ["what is the capital of france", "name a red fruit", "how many legs has a spider",
         "say hello in spanish", "what colour is the sky"]
    good = ["paris is the capital", "a strawberry is red", "a spider has eight legs", "hola", "the sky is blue"]
    bad = ["i do not know", "bananas", "six legs maybe", "bonjour", "green"]
    rows = []
    for i, (a, b, c) in enumerate(zip(q, good, bad)):
        user = [{"role": "user", "content": a}]
        if i % 2:  # some rows open with a system turn and an earlier exchange, as dpo-mix-7k's do
            user = [{"role": "system", "content": "you are a helpful assistant"}, {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello how can i help"}, *user]
        rows.append({"dataset": "test", "chosen": user + [{"role": "assistant", "content": b}],
                     "rejected": user + [{"role": "assistant", "content": c}],
                     "chosen_rating": 5.0, "rejected_rating": 1.0})
    return rows


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory):
    return make_tiny_gemma(tmp_path_factory.mktemp("recipe"))


def make_tiny_gemma(root, max_positions: int = 128):
    """(model folder, dpo-mix JSONL) under ``root``: a 2-layer Gemma and a word-level tokenizer
    without a chat template (the recipe falls back to zephyr.jinja). Other test modules use it."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GemmaConfig, GemmaForCausalLM, PreTrainedTokenizerFast
    rows = _rows()
    texts = [m["content"] for r in rows for side in ("chosen", "rejected") for m in r[side]]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIALS))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                     eos_token="<eos>", unk_token="<unk>")
    model_dir = root / "model"
    hf_tok.save_pretrained(model_dir)  # no chat template: the recipe falls back to zephyr.jinja
    torch.manual_seed(0)
    cfg = GemmaConfig(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                      max_position_embeddings=max_positions,
                      pad_token_id=hf_tok.pad_token_id, bos_token_id=hf_tok.bos_token_id,
                      eos_token_id=hf_tok.eos_token_id)
    GemmaForCausalLM(cfg).save_pretrained(model_dir)
    data = root / "dpo-mix.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model_dir, data


def test_recipe_files_load_with_the_papers_hyper_parameters():
    r = recipe_task.load_recipe("zephyr-gemma")
    assert (r.model, r.dataset) == ("HuggingFaceH4/zephyr-7b-gemma-sft-v0.1", "argilla/dpo-mix-7k")
    assert (r.beta, r.learning_rate, r.num_epochs, r.batch_size, r.grad_accum) == (0.05, 5e-7, 2, 2, 8)
    assert (r.lr_scheduler, r.warmup_ratio, r.max_length, r.max_prompt_length) == ("cosine", 0.1, 1024, 512)
    assert r.precision == "bf16" and r.gradient_checkpointing
    assert (recipe_task.RECIPE_DIR / r.accelerate_config).is_file()
    assert recipe_task.load_recipe("gemma-2b").model == "google/gemma-2b-it"
    with pytest.raises(KeyError, match="known"):
        recipe_task.load_recipe("zephyr")


def test_prompt_split_and_zephyr_format(tiny_gemma):
    model_dir, _ = tiny_gemma
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = recipe_task.chat_template("zephyr")
    row = _rows()[1]
    prompt, chosen, rejected = recipe_task.split_prompt(row["chosen"], row["rejected"])
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]
    assert chosen == [row["chosen"][-1]] and rejected == [row["rejected"][-1]]
    text = tok.apply_chat_template(prompt + chosen, tokenize=False)
    assert text == ("<bos><|system|>\nyou are a helpful assistant<eos>\n<|user|>\nhi<eos>\n"
                    "<|assistant|>\nhello how can i help<eos>\n<|user|>\nname a red fruit<eos>\n"
                    "<|assistant|>\na strawberry is red<eos>\n")
    assert tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True).endswith(
        "name a red fruit<eos>\n<|assistant|>\n")
    pairs = recipe_task.tokenize_pairs([row], tok, max_prompt_length=6)
    assert len(pairs[0]["prompt_ids"]) == 6  # truncated, keeping the end next to the reply
    assert tok.convert_ids_to_tokens(pairs[0]["prompt_ids"][-1]) == "<|assistant|>"
    assert tok.convert_ids_to_tokens(pairs[0]["chosen_ids"])[-1] == "<eos>"


def test_zephyr_gemma_recipe_end_to_end_on_a_tiny_gemma(tiny_gemma, tmp_path):
    model_dir, data = tiny_gemma
    result = run_recipe("zephyr-gemma", model=str(model_dir), dataset=str(data), objective="lrml",
                                out_dir=str(tmp_path / "out"), max_steps=3, grad_accum=1, learning_rate=1e-3)
    assert result.status == "done", result.reason
    assert result.steps == 3 and len(result.losses) == 3
    assert result.config["train"]["precision"] == "bf16" and result.config["train"]["gradient_checkpointing"]
    assert result.config["pairs"] == 5
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "out" / "result.json").read_text())["status"] == "done"
    from transformers import AutoModelForCausalLM
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32)
    start = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    moved = [k for k, v in trained.state_dict().items() if not torch.allclose(v, start.state_dict()[k])]
    assert moved, "training changed no weights"
