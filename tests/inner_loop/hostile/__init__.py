"""Hostile candidate losses for tests/inner_loop/test_hostile.py, and a way to run them past the AST
screen (:mod:`hostile.unscreened`): the screen is a filter, the trainer must hold without it."""
