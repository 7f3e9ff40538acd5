"""Recipe ``tldr`` (inner_loop.tldr): the paper's settings, both data schemas, the 10% split, the
prompt format, de-duplicated eval posts, and ``disco train --recipe tldr`` writing the summaries.

The tiny model is a 2-layer Gemma with a word-level tokenizer that keeps newlines as a token,
pre-trained for a few steps to end a summary with a newline, so stopping there is exercised."""

from __future__ import annotations

import json

import pytest
import torch

from inner_loop import recipe_task, tldr

SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
WORDS = ["cat", "dog", "car", "rain", "job", "boss", "friend", "money", "house", "game"]


def post(i: int) -> str:
    a, b, c = WORDS[i % 10], WORDS[(i * 3 + 1) % 10], WORDS[(i * 7 + 2) % 10]
    return f"SUBREDDIT: r/{a}\nTITLE: my {a} and {b}\nPOST: the {a} saw a {b} near the {c} today"


def carper_row(i: int, tldr_prefix: bool = True) -> dict:
    a, b = WORDS[i % 10], WORDS[(i * 3 + 1) % 10]
    pre = "TL;DR: " if tldr_prefix else ""
    return {"prompt": post(i) + "\nTL;DR:", "chosen": f"{pre}{a} saw {b}", "rejected": f"{pre}the {b} {a}"}


def make_tiny_tldr(root, n_train: int = 20):
    """(model folder, dataset folder with train.jsonl/test.jsonl in CarperAI's schema)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GemmaConfig, GemmaForCausalLM, PreTrainedTokenizerFast

    train = [carper_row(i) for i in range(n_train)]
    test = [carper_row(i) for i in (100, 101, 100, 102, 101, 103, 104)]  # 5 distinct posts, repeats
    test[2] = dict(test[2], chosen="TL;DR: not the first")                # a repeat's reference loses
    data = root / "data"
    data.mkdir()
    for name, rows in (("train", train), ("test", test)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    texts = [tldr.prompt_text(post(i)) + f" {WORDS[i % 10]} saw {WORDS[(i * 3 + 1) % 10]}\n" for i in range(200)]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(" ", "removed"),
                                                 pre_tokenizers.Split("\n", "isolated")])
    tok.train_from_iterator(texts + ["the not first"], trainers.WordLevelTrainer(special_tokens=SPECIALS))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")
    torch.manual_seed(0)
    cfg = GemmaConfig(vocab_size=len(hf_tok) + 1, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=128,
                      bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id)
    model = GemmaForCausalLM(cfg)
    # a few steps of language modelling: the model learns that a summary ends with a newline
    batch = torch.tensor([hf_tok(t)["input_ids"] for t in texts[:40]])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is faster than two contended ones
    try:
        for _ in range(60):
            loss = model(input_ids=batch, labels=batch).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model_dir = root / "model"
    hf_tok.save_pretrained(model_dir)  # no pad token: the task sets one
    model.save_pretrained(model_dir)
    return model_dir, data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_tldr(tmp_path_factory.mktemp("tldr"))


def test_recipe_has_the_papers_settings_and_ids():
    r = recipe_task.load_recipe("tldr")
    assert isinstance(r, tldr.TldrRecipe) and r.kind == "tldr"
    assert (r.model, r.dataset) == ("HuggingFaceH4/zephyr-7b-gemma-sft-v0.1", "CarperAI/openai_summarize_comparisons")
    assert (r.train_fraction, r.temperature, r.max_new_tokens, r.split, r.eval_split) == (0.1, 0.7, 256, "train", "test")
    assert (r.beta, r.learning_rate) == (0.05, 5e-7)   # zephyr-gemma's DPO stage
    assert recipe_task.config_class("tldr") is tldr.TldrRecipe
    from inner_loop.tasks import TASKS
    assert "recipe:tldr" in TASKS
    from inner_loop.overrides import UserError
    with pytest.raises(UserError, match="eval_size must be an integer >= 1, not 0"):
        recipe_task.load_recipe("tldr", eval_size=0)
    with pytest.raises(UserError, match=r"train_fraction must be a number in \(0, 1\]"):
        recipe_task.load_recipe("tldr", train_fraction=10)


def test_both_schemas_normalise_to_post_chosen_rejected():
    assert post(3) == "SUBREDDIT: r/rain\nTITLE: my rain and cat\nPOST: the rain saw a cat near the rain today"
    assert tldr.normalise_row(carper_row(3)) == (post(3), "rain saw cat", "the cat rain")
    assert tldr.normalise_row(carper_row(3, tldr_prefix=False)) == (post(3), "rain saw cat", "the cat rain")
    openai_row = {"info": {"id": "x", "post": " the rain saw a cat near the rain today\n", "title": "my rain and cat",
                           "subreddit": "rain"},
                  "summaries": [{"text": " the cat rain", "policy": "a"}, {"text": " rain saw cat", "policy": "b"}],
                  "choice": 1}
    assert tldr.normalise_row(openai_row) == (post(3), "rain saw cat", "the cat rain")
    assert tldr.normalise_row(dict(openai_row, choice=0))[1:] == ("the cat rain", "rain saw cat")
    with pytest.raises(ValueError, match=r"unrecognised TL;DR row .*keys \['chosen', 'text'\]"):
        tldr.normalise_row({"text": "x", "chosen": "y"})
    with pytest.raises(ValueError, match="unrecognised TL;DR row .*choice of 0 or 1"):
        tldr.normalise_row(dict(openai_row, choice=2))


def test_ten_percent_is_what_train_slice_takes(tmp_path):
    import datasets
    for n in (20, 25, 35, 45):   # 2.5 -> 2 and 4.5 -> 4, 3.5 -> 4: datasets rounds as Python does
        path = tmp_path / f"{n}.jsonl"
        path.write_text("".join(json.dumps({"x": i}) + "\n" for i in range(n)))
        sliced = datasets.load_dataset("json", data_files=str(path), split="train[:10%]")
        assert tldr.fraction_count(n, 0.1) == len(sliced), n
    assert tldr.fraction_count(92534, 0.1) == 9253   # CarperAI's train split
    assert tldr.fraction_count(3, 0.1) == 1          # where train[:10%] would be empty: one row


def test_train_pairs_use_the_papers_prompt_and_the_first_tenth(tiny, tmp_path):
    import datasets
    model_dir, data = tiny
    task = tldr.TldrTask(recipe_task.load_recipe("tldr", model=str(model_dir), dataset=str(data)))
    sliced = datasets.load_dataset(str(data), split="train[:10%]")
    assert len(task.train_triples()) == len(sliced) == 2
    assert tldr.prompt_text("POST: hi") == "POST: hi\n\nTL;DR:"
    pairs = task.train_pairs
    tok = task.tokenizer
    assert tok.pad_token is not None and len(pairs) == 2
    assert tok.decode(pairs[0]["prompt_ids"]) == tok.decode(tok(post(0) + "\n\nTL;DR:")["input_ids"])
    assert tok.convert_ids_to_tokens(pairs[0]["prompt_ids"][-3:]) == ["\n", "\n", "TL;DR:"]
    assert tok.convert_ids_to_tokens(pairs[0]["chosen_ids"]) == ["cat", "saw", "dog", "<eos>"]
    assert tok.convert_ids_to_tokens(pairs[0]["rejected_ids"]) == ["the", "dog", "cat", "<eos>"]


def test_eval_posts_are_deduplicated_first_occurrence_wins(tiny):
    model_dir, data = tiny
    task = tldr.TldrTask(recipe_task.load_recipe("tldr", model=str(model_dir), dataset=str(data)))
    rows = task.eval_rows
    assert [p for p, _ in rows] == [post(i) for i in (100, 101, 102, 103, 104)]
    assert rows[0][1] == "cat saw dog"                      # the first occurrence's chosen, not "not the first"
    small = tldr.TldrTask(recipe_task.load_recipe("tldr", model=str(model_dir), dataset=str(data), eval_size=2))
    assert [p for p, _ in small.eval_rows] == [post(100), post(101)]


def test_summaries_stop_at_the_first_newline(tiny):
    from transformers import AutoModelForCausalLM
    model_dir, data = tiny
    task = tldr.TldrTask(recipe_task.load_recipe("tldr", model=str(model_dir), dataset=str(data)))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    prompts = [tldr.prompt_text(post(i)) for i in range(100, 106)]
    out = tldr.generate_summaries(model, task.tokenizer, prompts, seed=3, temperature=0.7, max_new_tokens=12,
                                  batch_size=4, max_prompt_length=512)
    assert len(out) == 6 and all("\n" not in s for s, _ in out)
    assert sum(stopped for _, stopped in out) >= 4             # the pre-trained model ends summaries with "\n"
    assert all(len(task.tokenizer(s)["input_ids"]) < 12 for s, stopped in out if stopped)
    again = tldr.generate_summaries(model, task.tokenizer, prompts, seed=3, temperature=0.7, max_new_tokens=12,
                                    batch_size=4, max_prompt_length=512)
    assert again == out                                        # seeded


def test_disco_train_recipe_tldr_writes_the_three_output_files(tiny, tmp_path, capsys, monkeypatch):
    from discovery.cli import main
    model_dir, data = tiny
    loads = []
    original = tldr.TldrTask.load_sft
    monkeypatch.setattr(tldr.TldrTask, "load_sft", lambda self: loads.append(1) or original(self))
    out = tmp_path / "out"
    argv = ["train", "--recipe", "tldr", "--model", str(model_dir), "--dataset", str(data), "--set", "max_steps=2",
            "--set", "eval_size=4", "--set", "max_new_tokens=8", "--set", "grad_accum=1", "--set", "precision=fp32",
            "--set", "gradient_checkpointing=false", "--out", str(out), "--json", "--quiet"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "done", result["reason"]
    m = result["metrics"]
    folder = out / "tldr"
    assert m["outputs_dir"] == str(folder.resolve()) and m["n_eval"] == 4 and m["model_dir"] == str(out.resolve())
    files = {name: json.loads((folder / name).read_text())
             for name in ("model_outputs.json", "sft_outputs.json", "reference_outputs.json")}
    for name, generator in (("model_outputs.json", "policy"), ("sft_outputs.json", "sft"),
                            ("reference_outputs.json", "human")):
        rows = files[name]
        assert len(rows) == 4 and {r["generator"] for r in rows} == {generator}
        assert [r["instruction"] for r in rows] == [post(i) for i in (100, 101, 102, 103)]
        assert all(set(r) == {"instruction", "output", "generator"} and "\n" not in r["output"] for r in rows)
    assert [r["output"] for r in files["reference_outputs.json"]] == [
        tldr.normalise_row(carper_row(i))[1] for i in (100, 101, 102, 103)]
    assert m["frac_stopped_at_newline"] >= 0.5 and m["avg_summary_tokens"] < 8   # it ends summaries at "\n"
    assert m["avg_summary_chars"] == pytest.approx(sum(len(r["output"]) for r in files["model_outputs.json"]) / 4)
    assert loads == [1, 1]   # the policy's start and the SFT summaries
    # a second objective on the same task and seed reuses the SFT summaries (no third load for them)
    assert main(argv[:-4] + ["--objective", "dpo", "--out", str(tmp_path / "out2"), "--json", "--quiet"]) == 0
    capsys.readouterr()
    assert loads == [1, 1, 1]
    again = json.loads((tmp_path / "out2" / "tldr" / "sft_outputs.json").read_text())
    assert again == files["sft_outputs.json"]
