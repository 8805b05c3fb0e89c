"""`check_port(source, target)`: does a ported model compute what its source computes, layer by layer?

Both models are read into `ModelGraph`s (layer_conformance.adapters.models), their layers matched in
order, and inputs drawn by hypothesis from the model's input shape in every data style (with the
user's own inputs first). On every example each layer of the port is judged two ways against the
float64 reference of the source model (layer_conformance.suites.port.reference):

* isolated: the port's operations since its previous layers, run on what the source framework
  computed there, under the bound of that segment alone: errors do not pile up, a mistake shows
  where it is made;
* propagated: the port run end to end, under the bound composed through every earlier operation;

and the gradient of <c, output> (c drawn) with respect to the input and every parameter under the
bound composed backward. The first layer whose ratio exceeds 1 is named, the mistakes of
layer_conformance.suites.port.diagnosis are tested against what it computed, and the example is
saved with a script that replays it (layer_conformance.suites.port.counterexample).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from layer_conformance.adapters.graph import ModelGraph, UnsupportedModel, to_last
from layer_conformance.adapters.spec import SpecError, numpy_dtype
from layer_conformance.suites.port.diagnosis import Verdict, diagnose
from layer_conformance.suites.port.execute import Executor
from layer_conformance.suites.port.reference import backward, canonical_of, layout_of, propagate, segment

MODES = ("isolated", "propagated", "gradient")
GRADIENTS = ("kernel", "bias")
SOURCE_CHECK_EXAMPLES = 3  # examples on which the port's own forward is run beside the graph as read


class PortError(AssertionError):
    """A port that does not compute what its source computes; the message names the layer and the diagnosis."""

    def __init__(self, message: str, result: "PortResult"):
        super().__init__(message)
        self.result = result


@dataclass
class Measure:
    """The worst of one comparison over the examples."""

    ratio: float = 0.0
    error: float = 0.0
    judged: bool = False
    unjudged: int = 0  # comparisons with an infinite bound somewhere
    worst: Any = None  # what the worst example needs to be looked at again

    def note(self, observed: np.ndarray, expected: np.ndarray, bound: np.ndarray, example: Any) -> float:
        if np.shape(observed) != np.shape(expected):  # e.g. a stride or padding that changes a length
            self.judged = True
            if self.worst is None or self.ratio < math.inf:
                self.worst = example
            self.ratio = self.error = math.inf
            return math.inf
        error = np.abs(np.asarray(observed, dtype=np.float64) - expected)
        error = np.where(np.isfinite(error), error, np.inf)
        finite = np.isfinite(bound)
        if not finite.all():
            self.unjudged += 1
        if error.size == 0:
            return 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(error == 0, 0.0, error / np.where(finite, bound, np.inf))
        worst = float(np.max(ratio))
        self.error = max(self.error, float(np.max(error)))
        self.judged = self.judged or bool(finite.any())
        if self.worst is None or worst > self.ratio:
            self.worst = example
        self.ratio = max(self.ratio, worst)
        return worst

    @property
    def failed(self) -> bool:
        return not self.ratio <= 1.0

    def as_ratio(self) -> float | None:
        return self.ratio if self.judged and math.isfinite(self.ratio) else None


@dataclass
class LayerReport:
    layer: int  # 1-based, in the source's order
    source_index: int
    target_index: int
    name: str
    target_name: str
    label: str
    variant: str
    isolated: Measure = field(default_factory=Measure)
    propagated: Measure = field(default_factory=Measure)
    gradients: dict[str, Measure] = field(default_factory=dict)
    # the layer's input is compared too where both models reach it from their previous layers through
    # elementwise operations only (activations, adds): then its layout is the layers' own. A flatten, reshape
    # or permute on the way may legitimately be folded into the layer's weights (a dense kernel's rows
    # permuted instead of the activations): there only the output is compared.
    input_comparable: bool = False

    def measures(self) -> dict[str, Measure]:
        return {"isolated": self.isolated, "propagated": self.propagated,
                **{f"gradient {name}": m for name, m in self.gradients.items()}}

    @property
    def failed(self) -> bool:
        return any(m.failed for m in self.measures().values())


@dataclass
class PortResult:
    model: str
    source: dict[str, Any]
    target: dict[str, Any]
    dtype: str
    device: str
    layers: list[LayerReport]
    examples: int = 0
    output: Measure = field(default_factory=Measure)
    input_gradient: Measure = field(default_factory=Measure)
    first_failure: dict[str, Any] | None = None
    verdicts: list[Verdict] = field(default_factory=list)
    error: str | None = None
    framework_seconds: float = 0.0  # inside the layers' and activations' forward and VJP calls
    build_seconds: float = 0.0  # reading, porting and building the models and their layers
    seconds: float = 0.0
    counterexample: str | None = None
    repro: str | None = None

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        measures = [m for layer in self.layers for m in layer.measures().values()] + [self.output, self.input_gradient]
        if any(m.failed for m in measures):
            return "failed"
        if self.examples == 0 or not self.output.judged or any(m.unjudged for m in measures):
            return "measured"
        return "passed"

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def message(self) -> str:
        if self.error:
            return f"{self.model}: {self.error}"
        if self.first_failure is None:
            worst = max((m.ratio for layer in self.layers for m in layer.measures().values()), default=0.0)
            if self.status == "measured":
                return (f"{self.model}: nothing failed, but some comparisons could not be judged (an infinite bound); "
                        f"this is a measurement, not a pass")
            return (f"{self.model}: every layer within its bound over {self.examples} examples "
                    f"(worst bound ratio {worst:.3g})")
        failure = self.first_failure
        head = f"layer {failure['layer']} ({failure['label']}) at {failure['name']!r}"

        ratio = _number(failure["ratio"])
        best = self.verdicts[0] if self.verdicts else None
        if failure["mode"] == "propagated":
            return (f"{head}: within its bound in isolation but not end to end (propagated ratio {ratio}): errors "
                    f"build up beyond what rounding allows through the layers before it")
        if failure["mode"].startswith("gradient"):
            return (f"{head}: the forward pass is within its bounds, the {failure['mode']} is not (ratio {ratio}): "
                    f"the backward pass of this layer or of one after it computes something else")
        if failure["mode"] in ("output", "input gradient"):
            return f"{self.model}: every layer is within its bound but the {failure['mode']} is not (ratio {ratio})"
        if best is not None and best.ratio <= 1.0:
            return (f"{head}: consistent with {best.title} (ratio {_number(best.ratio)} under that hypothesis, "
                    f"{ratio} as ported, {failure['mode']})")
        closest = f" (closest: {best.title}, ratio {_number(best.ratio)})" if best and math.isfinite(best.ratio) else ""
        return f"{head}: exceeds its bound ({failure['mode']} ratio {ratio}); no catalogued porting mistake explains it" \
            + closest

    def raise_for_status(self) -> "PortResult":
        """Raise PortError unless the port passed; returns self otherwise."""
        if self.status != "passed":
            lines = [self.message]
            if self.counterexample:
                lines.append(f"  counterexample: {self.counterexample}")
            if self.repro:
                lines.append(f"  repro: {self.repro}")
            raise PortError("\n".join(lines), self)
        return self


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "inf"
    return f"{value:.2g}" if value < 1e3 else f"{value:.1e}"


# ---- matching the two models ---------------------------------------------------------------------

def _signature(graph: ModelGraph, index: int) -> tuple:
    spec = graph.nodes[index].spec
    assert spec is not None
    return (spec.kind, spec.rank, spec.in_features, spec.out_features, spec.kernel_size, spec.groups, spec.bias)


def match_layers(source: ModelGraph, target: ModelGraph) -> list[tuple[int, int]]:
    """(source node, target node) of every layer: in order, the first unmatched target layer of the same
    geometry (kind, features, kernel, groups, bias; padding and strides may be what a port got wrong)."""
    free = list(target.layers())
    pairs = []
    for number, i in enumerate(source.layers(), start=1):
        found = next((j for j in free if _signature(target, j) == _signature(source, i)), None)
        if found is None:
            node = source.nodes[i]
            raise UnsupportedModel(f"layer {number} of the source ({node.label()} at {node.name!r}) has no layer of "
                                   f"the same geometry in the port; the port must have one layer per source layer")
        free.remove(found)
        pairs.append((i, found))
    if free:
        extra = target.nodes[free[0]]
        raise UnsupportedModel(f"the port has a layer the source lacks ({extra.label()} at {extra.name!r})")
    return pairs


def _axes_map(source_shape: tuple[int, ...], target_shape: tuple[int, ...], what: str) -> tuple[int, ...] | None:
    """None when the layouts agree, else the permutation (batch included) from the source's to the port's."""
    if source_shape == target_shape:
        return None
    perm = to_last(len(source_shape) + 1)
    if tuple(((0,) + source_shape)[p] for p in perm[1:]) == target_shape:
        return perm
    raise UnsupportedModel(f"the {what} of the source has shape {source_shape} and the port's {target_shape}; "
                           f"they must be equal, or channels-first and channels-last forms of one shape")


# ---- the check ---------------------------------------------------------------------------------

def check_port(source: Any, target: Any = None, *, to: str | None = None,
               source_params: Mapping[str, Any] | None = None, target_params: Mapping[str, Any] | None = None,
               input_shape: Sequence[int] | None = None, examples: int = 50, batch: tuple[int, int] = (1, 4),
               styles: Sequence[str] | None = None, inputs: Iterable[np.ndarray] = (), gradients: bool = True,
               device: str = "cpu", name: str | None = None, out: str | Path | None = None,
               on_example: Callable[[np.ndarray, int], None] | None = None) -> "PortResult":
    """Check a port of `source` (a live torch, Keras or Flax model) layer by layer.

    target: the ported model; or `to` ("torch", "keras", "flax.linen", "flax.nnx") to port it with
    `convert_model` first. *_params: a Flax linen model's variables. input_shape: one example's shape,
    batch left out, in the source's layout (needed for torch and Flax models). examples: drawn inputs;
    batch: the range of batch sizes; styles: data styles (default: all); inputs: the user's own inputs,
    checked first. out: a folder for the counterexample and its repro script. on_example(x, number): called
    before each example runs (`conformance port` keeps it on disk, so that a crash names its input).

    Returns a `PortResult` (`.status`, `.message`, per-layer `.layers`); `.raise_for_status()` raises
    PortError unless it passed.
    """
    from layer_conformance.adapters import class_name
    from layer_conformance.adapters.models import convert_model, model_framework, read_model, run_model

    started = time.perf_counter()
    if (target is None) == (to is None):
        raise ValueError("check_port: pass either the ported model (target=...) or a framework to port to (to=...)")
    source_graph = read_model(source, source_params, input_shape=input_shape)
    if to is not None:
        target = convert_model(source_graph, to, device=device)
        target_params = target[1] if isinstance(target, tuple) else None
        target = target[0] if isinstance(target, tuple) else target
    target_framework = model_framework(target)
    target_graph = _read_target(target, target_params, source_graph, target_framework)
    porting = time.perf_counter() - started  # reading, porting and building: framework work (tracing, layers)
    if target_graph.dtype != source_graph.dtype:
        raise UnsupportedModel(f"the source computes in {source_graph.dtype} and the port in {target_graph.dtype}; "
                               f"check a port in the source's dtype")
    border = [source_graph.nodes[i] for i in source_graph.layers() if source_graph.nodes[i].spec.padding_mode != "zeros"]
    if gradients and border:
        raise UnsupportedModel(f"the gradient check's reference covers zero padding only, and layer {border[0].name!r} "
                               f"pads with {border[0].spec.padding_mode!r}; check its forward pass alone "
                               f"(gradients=False, --no-gradients)")
    pairs = match_layers(source_graph, target_graph)
    in_perm = _axes_map(source_graph.input_shape, target_graph.input_shape, "input")
    out_perm = _axes_map(source_graph.shapes[-1], target_graph.shapes[-1], "output")
    result = PortResult(name or source_graph.description or type(source).__name__,
                        {"framework": source_graph.framework, "description": source_graph.description},
                        {"framework": target_framework,
                         "description": f"convert_model(..., {to!r})" if to else target_graph.description,
                         "keras_backend": _keras_backend(target_framework)},
                        source_graph.dtype, device, [])
    for number, (i, j) in enumerate(pairs, start=1):
        node, port_node = source_graph.nodes[i], target_graph.nodes[j]
        result.layers.append(LayerReport(number, i, j, node.name, port_node.name, node.label(),
                                         f"{target_framework}.{class_name(target_framework, port_node.spec)}",
                                         input_comparable=_elementwise_path(source_graph, i)
                                         and _elementwise_path(target_graph, j)))
    runner = _Runner(source_graph, target_graph, pairs, in_perm, out_perm, result, device, gradients)
    runner.on_example = on_example
    own_inputs = [np.asarray(x) for x in inputs]
    for k, x in enumerate(own_inputs):
        runner.example(x, seed=k, native=(target, target_params, run_model))
    _draw(runner, examples, batch, styles, (target, target_params, run_model))
    result.framework_seconds = runner.source.framework_seconds + runner.target.framework_seconds
    result.build_seconds = porting + runner.source.build_seconds + runner.target.build_seconds
    runner.finish(out)
    result.seconds = time.perf_counter() - started
    return result


def _elementwise_path(graph: ModelGraph, index: int) -> bool:
    """Whether the layer's input is computed from earlier layers (or the input) by elementwise operations only,
    and is not itself a layer's output or the model input (given exactly to both models)."""
    frontier, nodes = segment(graph, index)
    return len(nodes) > 1 and all(graph.nodes[k].op in ("act", "add") for k in nodes if k != index)


def _keras_backend(framework: str) -> str | None:
    if framework != "keras":
        return None
    from layer_conformance.adapters import keras_backend

    return keras_backend()


def _read_target(target: Any, params: Mapping[str, Any] | None, source: ModelGraph, framework: str) -> ModelGraph:
    """The port as a graph; its input shape (where the reader needs one) is the source's, channels-last for a
    channels-last framework when the source's input is channels-first."""
    from layer_conformance.adapters.graph import input_channels_first
    from layer_conformance.adapters.models import CHANNELS_FIRST, read_model

    shape = source.input_shape
    if input_channels_first(source) and framework not in CHANNELS_FIRST:
        shape = (*shape[1:], shape[0])
    return read_model(target, params, input_shape=shape)


def _draw(runner: "_Runner", examples: int, batch: tuple[int, int], styles: Sequence[str] | None, native: Any) -> None:
    from hypothesis import HealthCheck, Phase, given, settings, strategies as st

    from layer_conformance.suites.strategies import STYLES, data_source, random_array

    if examples <= 0:
        return
    draw_styles = tuple(styles or STYLES)

    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(size=st.integers(*batch), source=data_source(styles=draw_styles), seed=st.integers(0, 2 ** 32 - 1))
    def run(size: int, source: tuple[str, int], seed: int) -> None:
        style, data_seed = source
        x = random_array(np.random.default_rng(data_seed), (size, *runner.source_graph.input_shape), style,
                         runner.source_graph.dtype)
        runner.example(x, seed=seed, native=native, style=style, data_seed=data_seed)

    run()


class _Runner:
    """One port's comparisons over the examples."""

    def __init__(self, source: ModelGraph, target: ModelGraph, pairs: list[tuple[int, int]],
                 in_perm: tuple[int, ...] | None, out_perm: tuple[int, ...] | None, result: PortResult,
                 device: str, gradients: bool):
        self.source_graph, self.target_graph, self.pairs = source, target, pairs
        self.in_perm, self.out_perm, self.result, self.gradients = in_perm, out_perm, result, gradients
        self.source = Executor(source, source.framework, device)
        self.target = Executor(target, result.target["framework"], device)
        self.of_target = {j: i for i, j in pairs}
        self.of_target[0] = 0
        self.dtype = numpy_dtype(source.dtype)
        self.native_checked = 0
        self.on_example: Callable[[np.ndarray, int], None] | None = None
        if gradients:
            for layer in result.layers:
                node = source.nodes[layer.source_index]
                layer.gradients = {name: Measure() for name in GRADIENTS if name in (node.weights or {})}

    def _to_target(self, index: int, value: np.ndarray) -> np.ndarray:
        """A source node's value in the layout of its counterpart in the port (`index`: the port's node)."""
        if index == 0:
            return value if self.in_perm is None else np.transpose(value, self.in_perm)
        source_node = self.source_graph.nodes[self.of_target[index]]
        return layout_of(self.target_graph.nodes[index], canonical_of(source_node, value))

    def example(self, x: np.ndarray, *, seed: int, native: Any, style: str = "user", data_seed: int | None = None
                ) -> None:
        x = np.asarray(x).astype(self.dtype)
        if x.ndim == 0 or len(x) == 0 or x.shape[1:] != self.source_graph.input_shape:
            raise UnsupportedModel(f"an input of shape {x.shape} for a model whose input is (N, "
                                   f"{', '.join(map(str, self.source_graph.input_shape))})")
        example = {"x": x, "seed": seed, "style": style, "data_seed": data_seed}
        result = self.result
        if self.on_example is not None:
            self.on_example(x, result.examples + 1)
        result.examples += 1
        src_vals = self.source.forward(x)
        ref_vals, ref_bounds = propagate(self.source_graph, {0: x})
        port_x = self._to_target(0, x)
        port_vals = self.target.forward(port_x)
        last_s, last_t = len(self.source_graph.nodes) - 1, len(self.target_graph.nodes) - 1
        port_out = port_vals[last_t] if self.out_perm is None else np.transpose(port_vals[last_t],
                                                                               np.argsort(self.out_perm))
        result.output.note(port_out, ref_vals[last_s], ref_bounds[last_s], example)
        if self.native_checked < SOURCE_CHECK_EXAMPLES:
            self._check_native(native, port_x, port_vals[last_t], ref_bounds[last_s])
        for layer in result.layers:
            i, j = layer.source_index, layer.target_index
            s_node, t_node = self.source_graph.nodes[i], self.target_graph.nodes[j]
            layer.propagated.note(canonical_of(t_node, port_vals[j]), canonical_of(s_node, ref_vals[i]),
                                  canonical_of(s_node, ref_bounds[i]), example)
            frontier, nodes = segment(self.source_graph, i)
            given = {f: src_vals[f] for f in frontier}
            iso_vals, iso_bounds = propagate(self.source_graph, given, nodes)
            observed = self._isolated(layer, src_vals)
            for k, (s_at, value) in enumerate(zip((s_node.inputs[0], i), observed)):
                if k == 0 and not layer.input_comparable:
                    continue
                layer.isolated.note(value, canonical_of(s_node, iso_vals[s_at]), canonical_of(s_node, iso_bounds[s_at]),
                                    example)
        if self.gradients:
            self._gradients(x, example, ref_vals, ref_bounds, port_vals, seed)

    def _gradients(self, x: np.ndarray, example: dict, ref_vals: dict, ref_bounds: dict, port_vals: dict,
                   seed: int) -> None:
        from layer_conformance.suites.strategies import random_array

        last_s = len(self.source_graph.nodes) - 1
        cotangent = random_array(np.random.default_rng(seed), ref_vals[last_s].shape, "normal", self.source_graph.dtype)
        g, eps, grads, grad_bounds = backward(self.source_graph, ref_vals, ref_bounds, cotangent)
        port_cotangent = cotangent if self.out_perm is None else np.transpose(cotangent, self.out_perm)
        dx, port_grads = self.target.backward(port_vals, port_cotangent)
        if self.in_perm is not None:
            dx = np.transpose(dx, np.argsort(self.in_perm))
        self.result.input_gradient.note(dx, g[0], eps[0], example)
        for layer in self.result.layers:
            for name, measure in layer.gradients.items():
                measure.note(port_grads[layer.target_index][name], grads[layer.source_index][name],
                             grad_bounds[layer.source_index][name], example)

    def _check_native(self, native: Any, port_x: np.ndarray, as_read: np.ndarray, bound: np.ndarray) -> None:
        """The port's own forward pass against the graph as read: a model the reader misread is an error."""
        model, params, run_model = native
        self.native_checked += 1
        own = np.asarray(run_model(model, port_x, params)).astype(np.float64)
        if own.shape != as_read.shape:
            raise UnsupportedModel(f"the port's own forward pass gives shape {own.shape}, the model as read "
                                   f"{as_read.shape}: it computes something the reader did not see")
        port_bound = bound if self.out_perm is None else np.transpose(bound, self.out_perm)
        gap = np.abs(own - as_read.astype(np.float64))
        if np.any(gap > 2 * port_bound):  # both are implementations of one function: each within the bound
            raise UnsupportedModel(f"the port's own forward pass differs from the model as read by up to "
                                   f"{float(gap.max()):.3g}, over twice the bound: the model computes something the "
                                   f"reader did not see (an operation outside the supported set?)")

    def finish(self, out: str | Path | None) -> None:
        """Name the first failing layer and test the catalogued mistakes against it.

        The first layer whose forward output (isolated, then propagated) exceeds its bound is where a
        mistake is made; only where no forward output fails is a gradient failure named, at the last
        layer that shows one, since the backward pass enters the model there.
        """
        result = self.result
        chosen: tuple[LayerReport, str, Measure] | None = None
        for layer in result.layers:
            for mode, measure in (("isolated", layer.isolated), ("propagated", layer.propagated)):
                if measure.failed and chosen is None:
                    chosen = (layer, mode, measure)
        if chosen is None:
            for layer in reversed(result.layers):
                failing = [(f"gradient {k}", m) for k, m in layer.gradients.items() if m.failed]
                if failing:
                    chosen = (layer, *failing[0])
                    break
        if chosen is None:
            if result.output.failed or result.input_gradient.failed:
                which = "output" if result.output.failed else "input gradient"
                measure = result.output if result.output.failed else result.input_gradient
                result.first_failure = {"layer": None, "name": which, "label": which, "mode": which,
                                        "ratio": measure.ratio if math.isfinite(measure.ratio) else None,
                                        "variant": ""}
            return
        layer, mode, measure = chosen
        result.first_failure = {"layer": layer.layer, "name": layer.name, "label": layer.label, "mode": mode,
                                "ratio": measure.ratio if math.isfinite(measure.ratio) else None,
                                "variant": layer.variant}
        example = measure.worst
        if mode.startswith("gradient"):
            if out is not None:
                from layer_conformance.suites.port.counterexample import save_gradient

                result.counterexample, result.repro = save_gradient(Path(out), self, layer, mode.split()[-1],
                                                                    example, self.gradient_example(example))
            return
        given, observed = self._isolated_inputs(layer, example["x"])
        if mode == "isolated":  # a mistake made in this layer's segment: which one?
            result.verdicts = diagnose(self.source_graph, layer.source_index, given, observed, result.device)
        if out is not None:
            from layer_conformance.suites.port.counterexample import save

            result.counterexample, result.repro = save(Path(out), self, layer, example, given, observed)

    def gradient_example(self, example: dict) -> dict[str, Any]:
        """One example's gradients again: the port's input and cotangent, the reference gradients and bounds."""
        from layer_conformance.suites.strategies import random_array

        x = example["x"]
        ref_vals, ref_bounds = propagate(self.source_graph, {0: x})
        last_s = len(self.source_graph.nodes) - 1
        cotangent = random_array(np.random.default_rng(example["seed"]), ref_vals[last_s].shape, "normal",
                                 self.source_graph.dtype)
        _, _, grads, grad_bounds = backward(self.source_graph, ref_vals, ref_bounds, cotangent)
        port_cotangent = cotangent if self.out_perm is None else np.transpose(cotangent, self.out_perm)
        return {"x": self._to_target(0, x), "cotangent": port_cotangent, "grads": grads, "bounds": grad_bounds}

    def _isolated(self, layer: LayerReport, src_vals: Mapping[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The port's values at the layer's input and output (canonical layout), its segment run on the
        source's values at the frontier."""
        t_frontier, t_nodes = segment(self.target_graph, layer.target_index)
        t_given = {f: self._to_target(f, src_vals[self.of_target[f]]) for f in t_frontier}
        values = self.target.forward(given=t_given, nodes=t_nodes)
        t_node = self.target_graph.nodes[layer.target_index]
        return canonical_of(t_node, values[t_node.inputs[0]]), canonical_of(t_node, values[layer.target_index])

    def _isolated_inputs(self, layer: LayerReport, x: np.ndarray
                         ) -> tuple[dict[int, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """The source's values at the layer's frontier and the port's isolated input and output, for one input."""
        src_vals = self.source.forward(x)
        frontier, _ = segment(self.source_graph, layer.source_index)
        seen_input, seen_output = self._isolated(layer, src_vals)
        return {f: src_vals[f] for f in frontier}, (seen_input if layer.input_comparable else None, seen_output)


def load_inputs(path: str | Path) -> list[np.ndarray]:
    """User examples from a .npy (one batch) or .npz (every array a batch)."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return [data[k] for k in data.files]
        return [np.load(path, allow_pickle=False)]
    except (OSError, ValueError) as exc:
        raise SpecError(f"{path}: cannot read inputs ({exc}); pass a .npy array or an .npz of arrays, each "
                        f"(N, *input_shape)") from None
