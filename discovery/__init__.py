"""The outer loop: a campaign that proposes objectives, checks, trains and records them.

::

    proposers.py   the proposer seam (Proposal, Context) and its registry: evolve, openai
    evolve.py      offline symbolic evolution of loss expressions in z = beta * rho (default)
    llm.py         any OpenAI-compatible endpoint; bounded prompts, retries with backoff
    prompts/       the prompt files (system, propose, entry, failure), read by prompts.py
    parsing.py     a model's reply -> thought, name, code (or an error fed back next time)
    archive.py     DIR/archive.sqlite: one row per baseline/candidate, states, WAL
    config.py      CampaignConfig (frozen dataclass; YAML only at the edge)
    seams.py       validator, fingerprinter, inspector, fitness: named in the config
    training.py    one row on every seed, in-process or as a worker process
    campaign.py    the loop: baselines, propose, validate, dedupe, train, record; resume
    commands.py    disco run | resume | status | show
"""
