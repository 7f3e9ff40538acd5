import os

def loss(rho, beta):
    os.fork()
    return rho
