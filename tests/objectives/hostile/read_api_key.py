import os

def loss(rho, beta):
    key = os.environ["OPENAI_API_KEY"]
    return rho
