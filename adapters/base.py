"""The adapter protocol every framework module implements, and the shared boundary checks."""
from __future__ import annotations

import abc
import contextlib
import importlib.metadata
import weakref
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from .spec import DTYPES, LayerSpec, SpecError, Weights, check_weights, numpy_dtype

DEVICES = ("cpu", "gpu")

# Called before every framework call (build, forward, vjp) with (stage, framework, variant, spec, arrays):
# the suites' flight recorder (reports/flight.py) keeps it on disk, so a call that kills its process
# can still be named and reproduced. None: nothing observes (the default).
CallObserver = Callable[[str, str, str, LayerSpec, Mapping[str, Any]], None]
_OBSERVER: CallObserver | None = None


def set_call_observer(observer: CallObserver | None) -> None:
    global _OBSERVER
    _OBSERVER = observer


@contextlib.contextmanager
def calls_unobserved() -> Iterator[None]:
    """Calls inside are not observed: timing loops, where the observer's file writes would be timed too."""
    global _OBSERVER
    saved, _OBSERVER = _OBSERVER, None
    try:
        yield
    finally:
        _OBSERVER = saved


def _observe(stage: str, layer: "Layer", **arrays: Any) -> None:
    if _OBSERVER is not None:
        _OBSERVER(stage, layer.adapter.name, layer.name, layer.spec, {**layer.given_weights, **arrays})


class _Spares:
    """Native objects of layers that are gone, kept for reuse by adapters whose build is slow.

    Building a Keras layer on tensorflow or torch takes about 6 ms and assigning its weights about
    0.4 ms, and the depth check alone builds thousands. A native is lent to one live `Layer` at a
    time and comes back only once that Layer is garbage, so two live layers never share one.
    """

    PER_KEY = 4  # a depth stack keeps two of one geometry alive at once
    MAX_KEYS = 256

    def __init__(self) -> None:
        self._free: dict[tuple[Any, ...], list[Any]] = {}

    def take(self, key: tuple[Any, ...]) -> Any:
        free = self._free.get(key)
        try:
            return free.pop() if free else None
        except IndexError:  # emptied by a give-back running inside this call (garbage collection)
            return None

    def lend(self, key: tuple[Any, ...], layer: "Layer") -> None:
        weakref.finalize(layer, self._give_back, key, layer.native).atexit = False

    def _give_back(self, key: tuple[Any, ...], native: Any) -> None:
        if key not in self._free and len(self._free) >= self.MAX_KEYS:
            self._free.clear()
        free = self._free.setdefault(key, [])
        if len(free) < self.PER_KEY:
            free.append(native)

    def clear(self) -> None:
        self._free.clear()


_SPARES = _Spares()


def forget_built_layers() -> None:
    """Build every later layer anew (after patching a framework in a live process, e.g. to plant a fault)."""
    _SPARES.clear()


def package_version(distribution: str) -> str | None:
    """Installed version without importing the package (fast, and safe when it is broken)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def canonical(array: Any, dtype: str) -> np.ndarray:
    """A NumPy array in the dtype under test (bfloat16 through ml_dtypes)."""
    return np.asarray(array).astype(numpy_dtype(dtype))


class Layer(abc.ABC):
    """A live framework layer built from canonical weights; speaks canonical NumPy only."""

    def __init__(self, adapter: "Adapter", spec: LayerSpec, dtype: str, device: str, native: Any):
        self.adapter, self.spec, self.dtype, self.device, self.native = adapter, spec, dtype, device, native
        self.given_weights: Weights = {}  # the canonical weights it was built with (set by Adapter.build)

    @property
    def name(self) -> str:
        """Variant name, ``<framework>.<Class>``."""
        return f"{self.adapter.name}.{self.adapter.class_name(self.spec)}"

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Output for a canonical (channels-last) input, as a canonical array in the layer's dtype."""
        self.spec.check_input(x.shape)
        x = canonical(x, self.dtype)
        _observe("forward", self, x=x)
        return self._forward(x)

    def vjp(self, x: np.ndarray, cotangent: np.ndarray) -> tuple[np.ndarray, Weights]:
        """Gradients of <cotangent, forward(x)> w.r.t. the input and the weights, canonical layout."""
        self.spec.check_input(x.shape)
        x, cotangent = canonical(x, self.dtype), canonical(cotangent, self.dtype)
        _observe("vjp", self, x=x, cotangent=cotangent)
        return self._vjp(x, cotangent)

    def param_count(self) -> int:
        return sum(int(v.size) for v in self.weights().values())

    @abc.abstractmethod
    def _forward(self, x: np.ndarray) -> np.ndarray: ...

    @abc.abstractmethod
    def _vjp(self, x: np.ndarray, cotangent: np.ndarray) -> tuple[np.ndarray, Weights]: ...

    @abc.abstractmethod
    def weights(self) -> Weights:
        """The layer's current weights in canonical layout and the layer's dtype."""

    def __repr__(self) -> str:
        return f"<{self.name} {self.spec.describe()} {self.dtype} on {self.device}>"


class Adapter(abc.ABC):
    """One framework (or one Flax API). Subclasses fill in the underscore methods."""

    name: str = ""
    distributions: tuple[str, ...] = ()
    classes: Mapping[tuple[str, int], str] = {}  # (kind, rank) -> framework class name
    policies: tuple[str, ...] = ()  # mixed-precision dtype policies the framework has (Keras)
    reuses_natives: bool = False  # True: `_rebuild` gives a dead layer's native new weights (see _Spares)

    def available(self) -> str | None:
        """None when importable, else the reason (names the framework and the install command)."""
        return None

    def versions(self) -> dict[str, str | None]:
        return {dist: package_version(dist) for dist in self.distributions}

    def class_name(self, spec: LayerSpec) -> str:
        return self.classes[(spec.kind, spec.rank)]

    def devices(self) -> list[str]:
        """Canonical device names this framework can run on here ("cpu", "gpu")."""
        return ["cpu"]

    def _devices_seen(self) -> tuple[str, ...]:
        """`devices()` asked once per adapter: the devices a process sees do not change while it runs,
        and asking (jax.devices, torch.cuda.is_available, ...) on every example cost more than the check."""
        seen = self.__dict__.get("_devices_cache")
        if seen is None:
            seen = self.__dict__["_devices_cache"] = tuple(self.devices())
        return seen

    def supports(self, spec: LayerSpec, dtype: str, device: str) -> str | None:
        """None if this framework can run the layer, else the reason (reported as the skip reason)."""
        reason = self.available()
        if reason:
            return reason
        if dtype not in DTYPES:
            return f"unknown dtype {dtype!r}"
        if dtype.startswith("mixed_") and dtype not in self.policies:
            return f"{dtype} is a Keras dtype policy; {self.name} layers have no such dtype"
        if device not in self._devices_seen():
            return f"{self.name} sees no {device} device here"
        if (spec.kind, spec.rank) not in self.classes:
            return f"{self.name} has no layer for {spec.describe()}"
        return self._supports(spec, dtype, device)

    def _supports(self, spec: LayerSpec, dtype: str, device: str) -> str | None:
        return None

    def build(self, spec: LayerSpec, weights: Mapping[str, np.ndarray], dtype: str = "float32",
              device: str = "cpu") -> Layer:
        """A layer with exactly these canonical weights (rounded to `dtype`)."""
        spec.validate()
        check_weights(spec, weights)
        reason = self.supports(spec, dtype, device)
        if reason:
            raise SpecError(f"{self.name} cannot build {spec.describe()} in {dtype} on {device}: {reason}")
        given = {k: canonical(v, dtype) for k, v in weights.items() if v is not None}
        if _OBSERVER is not None:
            _OBSERVER("build", self.name, f"{self.name}.{self.class_name(spec)}", spec, given)
        key = (self.name, spec, dtype, device)
        native = _SPARES.take(key) if self.reuses_natives else None
        layer = self._build(spec, given, dtype, device) if native is None else \
            self._rebuild(native, spec, given, dtype, device)
        if self.reuses_natives:
            _SPARES.lend(key, layer)
        layer.given_weights = given
        return layer

    @abc.abstractmethod
    def _build(self, spec: LayerSpec, weights: Weights, dtype: str, device: str) -> Layer: ...

    def _rebuild(self, native: Any, spec: LayerSpec, weights: Weights, dtype: str, device: str) -> Layer:
        """A layer around `native`, which a layer of this spec, dtype and device no longer uses, holding
        exactly these weights: what `_build` returns, for less. Only called when `reuses_natives`."""
        raise NotImplementedError(f"{self.name} builds every layer anew")

    @abc.abstractmethod
    def default_weights(self, spec: LayerSpec, seed: int) -> Weights:
        """Weights from the framework's own default initializers, canonical layout, float32."""

    def environment(self) -> dict[str, Any]:
        """Devices and numeric-mode flags, for the report's fingerprint (imports the framework)."""
        return {"devices": self.devices(), "numeric_modes": {}}

    def set_numerics(self, mode: str) -> None:
        """"strict": full float32 everywhere (TF32 off, highest matmul precision); "default": leave the
        framework's own defaults. Every check runs under the mode in force, and the report records it."""

    def declared_roundoff(self, spec: LayerSpec, dtype: str, device: str) -> str | None:
        """The declared precision mode (layer_conformance.suites.bounds.DECLARED_ROUNDOFF, e.g. "tf32") this
        framework computes a layer of `spec` in `dtype` on `device` in, under its settings now
        (layer_conformance.adapters.precision); None: the dtype's own unit roundoff."""
        return None


class UnavailableAdapter(Adapter):
    """Stands in for a framework that cannot be imported; every check with it skips with the reason."""

    def __init__(self, name: str, reason: str, classes: Mapping[tuple[str, int], str]):
        self.name, self._reason, self.classes = name, reason, classes

    def available(self) -> str | None:
        return self._reason

    def devices(self) -> list[str]:
        return []

    def _build(self, spec, weights, dtype, device):  # pragma: no cover - supports() refuses first
        raise SpecError(self._reason)

    def default_weights(self, spec, seed):
        raise SpecError(self._reason)

    def environment(self) -> dict[str, Any]:
        return {"devices": [], "numeric_modes": {}, "unavailable": self._reason}

    def set_numerics(self, mode: str) -> None:
        return None
