"""Conformance reports: the pytest plugin that records results, report writers, the gate and merge (the
command line over them is layer_conformance.cli).

Nothing in this package imports a deep-learning framework: the suites hand it plain numbers.
"""
