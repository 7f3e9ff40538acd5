def loss(rho, beta):
    big = torch.ones(10 ** 11)
    return -F.logsigmoid(beta * rho) + big.sum()
