"""layer-conformance: do weight-transferred layers agree across PyTorch, Keras and Flax?

The package's parts: `layer_conformance.adapters` (frameworks behind one protocol, the float64
reference, `convert`), `layer_conformance.suites` (claims, strategies, bounds, checks),
`layer_conformance.reports` (reports, the gate, the command line) and `layer_conformance.plugin`
(the pytest plugin).
"""
__version__ = "0.1.0"
