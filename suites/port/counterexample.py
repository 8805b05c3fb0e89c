"""The failing example of a port, kept so that people can act on it: one `.npz` and a script that replays it.

``<stem>.npz`` holds the port's graph (``meta``: a JSON document; ``w{i}_kernel``/``w{i}_bias``: the
weights of node i, canonical layout, float64), the source's values at the failing layer's frontier in
the port's layout (``given{i}``), what the port computed there (``observed``), the float64 reference
(``reference``) and its derived bound (``bound``), all canonical, and the model input (``x``).
``<stem>.py`` rebuilds the port's operations since its previous layers, runs them in the port's
framework on the saved values, and exits 1 while the output leaves the bound.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from layer_conformance.adapters.graph import ModelGraph, Node
from layer_conformance.suites.counterexamples import _write_atomic
from layer_conformance.suites.serialize import spec_from_json, spec_to_json

if TYPE_CHECKING:
    from layer_conformance.suites.port.check import LayerReport, _Runner

SCHEMA = "layer-conformance/port-counterexample/v1"


def graph_to_json(graph: ModelGraph) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    nodes, arrays = [], {}
    for i, node in enumerate(graph.nodes):
        row: dict[str, Any] = {"op": node.op, "name": node.name, "inputs": list(node.inputs)}
        if node.spec is not None:
            row["spec"] = spec_to_json(node.spec)
            row["channels_first"] = node.channels_first
            for key, value in (node.weights or {}).items():
                arrays[f"w{i}_{key}"] = np.asarray(value).astype(np.float64)
        for key in ("activation", "shape", "perm", "axes", "reduce"):
            value = getattr(node, key)
            if value is not None:
                row[key] = list(value) if isinstance(value, tuple) else value
        nodes.append(row)
    return {"framework": graph.framework, "dtype": graph.dtype, "description": graph.description,
            "nodes": nodes}, arrays


def graph_from_json(doc: dict[str, Any], arrays: Any) -> ModelGraph:
    nodes = []
    for i, row in enumerate(doc["nodes"]):
        kwargs: dict[str, Any] = {}
        if "spec" in row:
            kwargs["spec"] = spec_from_json(row["spec"])
            kwargs["channels_first"] = bool(row.get("channels_first"))
            kwargs["weights"] = {key: np.asarray(arrays[f"w{i}_{key}"]) for key in ("kernel", "bias")
                                 if f"w{i}_{key}" in arrays}
        for key in ("shape", "perm", "axes"):
            if key in row:
                kwargs[key] = tuple(int(v) for v in row[key])
        for key in ("activation", "reduce"):
            if key in row:
                kwargs[key] = row[key]
        nodes.append(Node(row["op"], row["name"], tuple(row["inputs"]), **kwargs))
    return ModelGraph(nodes, doc["framework"], doc["dtype"], doc.get("description", ""))


def _stem(model: str, framework: str, layer: int) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"port-{model}-{framework}-layer{layer:02d}")


def save(folder: Path, runner: "_Runner", layer: "LayerReport", example: dict[str, Any],
         given: dict[int, np.ndarray], observed: tuple[np.ndarray, np.ndarray]) -> tuple[str, str]:
    """Write the example of a failing layer; returns (npz path, the command that replays it)."""
    from layer_conformance.suites.port.reference import canonical_of, propagate, segment

    folder.mkdir(parents=True, exist_ok=True)
    result = runner.result
    stem = _stem(result.model, result.target["framework"], layer.layer)
    source, target = runner.source_graph, runner.target_graph
    frontier, nodes = segment(source, layer.source_index)
    values, bounds = propagate(source, given, nodes)
    s_node = source.nodes[layer.source_index]
    t_frontier, _ = segment(target, layer.target_index)
    doc, arrays = graph_to_json(target)
    meta = {"schema": SCHEMA, "model": result.model, "layer": layer.layer, "label": layer.label,
            "name": layer.name, "target_index": layer.target_index, "graph": doc,
            "given": [int(f) for f in t_frontier], "source": result.source, "target": result.target,
            "message": result.message, "style": example.get("style"), "seed": example.get("data_seed")}
    for f in t_frontier:
        arrays[f"given{f}"] = np.asarray(runner._to_target(f, given[runner.of_target[f]])).astype(np.float64)
    arrays.update(observed=observed[1].astype(np.float64), reference=canonical_of(s_node, values[layer.source_index]),
                  bound=canonical_of(s_node, bounds[layer.source_index]),
                  x=np.asarray(example["x"]).astype(np.float64), meta=np.array(json.dumps(meta)))
    return _write(folder, stem, arrays, f"layer {layer.layer} ({layer.label}) of the port of {result.model} to "
                                        f"{result.target['framework']}")


def save_gradient(folder: Path, runner: "_Runner", layer: "LayerReport", param: str, example: dict[str, Any],
                  again: dict[str, Any]) -> tuple[str, str]:
    """Write the example of a failing parameter gradient: the port's input and cotangent, the reference
    gradient and its bound; the script runs the whole port forward and backward and compares."""
    folder.mkdir(parents=True, exist_ok=True)
    result = runner.result
    stem = _stem(result.model, result.target["framework"], layer.layer) + f"-d{param}"
    doc, arrays = graph_to_json(runner.target_graph)
    meta = {"schema": SCHEMA, "model": result.model, "layer": layer.layer, "label": layer.label, "name": layer.name,
            "target_index": layer.target_index, "graph": doc, "mode": "gradient", "param": param,
            "source": result.source, "target": result.target, "message": result.message,
            "style": example.get("style"), "seed": example.get("data_seed")}
    arrays.update(x=np.asarray(again["x"]).astype(np.float64), cotangent=np.asarray(again["cotangent"]).astype(np.float64),
                  reference=again["grads"][layer.source_index][param], bound=again["bounds"][layer.source_index][param],
                  meta=np.array(json.dumps(meta)))
    return _write(folder, stem, arrays, f"the {param} gradient of layer {layer.layer} ({layer.label}) of the port of "
                                        f"{result.model} to {result.target['framework']}")


def _write(folder: Path, stem: str, arrays: dict[str, Any], what: str) -> tuple[str, str]:
    """The .npz and the script that replays it; returns (npz path, the command that runs the script)."""
    npz = folder / f"{stem}.npz"
    _write_atomic(npz, lambda handle: np.savez(handle, **arrays), 0o644)
    script = folder / f"{stem}.py"
    text = (f'"""Replays {what}: exits 1 while it leaves the derived bound."""\n'
            "import sys\nfrom pathlib import Path\n\n"
            "from layer_conformance.suites.port.counterexample import replay\n\n"
            'sys.exit(replay(Path(__file__).with_suffix(".npz")))\n')
    _write_atomic(script, lambda handle: handle.write(text.encode()), 0o644)
    return str(npz), f"python {script.resolve()}"


def replay(path: str | Path) -> int:
    """Run the saved layer segment in the port's framework again; 1 while it leaves the bound, else 0."""
    from layer_conformance.suites.port.execute import Executor
    from layer_conformance.suites.port.reference import canonical_of, segment

    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        if meta.get("schema") != SCHEMA:
            print(f"{path}: not a port counterexample of this version ({meta.get('schema')!r})", file=sys.stderr)
            return 2
        graph = graph_from_json(meta["graph"], data)
        index = int(meta["target_index"])
        reference, bound = data["reference"], data["bound"]
        executor = Executor(graph, graph.framework)
        if meta.get("mode") == "gradient":
            dtype = executor.np_dtype
            values = executor.forward(data["x"].astype(dtype))
            out = executor.backward(values, data["cotangent"].astype(dtype))[1][index][meta["param"]]
            what = f"d{meta['param']} of layer {meta['layer']}"
        else:
            given = {int(f): data[f"given{f}"] for f in meta["given"]}
            _, nodes = segment(graph, index)
            out = canonical_of(graph.nodes[index], executor.forward(given=given, nodes=nodes)[index])
            what = f"layer {meta['layer']}"
    error = np.abs(out.astype(np.float64) - reference)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = float(np.max(np.where(error == 0, 0.0, error / bound))) if error.size else 0.0
    print(f"{what} ({meta['label']}) of {meta['model']} in {graph.framework}: max error {error.max():.3g}, "
          f"bound ratio {ratio:.3g} ({'within' if ratio <= 1 else 'exceeds'} the bound)")
    print(meta.get("message", ""))
    return 0 if ratio <= 1 else 1
