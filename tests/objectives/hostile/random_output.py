def loss(rho, beta):
    return -F.logsigmoid(beta * rho) + torch.rand_like(rho)
