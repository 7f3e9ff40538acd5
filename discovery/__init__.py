"""The outer loop: a campaign that proposes objectives, checks, trains and records them.

::

    proposal.py       the proposer interface: Context, Entry, Proposal, Proposer, ProposerError
    proposers.py      the proposer registry: evolve, openai
    evolve.py         offline symbolic evolution of loss expressions in z = beta * rho (default)
    grammar.py        the expression grammar evolve.py mutates
    llm.py            any OpenAI-compatible endpoint; bounded prompts
    openai_client.py  the OpenAI-compatible client (key, retries, timeouts) of proposer and judge
    prompts/          the prompt files (system, propose, entry, failure), read by prompts.py
    parsing.py        a model's reply -> thought, name, code (or an error fed back next time)
    feedback.py       what of a failure reaches the next prompt (never the candidate's own text)
    text.py           untrusted text: cleaned, capped, shown without control characters
    archive.py        DIR/archive.sqlite: one row per baseline/candidate, states, WAL
    config.py         CampaignConfig: nested frozen dataclasses (YAML only at the edge)
    seams.py          Seams: validator, fingerprinter, inspector, trainer, fitness, as objects
    training.py       one row on every seed, in-process or as a worker (LocalExecutor)
    campaign.py       the loop: baselines, propose, validate, dedupe, train, record; resume
    commands.py       disco run | resume | status | show
    cli.py            the disco console script: subcommands of every package, one-line errors
"""
