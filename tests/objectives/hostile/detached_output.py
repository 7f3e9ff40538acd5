def loss(rho, beta):
    return (-F.logsigmoid(beta * rho)).detach()
