"""Loss sources shared by the objective tests: DPO in the three code forms, LRML, a sign-flipped DPO."""

DPO_METHOD = '''
def dpo_method(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
               reference_rejected_logps):
    """DiscoPOP's method form: self.beta, torch and F without imports."""
    pi_logratios = policy_chosen_logps - policy_rejected_logps
    ref_logratios = reference_chosen_logps - reference_rejected_logps
    logits = pi_logratios - ref_logratios
    losses = -F.logsigmoid(self.beta * logits)
    return losses
'''

DPO_LOGPS = '''
import torch.nn.functional as F

def dpo(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))
'''

DPO_RHO = '''
import torch

def dpo(rho, beta):
    return -torch.nn.functional.logsigmoid(beta * rho)
'''

LRML_METHOD = '''
def log_ratio_modulated_loss(self, policy_chosen_logps, policy_rejected_logps,
                             reference_chosen_logps, reference_rejected_logps):
    pi_logratios = policy_chosen_logps - policy_rejected_logps
    ref_logratios = reference_chosen_logps - reference_rejected_logps
    logits = pi_logratios - ref_logratios
    logits = logits * self.beta
    log_ratio_modulation = torch.sigmoid(logits / 0.05)
    logistic_component = -F.logsigmoid(logits)
    exp_component = torch.exp(-logits)
    losses = logistic_component * (1 - log_ratio_modulation) + exp_component * log_ratio_modulation
    return losses
'''

FLIPPED_DPO = '''
def flipped(rho, beta):
    return -F.logsigmoid(-beta * rho)
'''
