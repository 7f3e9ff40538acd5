def loss(rho, beta):
    for cls in ().__class__.__base__.__subclasses__():
        pass
    return rho
