def loss(rho, beta):
    key = torch.os.environ.get("OPENAI_API_KEY")
    return rho
