"""Run TRL 1.16's own DPO loss code on given log-probs, without a model or a dataset.

``DPOTrainer._compute_loss`` is called unbound on a stand-in trainer whose "model" returns the
per-token log-probs we choose, with precomputed reference log-probs, so the loss TRL computes is
exactly its built-in formula for ``loss_type``. If TRL renames or restructures what this relies on,
these helpers fail loudly and the parity tests with them.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import torch
from trl import DPOTrainer


class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather_for_metrics(x):
        return x

    @staticmethod
    def gather(x):
        return x


def trl_loss(loss_type, pc, pr, rc, rr, beta, *, lengths=None, label_smoothing=0.0, tau=0.05):
    """TRL's batch-mean loss and its gradient w.r.t. (pc, pr) for log-probs spread over tokens.

    ``lengths`` (chosen, rejected) gives each completion's token count; each sequence's summed
    log-prob is spread evenly over its completion tokens.
    """
    batch = pc.shape[0]
    if lengths is None:
        lengths = (torch.ones(batch, dtype=torch.long), torch.ones(batch, dtype=torch.long))
    lens = torch.cat(lengths)
    width = int(lens.max()) + 1
    position = torch.arange(width).expand(2 * batch, width)
    completion_mask = (position >= width - lens[:, None]).long()  # completions right-aligned
    shift = completion_mask[:, 1:].double()
    policy = torch.cat([pc, pr]).double().detach().requires_grad_(True)
    per_token = shift * (policy / lens.double())[:, None]

    def model(**kwargs):
        zeros = torch.zeros_like(per_token)
        return SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros,
                               is_top1=torch.zeros_like(per_token, dtype=torch.bool))

    model.training = True
    stand_in = SimpleNamespace(
        model=model, accelerator=_Accelerator(), aux_loss_enabled=False, ld_alpha=None,
        precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=[loss_type],
        loss_weights=[1.0], beta=beta, label_smoothing=label_smoothing,
        args=SimpleNamespace(discopop_tau=tau), use_weighting=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": torch.zeros(2 * batch, width, dtype=torch.long),
              "attention_mask": torch.ones(2 * batch, width, dtype=torch.long),
              "completion_mask": completion_mask,
              "ref_chosen_logps": rc.double(), "ref_rejected_logps": rr.double()}
    loss = DPOTrainer._compute_loss(stand_in, model, inputs, return_outputs=False)
    loss.backward()
    return loss.detach(), policy.grad[:batch], policy.grad[batch:]
