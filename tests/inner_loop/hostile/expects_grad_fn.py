def f(pc, pr, rc, rr, beta):
    """DPO, but while training it counts on its input having a grad_fn (a detached leaf has none)."""
    if pc.requires_grad:
        pc.grad_fn.next_functions[0][0].variable.data.mul_(0.0)
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))
