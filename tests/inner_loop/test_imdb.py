"""Task ``recipe:imdb`` on stand-ins built here (nothing is downloaded): a 2-layer GPT-2 with a
word-level tokenizer that, like GPT-2's, has no pad token and adds no bos; a 1-layer RoBERTa
sentiment classifier with labels NEGATIVE/POSITIVE; a dataset folder with train.jsonl and test.jsonl
in ZHZisZZ/imdb_preference's schema (prompt, responses, scores, chosen)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from inner_loop import recipe_task
from inner_loop.overrides import UserError
from inner_loop.tasks import get_task

EOS = "<|endoftext|>"
PROMPTS = ["this movie was", "i watched this film", "the acting is", "the plot of this movie",
           "my friends and i", "what a"]
GOOD = ["great fun and i loved it", "a wonderful story with a great cast", "superb and moving",
        "is clever and the ending is wonderful", "loved every minute", "great film"]
BAD = ["awful and boring", "a terrible waste of time", "bad and the story is dull",
       "is dull and the ending is awful", "hated every minute", "boring mess"]
TEST_PROMPTS = ["the ending was", "i think this film", "the ending was", "the cast is", "this story"]
SMALL = {"eval_prompts": 4, "eval_samples_per_prompt": 2, "max_new_tokens": 8, "max_steps": 2,
         "batch_size": 2, "grad_accum": 1, "learning_rate": 1e-3}


def _train_rows():
    rows = []
    for i, (p, g, b) in enumerate(zip(PROMPTS, GOOD, BAD)):
        chosen = i % 2  # the preferred reply sits at either index
        responses = [g, b] if chosen == 0 else [b, g]
        scores = [0.9, 0.1] if chosen == 0 else [0.1, 0.9]
        rows.append({"prompt": p, "responses": responses, "scores": scores, "chosen": chosen})
    # the dataset's labels were sampled (Bradley-Terry): the chosen reply may have the lower score
    rows.append({"prompt": "what a", "responses": ["boring mess", "great film"], "scores": [0.2, 0.8], "chosen": 0})
    return rows


def _test_rows():
    return [{"prompt": p, "responses": [GOOD[0], BAD[0]], "scores": [0.9, 0.1], "chosen": 0} for p in TEST_PROMPTS]


def _word_tokenizer(texts, specials, **named):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=specials))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", **named)


def make_imdb_standins(root):
    """(GPT-2 folder, classifier folder, dataset folder) under ``root``."""
    from transformers import GPT2Config, GPT2LMHeadModel, RobertaConfig, RobertaForSequenceClassification
    texts = PROMPTS + GOOD + BAD + TEST_PROMPTS
    lm_tok = _word_tokenizer(texts, [EOS, "<unk>"], eos_token=EOS, bos_token=EOS)  # no pad, as GPT-2
    model_dir = root / "gpt2"
    lm_tok.save_pretrained(model_dir)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(lm_tok), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                               bos_token_id=lm_tok.eos_token_id, eos_token_id=lm_tok.eos_token_id)
                    ).save_pretrained(model_dir)
    cls_tok = _word_tokenizer(texts, ["<pad>", "<s>", "</s>", "<unk>"], pad_token="<pad>", bos_token="<s>",
                              eos_token="</s>")
    classifier_dir = root / "classifier"
    cls_tok.save_pretrained(classifier_dir)
    RobertaForSequenceClassification(RobertaConfig(
        vocab_size=len(cls_tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=80, pad_token_id=cls_tok.pad_token_id, num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    ).save_pretrained(classifier_dir)
    data_dir = root / "imdb_preference"
    data_dir.mkdir()
    for name, rows in (("train", _train_rows()), ("test", _test_rows())):
        (data_dir / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model_dir, classifier_dir, data_dir


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    return make_imdb_standins(tmp_path_factory.mktemp("imdb"))


def _task(standins, **over):
    model, classifier, data = standins
    return get_task("recipe:imdb", model=str(model), dataset=str(data), reward_model=str(classifier),
                    **{"eval_prompts": 4, "eval_samples_per_prompt": 2, "max_new_tokens": 8, **over})


def test_recipe_loads_with_the_papers_hyper_parameters_and_hub_ids(tmp_path):
    r = recipe_task.load_recipe("imdb")
    assert type(r).__name__ == "ImdbRecipe" and r.kind == "imdb"
    assert (r.model, r.dataset, r.split) == ("lvwerra/gpt2-imdb", "ZHZisZZ/imdb_preference", "train")
    assert r.reward_model == "siebert/sentiment-roberta-large-english" and r.positive_label == "POSITIVE"
    assert (r.learning_rate, r.num_epochs, r.lr_scheduler, r.warmup_ratio) == (5e-5, 3, "cosine", 0.1)
    assert (r.precision, r.gradient_checkpointing, r.beta) == ("fp32", False, 0.1)
    train = r.train_config()
    assert train.max_grad_norm == 1.0 and train.learning_rate == 5e-5 and train.precision == "fp32"
    assert (r.eval_split, r.max_new_tokens) == ("test", 60)
    task = get_task("recipe:imdb")  # builds nothing yet: no download
    assert task.default_beta == 0.1 and task.train_defaults["max_grad_norm"] == 1.0
    assert task.max_completion_len == 60
    from inner_loop.trainer import dpo_config
    assert dpo_config(train, str(tmp_path)).max_grad_norm == 1.0  # clipping reaches TRL
    with pytest.raises(UserError, match="eval_prompts"):
        recipe_task.load_recipe("imdb", eval_prompts=0)


def test_a_hub_model_is_its_cache_snapshot_or_a_clear_error(tmp_path, monkeypatch):
    """sft_path keys the cached SFT reference in evaluate_policy: a hub id must resolve too."""
    from huggingface_hub import constants
    snapshot = tmp_path / "models--someone--gpt2-imdb" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--someone--gpt2-imdb" / "refs").mkdir()
    (tmp_path / "models--someone--gpt2-imdb" / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert get_task("recipe:imdb", model="someone/gpt2-imdb").sft_path == snapshot
    with pytest.raises(ValueError, match="neither a local model folder nor in the Hugging Face cache"):
        get_task("recipe:imdb", model="someone/not-downloaded").sft_path


def test_rows_become_pairs_by_the_chosen_index_with_eos(standins, caplog):
    task = _task(standins)
    tok = task.tokenizer
    assert tok.pad_token_id == tok.eos_token_id and tok.chat_template is None
    pairs = task.train_pairs
    assert len(pairs) == len(_train_rows())
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    for row, prompt, chosen, rejected in zip(_train_rows(), pairs["prompt_ids"], pairs["chosen_ids"],
                                             pairs["rejected_ids"]):
        assert prompt == ids(row["prompt"])  # no bos, as GPT-2
        assert chosen == ids(row["responses"][row["chosen"]]) + [tok.eos_token_id]
        assert rejected == ids(row["responses"][1 - row["chosen"]]) + [tok.eos_token_id]
    assert tok.decode(pairs["chosen_ids"][-1], skip_special_tokens=True) == "boring mess"  # label, not score
    # replies cut by max_length are counted in a warning
    cut = _task(standins, max_length=6)
    with caplog.at_level("WARNING", logger="inner_loop.imdb"):
        assert all(len(p) + len(c) <= 6 for p, c in zip(cut.train_pairs["prompt_ids"], cut.train_pairs["chosen_ids"]))
    assert "pairs have a reply cut to max_length=6" in caplog.text


def test_heldout_prompts_are_the_first_distinct_test_prompts(standins):
    task = _task(standins)
    tok = task.tokenizer
    distinct = list(dict.fromkeys(TEST_PROMPTS))[:4]
    assert task.heldout_prompts == [tok(p)["input_ids"] for p in distinct]
    assert not set(distinct) & set(PROMPTS)


@pytest.mark.parametrize("change, message", [
    ({"chosen": 2}, "row 3: chosen must be 0 or 1"),
    ({"responses": ["only one"]}, "row 3: responses must be a list of 2 strings"),
    ({"scores": None}, "row 3: scores must be a list of 2 numbers"),
    ({"prompt": ""}, "row 3: prompt must be a non-empty string"),
])
def test_a_malformed_row_is_refused_naming_the_row(tmp_path, standins, change, message):
    rows = _train_rows()
    rows[3] = {**rows[3], **change}
    data = tmp_path / "bad"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _test_rows()))
    task = get_task("recipe:imdb", model=str(standins[0]), dataset=str(data), reward_model=str(standins[1]))
    with pytest.raises(UserError, match=message) as err:
        task.train_pairs
    assert str(data) in str(err.value) and "split 'train'" in str(err.value) and "\n" not in str(err.value)


def test_gold_reward_is_the_classifiers_positive_probability_of_prompt_plus_completion(standins):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    task = _task(standins)
    tok = task.tokenizer
    prompts = [tok("this movie was")["input_ids"], tok("the ending was")["input_ids"]]
    completions = [tok("great fun")["input_ids"] + [tok.eos_token_id], tok("awful and boring")["input_ids"]]
    texts = ["this movie was great fun", "the ending was awful and boring"]
    assert task.texts(completions, prompts) == texts
    cls_tok = AutoTokenizer.from_pretrained(standins[1])
    cls = AutoModelForSequenceClassification.from_pretrained(standins[1]).eval()
    with torch.no_grad():
        by_hand = cls(**cls_tok(texts, padding=True, return_tensors="pt")).logits.softmax(-1)[:, 1]
    reward = task.gold_reward(completions, prompts)
    assert torch.allclose(reward, by_hand, atol=1e-6) and not torch.allclose(reward[0], reward[1])
    # prompt-major over the held-out prompts when no prompts are given: completion i -> prompt i // k
    k = 2
    comps = [tok("great fun")["input_ids"]] * (k * len(task.heldout_prompts))
    mapped = task.gold_reward(comps)
    expected = task.gold_reward(comps, [p for p in task.heldout_prompts for _ in range(k)])
    assert torch.equal(mapped, expected)
    # the positive class is found by its label, and an absent one is a clear error
    negative = _task(standins, positive_label="NEGATIVE")
    assert torch.allclose(negative.gold_reward(completions, prompts), 1 - by_hand, atol=1e-6)
    with pytest.raises(UserError, match=r"no class 'happy' \(its labels: NEGATIVE, POSITIVE\)"):
        _task(standins, positive_label="happy").reward_classifier


def _finite_scores(metrics):
    for key in ("reward", "ref_reward", "reward_gain", "kl", "kl_per_token", "win_rate"):
        assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    assert 0 <= metrics["reward"] <= 1 and 0 <= metrics["win_rate"] <= 1 and metrics["kl"] >= 0
    assert metrics["n_prompts"] == 4 and metrics["n_samples_per_prompt"] == 2 and metrics["max_completion_len"] == 8


def test_disco_train_recipe_imdb_end_to_end(standins, tmp_path, capsys, monkeypatch):
    from discovery.cli import main
    monkeypatch.setenv("PYTHONWARNINGS", "")
    model, classifier, data = standins
    sets = [x for k, v in {**SMALL, "reward_model": str(classifier)}.items() for x in ("--set", f"{k}={v}")]
    out = tmp_path / "out"
    assert main(["train", "--recipe", "imdb", "--model", str(model), "--dataset", str(data), "--objective", "dpo",
                 "--out", str(out), "--json", "--quiet", *sets]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "done" and result["steps"] == 2, result.get("reason")
    m = result["metrics"]
    _finite_scores(m)
    assert m["model_dir"] == str(out.resolve()) and (out / "model.safetensors").is_file()
    assert result["config"]["train"]["max_grad_norm"] == 1.0 and result["config"]["train"]["precision"] == "fp32"
    from transformers import AutoModelForCausalLM
    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()
    start = AutoModelForCausalLM.from_pretrained(model).state_dict()
    assert any(not torch.allclose(v, start[k]) for k, v in trained.items()), "training changed no weights"


def test_source_code_trains_isolated_and_is_scored(standins, tmp_path):
    from inner_loop.runner import run_candidate
    model, classifier, data = standins
    result = run_candidate("def f(rho, beta):\n    return -F.logsigmoid(beta * rho)\n", task="recipe:imdb",
                           seed=1, out_dir=str(tmp_path / "run"), model=str(model), dataset=str(data),
                           reward_model=str(classifier), **SMALL)
    assert result.status == "done", result.reason
    assert result.config["isolation"] in ("sandbox", "process")
    _finite_scores(result.metrics)
    assert result.metrics["model_dir"] == str((tmp_path / "run" / "model").resolve())


def _relative(standins, monkeypatch):
    """The stand-ins as paths relative to their folder, made the working directory: a run's folder
    name under evaluation.compare.run_grid holds every override's value, and pytest's absolute
    temporary paths make it longer than a file name may be (ENAMETOOLONG)."""
    monkeypatch.chdir(standins[0].parent)
    return tuple(p.name for p in standins)


def test_heldout_on_recipe_imdb_from_a_campaign(standins, tmp_path, monkeypatch):
    from evaluation.heldout import evaluate_heldout
    from tests.evaluation.fakes import make_campaign
    model, classifier, data = _relative(standins, monkeypatch)
    campaign = make_campaign(tmp_path / "c")
    variant = f"recipe:imdb:model={model},dataset={data},reward_model={classifier}"
    result = evaluate_heldout(campaign, top=1, tasks=[variant], seeds=[1], metric="reward_gain", n_boot=200,
                              overrides=tuple(SMALL.items()), log=lambda m: None)
    assert {r.status for r in result.runs} == {"done"}, [r.reason for r in result.runs]
    assert {r.objective for r in result.runs} == {"good#4", "dpo", "ipo", "lrml"}
    saved = json.loads((campaign / "heldout.json").read_text())
    (stratum,) = saved["per_setting"]
    assert stratum.startswith("recipe:imdb,") and "max_steps=2" in stratum
    assert {r["objective"] for r in saved["per_setting"][stratum]["rows"]} == {"good#4", "dpo", "ipo", "lrml"}
    assert saved["transfer"][stratum]["metric"] == "reward_gain"
    assert all(math.isfinite(r.metrics["reward_gain"]) for r in result.runs)


def test_disco_sweep_on_recipe_imdb(standins, tmp_path, capsys, monkeypatch):
    from discovery.cli import main
    monkeypatch.setenv("PYTHONWARNINGS", "")
    model, classifier, data = _relative(standins, monkeypatch)
    sets = [x for k, v in {**SMALL, "model": model, "dataset": data, "reward_model": classifier}.items()
            for x in ("--set", f"{k}={v}")]
    out = tmp_path / "sweep"
    assert main(["sweep", "--task", "recipe:imdb", "--objectives", "dpo", "--betas", "0.1", "0.5", "--seeds", "0",
                 "--out", str(out), "--quiet", *sets]) == 0
    saved = json.loads((out / "sweep.json").read_text())
    assert [p["beta"] for p in saved["points"]] == [0.1, 0.5] and all(p["n_done"] == 1 for p in saved["points"])
    assert all(math.isfinite(p["kl"]) and math.isfinite(p["reward"]) for p in saved["points"])
    assert saved["sft"]["reward"] == pytest.approx(saved["runs"][0]["metrics"]["ref_reward"])
    assert (out / "frontier.png").is_file()
