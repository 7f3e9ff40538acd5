def loss(rho, beta):
    hog = [0.0] * (10 ** 10)
    return -F.logsigmoid(beta * rho) + len(hog)
