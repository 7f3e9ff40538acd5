"""ObjectiveDPOTrainer on a tiny GPT-2: it trains, it moves every parameter, and the TRL internals
it leans on are still there (this file is the alarm for a TRL upgrade).

The helpers at the top (tiny tokenizer, tiny model, tiny pairs) are shared with the other
tests/inner_loop files, which import them from here.
"""

from __future__ import annotations

import inspect
import random

import pytest
import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

import objectives
from inner_loop import trainer as T

WORDS = [f"w{i}" for i in range(24)]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<eos>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def tiny_model(seed: int = 0, vocab: int = len(WORDS) + 2) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0, eos_token_id=1,
                     bos_token_id=1)
    return GPT2LMHeadModel(cfg)


def text_pairs(n: int = 16, seed: int = 0) -> Dataset:
    """Pairs as text: the chosen answer repeats the prompt's first word, the rejected one does not."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = [rng.choice(WORDS) for _ in range(rng.randint(3, 6))]
        chosen = [prompt[0]] + [rng.choice(WORDS) for _ in range(rng.randint(1, 4))]
        rejected = [rng.choice(WORDS[12:])] + [rng.choice(WORDS) for _ in range(rng.randint(1, 4))]
        rows.append({"prompt": " ".join(prompt) + " ", "chosen": " ".join(chosen),
                     "rejected": " ".join(rejected)})
    return Dataset.from_list(rows)


@torch.no_grad()
def token_pairs(model, n: int = 16, seed: int = 0) -> Dataset:
    """Pre-tokenised pairs with reference log-probs from ``model`` (as the synthetic task ships them)."""
    tok = tiny_tokenizer()
    rows = []
    for r in text_pairs(n, seed):
        row = {"prompt_ids": tok(r["prompt"])["input_ids"]}
        for side in ("chosen", "rejected"):
            ids = tok(r[side])["input_ids"] + [tok.eos_token_id]
            full = torch.tensor([row["prompt_ids"] + ids])
            logp = model(full).logits[0, :-1].float().log_softmax(-1)
            picked = logp.gather(1, full[0, 1:, None])[:, 0][-len(ids):]
            row[f"{side}_ids"], row[f"ref_{side}_logps"] = ids, float(picked.sum())
        rows.append(row)
    return Dataset.from_list(rows)


def quick_config(**kw) -> T.TrainConfig:
    base = dict(beta=0.1, learning_rate=5e-3, max_steps=6, batch_size=4, logging_steps=1, seed=0)
    return T.TrainConfig(**{**base, **kw})


def test_training_moves_the_loss_and_every_parameter():
    model = tiny_model()
    data = token_pairs(model)
    before = {k: v.clone() for k, v in model.named_parameters()}
    out = T.train_objective(model, tiny_tokenizer(), data, objectives.load("dpo"), quick_config())
    assert out.status == "done" and out.steps == 6 and len(out.losses) == 6
    assert out.losses[0] == pytest.approx(0.6931, abs=1e-3)  # policy == reference: log 2
    assert out.losses[-1] < out.losses[0] - 0.01
    unchanged = [k for k, v in model.named_parameters() if torch.equal(v, before[k])]
    assert not unchanged, f"parameters that did not move: {unchanged}"
    assert any("rewards/margins" in row for row in out.log_history)  # TRL's metrics still log


@pytest.mark.parametrize("logprobs", ["direct", "fused"])
def test_both_logprob_paths_train_identically_and_log_the_reward_metrics(logprobs):
    """The direct path (own forward) and the fused path (TRL's LM head) are the same training."""
    model = tiny_model()
    out = T.train_objective(model, tiny_tokenizer(), token_pairs(model), objectives.load("dpo"),
                            quick_config(logprobs=logprobs))
    reference = T.train_objective(tiny_model(), tiny_tokenizer(), token_pairs(tiny_model()), objectives.load("dpo"),
                                  quick_config(logprobs="fused"))
    assert out.losses == pytest.approx(reference.losses, abs=1e-5)
    logged = [row for row in out.log_history if "rewards/margins" in row]
    assert logged and {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "logps/chosen"} <= set(logged[0])


def test_auto_logprobs_is_direct_for_small_vocabularies_and_fused_for_large_ones():
    small = tiny_model()
    assert quick_config().resolved(small).logprobs == "direct"
    big = GPT2LMHeadModel(GPT2Config(vocab_size=T.DIRECT_MAX_VOCAB + 1, n_layer=1, n_embd=8, n_head=1,
                                     n_positions=16))
    assert quick_config().resolved(big).logprobs == "fused"
    with pytest.raises(ValueError, match="logprobs"):
        quick_config(logprobs="fast").resolved(small)


def test_extra_text_columns_are_dropped_not_tokenised():
    model = tiny_model()
    data = token_pairs(model)
    data = data.add_column("prompt", ["x"] * len(data))  # extra text columns are dropped, not tokenised
    out = T.train_objective(model, tiny_tokenizer(), data, objectives.load("dpo"), quick_config(max_steps=2))
    assert out.status == "done" and out.steps == 2


def test_source_objective_and_length_normalised_objective_train():
    for obj in (objectives.load("def f(rho, beta):\n    return -F.logsigmoid(beta * rho)\n"),
                objectives.load("ipo_norm")):
        model = tiny_model()
        out = T.train_objective(model, tiny_tokenizer(), token_pairs(model), obj, quick_config(max_steps=3))
        assert out.status == "done" and len(out.losses) == 3


def test_no_reference_model_is_built_and_cpu_runs_fp32_without_checkpointing():
    model = tiny_model()
    args = T.dpo_config(quick_config().resolved(model), "/tmp/unused")
    trainer = T.ObjectiveDPOTrainer(model=model, args=args, train_dataset=token_pairs(model),
                                    processing_class=tiny_tokenizer(), objective=objectives.load("dpo"))
    assert trainer.ref_model is None and trainer.precompute_ref_logps
    if not torch.cuda.is_available():
        assert not args.bf16 and not args.gradient_checkpointing


def test_trl_internals_we_rely_on():
    """Breaks loudly when TRL moves what the override depends on. Fix the trainer, then this."""
    import trl
    from trl.trainer import utils as trl_utils
    from packaging.version import Version
    assert T.TRL_RANGE[0] <= Version(trl.__version__) < T.TRL_RANGE[1]
    D = trl.DPOTrainer
    assert list(inspect.signature(D.compute_loss).parameters) == [
        "self", "model", "inputs", "return_outputs", "num_items_in_batch"]
    assert list(inspect.signature(D._prepare_dataset).parameters) == [
        "self", "dataset", "processing_class", "args", "dataset_name"]
    assert list(inspect.signature(D._precompute_ref_logps).parameters) == ["self", "dataset", "name", "batch_size"]
    src = inspect.getsource(D._compute_loss)
    for needle in ('outputs.log_probs[:, -seq_len:]', 'inputs["ref_chosen_logps"]', 'inputs["ref_rejected_logps"]',
                   'loss += per_sequence_loss.mean() * loss_weight', 'fused_lm_head=True',
                   'shift_completion_mask = completion_mask[..., 1:]'):
        assert needle in src, f"TRL's _compute_loss no longer contains {needle!r}"
    assert "self._precompute_ref_logps(" in inspect.getsource(D.__init__)
    assert "log_probs" in trl_utils.FusedCausalLMOutput.__dataclass_fields__
    # the direct path logs into TRL's metric store, which DPOTrainer.log() averages and clears
    assert "self._metrics[mode]" in inspect.getsource(D.log)
    cfg = trl.DPOConfig(output_dir="/tmp/unused", loss_weights=[0.0], precompute_ref_log_probs=True, bf16=False,
                        use_cpu=True)
    assert cfg.loss_type == ["sigmoid"] and cfg.loss_weights == [0.0]
    assert not hasattr(cfg, "max_prompt_length")  # recipes truncate prompts themselves


def test_wrong_config_is_refused():
    model = tiny_model()
    args = T.dpo_config(quick_config().resolved(model), "/tmp/unused")
    args.loss_weights = [1.0]
    with pytest.raises(ValueError, match="loss_weights"):
        T.ObjectiveDPOTrainer(model=model, args=args, train_dataset=token_pairs(model),
                              processing_class=tiny_tokenizer(), objective=objectives.load("dpo"))
