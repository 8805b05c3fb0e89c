"""The port check for whole models: per-layer bound ratios, isolated and propagated, and the diagnosis."""
