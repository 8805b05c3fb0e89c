"""The port check on models built the way published architectures are built (tests/port_models.py):
every correct port passes, and each planted porting mistake is found at its layer and diagnosed."""
from __future__ import annotations

import os

import numpy as np
import pytest

from port_models import MODELS

from layer_conformance.adapters.graph import UnsupportedModel
from layer_conformance.adapters.models import CHANNELS_FIRST, build_model, read_model
from layer_conformance.mutation.porting import plant
from layer_conformance.suites.port.check import check_port

TARGETS = ("torch", "keras", "flax.linen", "flax.nnx")
# examples per port: the thorough profile's count where it is chosen, a quick one otherwise
EXAMPLES = 200 if "thorough" in (os.environ.get("CONFORMANCE_PROFILE"), os.environ.get("HYPOTHESIS_PROFILE")) else 8


def _source(name: str):
    build, shape = MODELS[name]
    model = build(0)
    return model, read_model(model, input_shape=shape)


def _judged(result) -> list[tuple[str, float | None]]:
    rows = []
    for layer in result.layers:
        for mode, measure in layer.measures().items():
            rows.append((f"layer {layer.layer} {mode}", measure.as_ratio()))
    return rows + [("output", result.output.as_ratio()), ("input gradient", result.input_gradient.as_ratio())]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_correct_port_passes(name: str, target: str) -> None:
    model, graph = _source(name)
    result = check_port(model, to=target, input_shape=graph.input_shape, examples=EXAMPLES, name=name)
    assert result.status == "passed", result.message
    assert result.examples == EXAMPLES
    for what, ratio in _judged(result):
        assert ratio is not None and ratio <= 1.0, (what, ratio)  # every comparison judged, none vacuous
    assert all(layer.gradients for layer in result.layers)
    worst = max(ratio for _, ratio in _judged(result))
    print(f"{name} -> {target}: {result.examples} examples, worst bound ratio {worst:.3g}")


# (model, mistake, layer it is made at, port target, layer it must be found at)
PLANTED = [
    ("tcn", "kernel-transpose", 5, "keras", 5),
    ("tcn", "same-padding-side", 4, "flax.linen", 4),
    ("tcn", "tied-copy", 7, "flax.nnx", 7),
    ("lenet", "flatten-order", 3, "keras", 3),
    ("lenet", "gelu-approximation", 2, "torch", 2),
    ("pointnet", "bias-dropped", 4, "flax.nnx", 4),
    ("pointnet", "view-not-permute", 1, "torch", 1),
    ("m5", "kernel-flip", 2, "flax.linen", 2),
    ("m5", "kernel-transpose", 1, "torch", 1),
]


@pytest.mark.parametrize("name,mistake,layer,target,found", PLANTED,
                         ids=[f"{p[0]}-{p[1]}-layer{p[2]}-{p[3]}" for p in PLANTED])
def test_planted_mistake_is_found_and_diagnosed(name: str, mistake: str, layer: int, target: str, found: int,
                                               tmp_path) -> None:
    model, graph = _source(name)
    port = build_model(plant(graph, mistake, layer, channels_first=target in CHANNELS_FIRST), target)
    port, params = port if isinstance(port, tuple) else (port, None)
    result = check_port(model, port, target_params=params, input_shape=graph.input_shape, examples=6, name=name,
                        out=tmp_path)
    assert result.status == "failed"
    failure = result.first_failure
    assert failure is not None and failure["layer"] == found and failure["mode"] == "isolated", result.message
    best = result.verdicts[0]
    assert best.mistake == mistake and best.ratio <= 1.0, [(v.mistake, v.ratio) for v in result.verdicts]
    assert f"layer {found} (" in result.message and "consistent with" in result.message
    for earlier in result.layers[:found - 1]:  # the layers before it are within their bounds
        assert earlier.isolated.ratio <= 1.0 and earlier.propagated.ratio <= 1.0
    assert result.counterexample and os.path.exists(result.counterexample)


def test_repro_script_replays_the_failing_layer(tmp_path) -> None:
    import subprocess
    import sys

    model, graph = _source("tcn")
    port = build_model(plant(graph, "kernel-transpose", 2, channels_first=False), "keras")
    result = check_port(model, port, input_shape=graph.input_shape, examples=3, name="tcn", out=tmp_path)
    assert result.repro and result.repro.startswith("python ")
    run = subprocess.run([sys.executable, result.repro.split(" ", 1)[1]], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "exceeds the bound" in run.stdout


def test_bound_is_not_loose() -> None:
    """A 1 % error in one of the 64 kernel elements of an output channel of a float32 port fails: the output
    moves by about 1.6e-4 of its magnitude, 40 times the derived bound (65 u), found at that layer."""
    model, graph = _source("pointnet")
    nodes = list(graph.nodes)
    index = graph.layers()[2]
    from dataclasses import replace

    kernel = np.array(nodes[index].weights["kernel"], copy=True)
    kernel.flat[0] *= 1 + 1e-2
    nodes[index] = replace(nodes[index], weights={**nodes[index].weights, "kernel": kernel})
    from layer_conformance.adapters.graph import ModelGraph

    port = build_model(ModelGraph(nodes, graph.framework, graph.dtype, graph.description), "torch")
    result = check_port(model, port, input_shape=graph.input_shape, examples=6, name="pointnet")
    assert result.status == "failed" and result.first_failure["layer"] == 3, result.message


def test_unsupported_module_is_refused_with_its_place() -> None:
    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv1d(3, 8, 3), nn.BatchNorm1d(8), nn.ReLU()).eval()
    with pytest.raises(UnsupportedModel, match=r"BatchNorm1d.*'1'|'1'.*BatchNorm1d"):
        check_port(model, to="keras", input_shape=(3, 16), examples=1)
    del torch


def test_mismatched_layers_are_refused() -> None:
    from torch import nn

    source = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    port = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with pytest.raises(UnsupportedModel, match="layer 2 of the source"):
        check_port(source, port, input_shape=(4,), examples=1)


def test_user_inputs_are_checked_first() -> None:
    model, graph = _source("pointnet")
    mine = np.zeros((2, *graph.input_shape), np.float32)
    result = check_port(model, to="torch", input_shape=graph.input_shape, examples=2, inputs=[mine])
    assert result.examples == 3 and result.status == "passed"
    with pytest.raises(UnsupportedModel, match="input of shape"):
        check_port(model, to="torch", input_shape=graph.input_shape, examples=0, inputs=[np.zeros((2, 5))])


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_port_to_keras_on_another_backend(backend: str) -> None:
    """Keras 3 on each backend: a correct port passes, and a planted mistake is found there too (Keras picks
    its backend once per process, so each runs in its own)."""
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys\n"
        "from port_models import MODELS\n"
        "from layer_conformance.adapters.models import build_model, read_model\n"
        "from layer_conformance.mutation.porting import plant\n"
        "from layer_conformance.suites.port.check import check_port\n"
        "build, shape = MODELS['lenet']\n"
        "model = build(0)\n"
        "good = check_port(model, to='keras', input_shape=shape, examples=4, name='lenet')\n"
        "graph = read_model(model, input_shape=shape)\n"
        "bad = check_port(model, build_model(plant(graph, 'flatten-order', 3, channels_first=False), 'keras'),\n"
        "                 input_shape=shape, examples=4, name='lenet')\n"
        "print(good.target['keras_backend'], good.status, bad.status, bad.first_failure['layer'],\n"
        "      bad.verdicts[0].mistake)\n")
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(Path(__file__).parent)}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-5:] == [backend, "passed", "failed", "3", "flatten-order"], run.stdout


def test_dropped_padding_changes_a_length_and_is_diagnosed() -> None:
    """A port whose convolution lost its padding computes a shorter sequence: the layer's ratio is infinite (no
    comparison of unequal shapes is ever a pass), and the diagnosis names the dropped padding."""
    import torch
    from torch import nn

    class Pooled(nn.Module):
        def __init__(self, body: nn.Module):
            super().__init__()
            self.body = body

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x).mean(2)

    torch.manual_seed(0)
    source = nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv1d(8, 8, 3)).eval()
    port = nn.Sequential(nn.Conv1d(3, 8, 3), nn.ReLU(), nn.Conv1d(8, 8, 3)).eval()
    port.load_state_dict(source.state_dict())
    result = check_port(Pooled(source), Pooled(port), input_shape=(3, 16), examples=4, name="padded")
    assert result.status == "failed" and result.first_failure["layer"] == 1
    assert result.first_failure["ratio"] is None  # infinite
    assert result.verdicts[0].mistake == "padding-dropped" and result.verdicts[0].ratio <= 1.0, result.message
