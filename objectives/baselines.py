"""Built-in objectives: the preference losses DiscoPOP compared against and seeded its archive with.

Each function takes the four per-pair log-prob tensors and beta and returns per-pair losses of
shape [B]. The line that implements a paper's equation cites it. Each function holds its whole
formula (no private helpers): its source is what ``disco objectives list --source`` shows and what
the campaign seeds its archive with. Where TRL 1.16 has the same loss
(``DPOConfig.loss_type``), tests/objectives/test_trl_parity.py checks we agree with it numerically.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F

from objectives.base import Objective, margin
from objectives.registry import Registry

REGISTRY: Registry[Objective] = Registry("objective")

ROBUST_LABEL_SMOOTHING = 0.1  # cDPO / robust DPO flip rate epsilon (Chowdhury et al. 2024)
EXO_EPSILON = 1e-3  # EXO-pref target smoothing epsilon (Ji et al. 2024); must be > 0
LRML_TAU = 0.05  # DiscoPOP's temperature on beta-scaled margins (TRL's discopop_tau default)


def _register(kind, citation, *, name=None, length_normalized=False):
    def wrap(fn):
        REGISTRY.register(name or fn.__name__, Objective(
            name=name or fn.__name__, fn=fn, form="registry", kind=kind,
            source=inspect.getsource(fn), citation=citation,
            description=(fn.__doc__ or "").strip().splitlines()[0],
            length_normalized=length_normalized))
        return fn
    return wrap


@_register("pointwise", "Rafailov et al. 2023, DPO, Eq. 7")
def dpo(pc, pr, rc, rr, beta):
    """DPO: the logistic (Bradley-Terry) loss on the beta-scaled margin."""
    return -F.logsigmoid(beta * margin(pc, pr, rc, rr))  # DPO Eq. 7


@_register("pointwise", "Azar et al. 2023, IPO, Eq. 17 (summed log-ratios, as DiscoPOP's baselines)")
def ipo(pc, pr, rc, rr, beta):
    """IPO: squared distance of the summed-log-prob margin from 1/(2 beta); not length-normalised."""
    return (margin(pc, pr, rc, rr) - 1.0 / (2.0 * beta)) ** 2  # IPO Eq. 17 (Azar et al.), tau = beta


@_register("pointwise", "Azar et al. 2023, IPO, Eq. 17, on per-token mean log-probs (TRL's ipo)",
           length_normalized=True)
def ipo_norm(pc, pr, rc, rr, beta):
    """IPO as TRL computes it: the trainer feeds per-token mean log-probs (length-normalised margin)."""
    return (margin(pc, pr, rc, rr) - 1.0 / (2.0 * beta)) ** 2  # IPO Eq. 17, tau = beta


@_register("pointwise", "Zhao et al. 2023, SLiC-HF, Eq. 1 (delta = 1/beta after scaling)")
def hinge(pc, pr, rc, rr, beta):
    """SLiC: hinge on the beta-scaled margin."""
    return torch.relu(1.0 - beta * margin(pc, pr, rc, rr))  # SLiC-HF Eq. 1 calibration loss


@_register("batch", "Ethayarajh et al. 2024, KTO, Eq. 7 (the paired form of TRL <= 0.8, DiscoPOP's seed)")
def kto_pair(pc, pr, rc, rr, beta):
    """KTO-pair: each side's log-ratio against the other side's batch-mean KL estimate."""
    chosen_lr, rejected_lr = pc - rc, pr - rr
    chosen_kl = chosen_lr.mean().clamp(min=0)  # batch estimate of KL, clamped at 0 (KTO Eq. 7)
    rejected_kl = rejected_lr.mean().clamp(min=0)
    gain = 1 - torch.sigmoid(beta * (chosen_lr - rejected_kl))  # KTO Eq. 7, desirable half
    loss = 1 - torch.sigmoid(beta * (chosen_kl - rejected_lr))  # KTO Eq. 7, undesirable half
    # The original concatenated both halves ([2B]) and averaged; per pair that is their mean.
    return 0.5 * (gain + loss)


@_register("logratio", "Jung et al. 2024, BCO, Eq. 11 without the running reward shift (TRL's bco_pair)")
def bco_pair(pc, pr, rc, rr, beta):
    """BCO-pair: binary classification of chosen vs rejected rewards around zero."""
    return -F.logsigmoid(beta * (pc - rc)) - F.logsigmoid(-beta * (pr - rr))  # BCO Eq. 11, delta = 0


@_register("logratio", "Chen et al. 2024, NCA, Eq. 11 for K = 2")
def nca_pair(pc, pr, rc, rr, beta):
    """NCA-pair: noise-contrastive alignment with absolute (not relative) rewards."""
    chosen, rejected = beta * (pc - rc), beta * (pr - rr)
    return -F.logsigmoid(chosen) - 0.5 * F.logsigmoid(-chosen) - 0.5 * F.logsigmoid(-rejected)  # NCA Eq. 11


@_register("logratio", "Wu et al. 2024, SPPO, Eq. 4.7 with hard win probabilities (TRL's sppo_hard)")
def sppo_hard(pc, pr, rc, rr, beta):
    """SPPO-hard: squared regression of each log-ratio onto +-1/(2 beta)."""
    return ((pc - rc) - 0.5 / beta) ** 2 + ((pr - rr) + 0.5 / beta) ** 2  # SPPO Eq. 4.7, P in {0, 1}


@_register("logratio", "D'Oosterlinck et al. 2024, APO, Eq. 7 (APO-zero)")
def apo_zero(pc, pr, rc, rr, beta):
    """APO-zero: raise the chosen likelihood and lower the rejected one, each on its own."""
    return (1 - torch.sigmoid(beta * (pc - rc))) + torch.sigmoid(beta * (pr - rr))  # APO Eq. 7


@_register("pointwise", f"Chowdhury et al. 2024, robust DPO, Eq. 6 (epsilon = {ROBUST_LABEL_SMOOTHING})")
def robust(pc, pr, rc, rr, beta):
    """Robust DPO: unbiased DPO under a known label-flip rate epsilon."""
    z, eps = beta * margin(pc, pr, rc, rr), ROBUST_LABEL_SMOOTHING
    return (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)  # rDPO Eq. 6


@_register("pointwise", f"Ji et al. 2024, EXO, Eq. 16 for K = 2 (epsilon = {EXO_EPSILON})")
def exo_pair(pc, pr, rc, rr, beta):
    """EXO-pair: reverse KL from the model's pair distribution to a smoothed target."""
    z, eps = beta * margin(pc, pr, rc, rr), EXO_EPSILON
    kl_win = torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-eps))  # EXO Eq. 16, chosen term
    kl_lose = torch.sigmoid(-z) * (F.logsigmoid(-z) - math.log(eps))  # EXO Eq. 16, rejected term
    return kl_win + kl_lose


@_register("pointwise", f"Lu et al. 2024, DiscoPOP, Eq. 5 (tau = {LRML_TAU} on beta-scaled margins)")
def lrml(pc, pr, rc, rr, beta):
    """LRML / DiscoPOP: a sigmoid-gated blend of the logistic and exponential losses."""
    z = beta * margin(pc, pr, rc, rr)
    gate = torch.sigmoid(z / LRML_TAU)  # DiscoPOP Eq. 5, mixing weight
    return -F.logsigmoid(z) * (1 - gate) + torch.exp(-z) * gate  # DiscoPOP Eq. 5
