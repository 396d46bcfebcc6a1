"""Benchmarks: navro-adapters against the auth layers users would otherwise pick.

Run ``python -m benchmarks`` (a few minutes) or ``python -m benchmarks --quick`` (under a
minute). Every stack runs in its own process against its own sandbox server, itself in a child
process, one stack after another, so the figures of one run are comparable with each other.
See :mod:`benchmarks.runner` for what is measured and :mod:`benchmarks.targets` for the bar.
"""
