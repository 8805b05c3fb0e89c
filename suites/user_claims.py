"""Claims from a user's own code: their model's exact layer geometries, checked like the catalog's.

A user claim says "this layer computes the same function in each of these frameworks". It is a
`Claim` like the catalog's, so it runs under every check the suites have (forward, gradient, batch,
params, init, speed; depth for dense layers), every dtype and every device, and lands in the same
reports. Three ways in, all validated exactly like the built-in catalog (catalog.validate: an error
names the row and the fix):

* `register_claims([...])` from the user's code (a conftest.py, or a module named by
  `--conformance-claims MODULE` / `conformance run --claims MODULE`); the built-in suites then run
  them beside the catalog;
* an entry point in the group `layer_conformance.claims` of an installed distribution: a callable
  returning claims, or a list of them (loaded when the suites are collected);
* `conformance_suite([...])` (layer_conformance.suites.user_suite), a test class for the user's own
  test file.

`layer_claim(spec, ...)` writes the claim for one layer: inputs are drawn around the layer's own
geometry (batch 1-3; each spatial length from the shortest the layer accepts to a few strides past
its dilated kernel) in every data style.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from hypothesis import strategies as st

from layer_conformance.adapters import FRAMEWORKS
from layer_conformance.adapters.spec import LayerSpec, SpecError
from layer_conformance.suites.catalog import CHECKS, CLAIMS, CLAIMS_BY_ID, CatalogError, Claim, Variant, validate
from layer_conformance.suites.strategies import Dims

ENTRY_POINT_GROUP = "layer_conformance.claims"
_REGISTERED: dict[str, Claim] = {}
_ENTRY_POINTS_LOADED = False
CONV_CHECKS = tuple(check for check in CHECKS if check != "depth")  # a stack needs output == input sizes


def _spec_of(dims: Dims) -> LayerSpec:
    return dims["spec"]


def _shape_of(dims: Dims) -> tuple[int, ...]:
    return dims["shape"]


def _least_length(spec: LayerSpec, axis: int) -> int:
    """The shortest input along an axis that the layer accepts (every framework: at least one output)."""
    reach = (spec.kernel_size[axis] - 1) * spec.dilation[axis] + 1
    if spec.padding in ("same", "causal"):
        return 1
    if spec.padding == "valid":
        return reach
    lo, hi = spec.padding[axis]
    least = max(1, reach - lo - hi)
    if spec.padding_mode == "reflect":
        least = max(least, lo + 1, hi + 1)
    elif spec.padding_mode == "circular":
        least = max(least, lo, hi)
    return least


def layer_dims(spec: LayerSpec, *, batch: tuple[int, int] = (1, 3),
               lengths: Sequence[tuple[int, int]] | None = None) -> st.SearchStrategy[Dims]:
    """Input sizes around one layer's geometry; `lengths`: a (low, high) range per spatial axis
    (dense: the length of the positions axis), instead of the default."""
    if spec.kind == "dense":
        low, high = (lengths or [(1, 4)])[0]
        return st.builds(lambda b, n: {"spec": spec, "shape": (b, n, spec.in_features), "B": b, "L": n,
                                       "K": spec.in_features, "N": spec.out_features},
                         st.integers(*batch), st.integers(low, high))
    if lengths is None:
        lengths = [(_least_length(spec, axis), _least_length(spec, axis) + 3 * spec.strides[axis] + 4)
                   for axis in range(spec.rank)]
    if len(lengths) != spec.rank:
        raise CatalogError(f"layer_claim: {len(lengths)} length ranges for a {spec.rank}-D convolution; "
                           f"give one (low, high) pair per spatial axis")
    axes = [st.integers(max(low, _least_length(spec, axis)), max(high, low, _least_length(spec, axis)))
            for axis, (low, high) in enumerate(lengths)]
    return st.builds(lambda b, *spatial: {"spec": spec, "shape": (b, *spatial, spec.in_features)},
                     st.integers(*batch), *axes)


def layer_claim(spec: LayerSpec, frameworks: Iterable[str] = FRAMEWORKS, *, id: str | None = None,
                title: str | None = None, source: str = "a layer of the user's model",
                batch: tuple[int, int] = (1, 3), lengths: Sequence[tuple[int, int]] | None = None,
                checks: Sequence[str] | None = None, dtypes: Sequence[str] | None = None) -> Claim:
    """The claim that `spec` computes the same function in each of `frameworks` (two or more).

    id: the claim's name in reports and test ids (default: built from the geometry). checks and
    dtypes: a subset of the suites' (default: all that apply)."""
    if not isinstance(spec, LayerSpec):
        raise CatalogError(f"layer_claim: expected a LayerSpec (LayerSpec.dense(...) or LayerSpec.conv(...)), "
                           f"got {type(spec).__name__}")
    frameworks = tuple(frameworks)
    if len(frameworks) < 2:
        raise CatalogError(f"layer_claim {id or spec.describe()}: name at least two frameworks to compare "
                           f"(of {', '.join(FRAMEWORKS)}); got {list(frameworks)}")
    if len(set(frameworks)) != len(frameworks):
        raise CatalogError(f"layer_claim {id or spec.describe()}: a framework is named twice in {list(frameworks)}")
    dims = layer_dims(spec, batch=batch, lengths=lengths)
    example = _example(spec, batch, lengths)
    claim_id = id or _default_id(spec)
    default_checks = CHECKS if spec.kind == "dense" else CONV_CHECKS
    extra: dict[str, Any] = {"checks": tuple(checks) if checks is not None else default_checks}
    if dtypes is not None:
        extra["dtypes"] = tuple(dtypes)
    return Claim(claim_id, title or f"{spec.describe()} agrees across {', '.join(frameworks)}", "equal", source,
                 dims, _shape_of, tuple(Variant(fw, _spec_of) for fw in frameworks), example, **extra)


def _example(spec: LayerSpec, batch: tuple[int, int], lengths: Sequence[tuple[int, int]] | None) -> Dims:
    if spec.kind == "dense":
        n = (lengths or [(1, 4)])[0][0]
        return {"spec": spec, "shape": (batch[0], n, spec.in_features), "B": batch[0], "L": n,
                "K": spec.in_features, "N": spec.out_features}
    spatial = tuple(max(_least_length(spec, axis), lengths[axis][0] if lengths else 0) for axis in range(spec.rank))
    return {"spec": spec, "shape": (batch[0], *spatial, spec.in_features)}


def _default_id(spec: LayerSpec) -> str:
    if spec.kind == "dense":
        return f"user-dense{spec.in_features}x{spec.out_features}"
    kernel = "x".join(map(str, spec.kernel_size))
    return f"user-conv{spec.rank}d-{spec.in_features}x{spec.out_features}-k{kernel}"


def check_claims(claims: Iterable[Any], where: str) -> list[Claim]:
    """Validate user claims exactly like the catalog; ids must be new. CatalogError names the row and the fix."""
    checked: list[Claim] = []
    seen: set[str] = set()
    for index, claim in enumerate(claims):
        if not isinstance(claim, Claim):
            raise CatalogError(f"{where}: item {index} is a {type(claim).__name__}, not a Claim; build claims with "
                               f"layer_conformance.layer_claim(LayerSpec...) or layer_conformance.Claim(...)")
        if claim.id in CLAIMS_BY_ID:
            raise CatalogError(f"{where}: claim id {claim.id!r} is a built-in claim's; give yours another id "
                               f"(layer_claim(..., id='my-...'))")
        if claim.id in seen or _REGISTERED.get(claim.id, claim) is not claim:
            raise CatalogError(f"{where}: claim id {claim.id!r} is used twice; give each claim its own id "
                               f"(layer_claim(..., id='...'))")
        try:
            validate(claim, known=set())
        except SpecError as error:
            raise CatalogError(f"{where}: claim {claim.id}: {error}") from None
        seen.add(claim.id)
        checked.append(claim)
    return checked


def register_claims(claims: Iterable[Claim]) -> list[Claim]:
    """Add claims to every run of the suites in this process (validated first; nothing is added on error)."""
    checked = check_claims(list(claims), "register_claims")
    for claim in checked:
        _REGISTERED[claim.id] = claim
    return checked


def registered_claims() -> tuple[Claim, ...]:
    """The user claims registered so far, entry points included."""
    load_entry_points()
    return tuple(_REGISTERED.values())


def all_claims() -> tuple[Claim, ...]:
    """The catalog, then the user claims."""
    return CLAIMS + registered_claims()


def claim_by_id(claim_id: str) -> Claim | None:
    return CLAIMS_BY_ID.get(claim_id) or _REGISTERED.get(claim_id)


def load_entry_points() -> None:
    """Claims that installed distributions declare in the `layer_conformance.claims` entry-point group."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {entry.name} = {entry.value} (group {ENTRY_POINT_GROUP})"
        try:
            value = entry.load()
        except Exception as error:  # noqa: BLE001 - a broken user module: name it
            raise CatalogError(f"{where} fails to load ({type(error).__name__}: {error}); fix or uninstall it") from None
        claims = value() if callable(value) else value
        for claim in check_claims(list(claims), where):
            _REGISTERED[claim.id] = claim


def load_modules(names: Iterable[str], folder: Path | None = None) -> None:
    """Import user modules that register claims (`--conformance-claims`): a module name, or a path to a
    .py file. A module that defines CLAIMS (a list) without registering them has that list registered."""
    if folder is not None and str(folder) not in sys.path:
        sys.path.insert(0, str(folder))  # the user's project folder, as pytest's rootdir would be
    for name in names:
        before = set(_REGISTERED)
        try:
            if name.endswith(".py"):
                path = Path(name).resolve()
                spec = importlib.util.spec_from_file_location(f"conformance_claims_{path.stem}", path)
                if spec is None or spec.loader is None or not path.is_file():
                    raise FileNotFoundError(f"no such file: {path}")
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            else:
                module = importlib.import_module(name)
        except CatalogError:
            raise
        except Exception as error:  # noqa: BLE001 - the user's module: name it
            raise CatalogError(f"--conformance-claims {name}: cannot import it ({type(error).__name__}: {error}); "
                               f"give a module importable from the current folder or a path to a .py file") from None
        claims = getattr(module, "CLAIMS", None)
        if set(_REGISTERED) == before and claims is not None:
            register_claims(claims)
        elif set(_REGISTERED) == before:
            raise CatalogError(f"--conformance-claims {name}: the module registers no claims; call "
                               f"layer_conformance.register_claims([...]) in it or define CLAIMS = [...]")


def unregister_all() -> None:
    """Forget every registered claim (for tests)."""
    _REGISTERED.clear()
