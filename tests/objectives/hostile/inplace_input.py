def loss(pc, pr, rc, rr, beta):
    pc.add_(1.0)
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))
