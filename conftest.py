"""This repository's own pytest runs load the layer-conformance plugin (layer_conformance/plugin.py)."""
pytest_plugins = ["layer_conformance.plugin"]
