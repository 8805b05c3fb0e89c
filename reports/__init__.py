"""Conformance reports: the pytest plugin that records results, report writers and the CLI.

Nothing in this package imports a deep-learning framework: the suites hand it plain numbers.
"""
