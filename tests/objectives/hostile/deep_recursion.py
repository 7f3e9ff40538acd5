def loss(rho, beta):
    return loss(rho, beta)
