def loss(rho, beta):
    x = torch.ones(3000, 3000)
    for i in range(100000):
        x = torch.tanh(x @ x)
    return -F.logsigmoid(beta * rho) + x.sum()
