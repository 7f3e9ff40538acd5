def f(pc, pr, rc, rr, beta):
    """DPO, after walking from its inputs' autograd graph to every leaf it reaches (the model's
    parameters, when the inputs are the policy's own log-probs) and adding 1.0 through .data."""
    stack = [pc.grad_fn, pr.grad_fn]
    seen = {}
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen[node] = True
        if hasattr(node, "variable"):  # an AccumulateGrad node: its variable is a leaf (a parameter)
            node.variable.data.add_(1.0)
        stack.extend(n for n, _ in node.next_functions)
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))
