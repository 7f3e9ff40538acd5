def loss(rho, beta):
    open("/tmp/disco-pwned", "w").write("x")
    return rho
