"""Plots for the HTML report, returned as PNG bytes or data: URIs so the page stays self-contained.

matplotlib is imported inside the functions: importing the reports package (the pytest plugin, the
CLI) must stay cheap and must not pick a GUI backend. Figures are built with the object API, not
pyplot, so no global figure state leaks between calls.
"""
from __future__ import annotations

import base64
import io
import math
import os
import pickle
import subprocess
import sys
from typing import Any, Sequence

DTYPE_COLOURS = {"float64": "tab:blue", "float32": "tab:orange", "float16": "tab:green", "bfloat16": "tab:red"}
OTHER_COLOURS = ("tab:purple", "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan")
# A spread wider than this many times between the smallest and largest positive value gets a log axis.
LOG_SPAN = 100.0
HIST_BINS = 40


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(width: float, height: float) -> Any:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=96, layout="constrained")


def _png(fig: Any) -> bytes:
    return palette_png(_render(fig))


def _render(fig: Any) -> bytes:
    """The figure as a full-colour (RGBA) PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    # No Software/date metadata: the same report gives the same bytes.
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


PALETTE_COLOURS = 256


def palette_png(png: bytes) -> bytes:
    """The same picture as an 8-bit palette PNG, about a third of the bytes.

    A plot has a handful of colours plus the anti-aliased shades between them, a few thousand
    in all; 256 keep it visibly the same (over a `ci` report's 62 plots, the mean pixel moved by at
    most 1.6 of 255 levels, and at most 0.3% of pixels by more than 16), and the embedded plots of
    such a report went from 3.7 MB to 1.1 MB. Plots are opaque (white background): no alpha to keep.
    Pillow (a dependency of matplotlib) quantizes deterministically, so the same report still gives
    the same bytes.
    """
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        quantized = image.convert("RGB").quantize(colors=PALETTE_COLOURS, method=Image.Quantize.FASTOCTREE,
                                                  dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    quantized.save(buffer, format="PNG")
    return buffer.getvalue()


def _label(value: Any, limit: int = 70) -> str:
    """Text from a report, made safe for matplotlib: '$' would start mathtext and can fail to parse."""
    raw = " ".join(str(value).split()) if value is not None else "–"
    if len(raw) > limit:
        raw = raw[: limit - 1] + "…"
    return raw.replace("$", r"\$")


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _series_key(result: dict[str, Any], several_devices: bool) -> str:
    dtype = result.get("dtype")
    key = str(dtype) if dtype is not None else "–"
    if several_devices:
        key += f" · {result.get('device')}"
    return key


def _colour(key: str, index: int) -> str:
    return DTYPE_COLOURS.get(key.split(" · ")[0], OTHER_COLOURS[index % len(OTHER_COLOURS)])


def _samples(result: dict[str, Any]) -> dict[str, list[Any]]:
    samples = result.get("samples")
    if not isinstance(samples, dict):
        return {}
    return {key: value for key, value in samples.items() if isinstance(value, list)}


def _series(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Results grouped into plot series by dtype (and device when several were used)."""
    results = [result for result in results if isinstance(result, dict)]
    several_devices = len({result.get("device") for result in results}) > 1
    groups: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        groups.setdefault(_series_key(result, several_devices), []).append(result)
    return groups


def _note(ax: Any, lines: list[str]) -> None:
    # Above the axes, not inside: a box in the corner would hide exactly the outliers that matter.
    if lines:
        ax.set_title("; ".join(lines), fontsize=8, loc="right", color="#444444")


def _legend(fig: Any, axes: list[Any]) -> None:
    """One legend for the figure, outside the axes so it covers no points."""
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=8)


def bound_ratio_histogram(results: list[dict[str, Any]], title: str = "") -> bytes | None:
    """Distribution of the per-example bound ratio, one outline per dtype; None without samples.

    Zeros cannot sit on a log axis and infinities in no bin: they are counted in a note instead.
    """
    import numpy as np

    series: dict[str, list[float]] = {}
    zeros = infinite = 0
    for key, group in _series(results).items():
        values = []
        for result in group:
            for raw in _samples(result).get("bound_ratio", []):
                if isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isinf(raw):
                    infinite += 1
                    continue
                value = _finite(raw)
                if value is not None:
                    values.append(value)
        if values:
            series[key] = values
    if not series:
        return None
    every = np.concatenate([np.asarray(values) for values in series.values()])
    positive = every[every > 0]
    # The bound (ratio 1) is always drawn, so it counts towards the spread: ratios of 1e-3 belong on a
    # log axis next to it, not squeezed into the left edge of a linear one.
    log_x = bool(every.min() >= 0 and positive.size > 0
                 and max(positive.max(), 1.0) / min(positive.min(), 1.0) > LOG_SPAN)
    if log_x:
        zeros = int((every == 0).sum())
        low, high = positive.min(), max(positive.max(), 1.0)
        edges = np.logspace(math.log10(low), math.log10(high), HIST_BINS + 1)
    else:
        edges = np.histogram_bin_edges(every, bins=HIST_BINS)

    fig = _figure(7.5, 3.8)
    ax = fig.add_subplot()
    for index, (key, values) in enumerate(series.items()):
        data = np.asarray(values)
        if log_x:
            data = data[data > 0]
        ax.hist(data, bins=edges, histtype="step", linewidth=1.6, color=_colour(key, index),
                label=f"{_label(key)} (n={len(values)})")
    ax.axvline(1.0, color="crimson", linestyle="--", linewidth=1.2, label="bound (ratio 1)")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("bound ratio = |y − y_ref| / derived bound" + (" (log scale)" if log_x else ""))
    ax.set_ylabel("examples")
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(_label(title, 90), fontsize=10)
    notes = []
    if zeros:
        notes.append(f"{zeros} exactly 0 not shown (log axis)")
    if infinite:
        notes.append(f"{infinite} infinite not shown")
    _note(ax, notes)
    _legend(fig, [ax])
    return _png(fig)


def _pairs(group: list[dict[str, Any]], metric: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for result in group:
        samples = _samples(result)
        for k, y in zip(samples.get("reduction_length", []), samples.get(metric, [])):
            k, y = _finite(k), _finite(y)
            if k is not None and y is not None:
                xs.append(k)
                ys.append(y)
    return xs, ys


def error_vs_length(results: list[dict[str, Any]], title: str = "") -> bytes | None:
    """Bound ratio and absolute error against the reduction length K, one colour per dtype.

    One panel per metric that has data; None when no example recorded both K and an error.
    Axes go logarithmic when the values are positive and spread over orders of magnitude.
    """
    groups = _series(results)
    panels = []
    for metric, ylabel in (("bound_ratio", "bound ratio"), ("abs_error", "max |y − y_ref|")):
        data = {key: _pairs(group, metric) for key, group in groups.items()}
        data = {key: pair for key, pair in data.items() if pair[0]}
        if data:
            panels.append((metric, ylabel, data))
    if not panels:
        return None

    fig = _figure(7.5 if len(panels) == 1 else 11.0, 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (metric, ylabel, data) in zip(axes, panels):
        xs_all = [x for xs, _ in data.values() for x in xs]
        ys_all = [y for _, ys in data.values() for y in ys]
        positive_x = [x for x in xs_all if x > 0]
        positive_y = [y for y in ys_all if y > 0]
        log_x = len(positive_x) == len(xs_all) and max(positive_x) / min(positive_x) >= 10
        log_y = (min(ys_all) >= 0 and bool(positive_y)
                 and max(positive_y + ([1.0] if metric == "bound_ratio" else [])) / min(positive_y) > LOG_SPAN)
        hidden = 0
        for index, (key, (xs, ys)) in enumerate(data.items()):
            if log_y:
                kept = [(x, y) for x, y in zip(xs, ys) if y > 0]
                hidden += len(xs) - len(kept)
                xs, ys = [x for x, _ in kept], [y for _, y in kept]
            ax.scatter(xs, ys, s=12, alpha=0.6, color=_colour(key, index), label=_label(key), edgecolors="none")
        if metric == "bound_ratio":
            ax.axhline(1.0, color="crimson", linestyle="--", linewidth=1.2, label="bound")
        if log_x:
            ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("reduction length K" + (" (log)" if log_x else ""))
        ax.set_ylabel(ylabel + (" (log)" if log_y else ""))
        ax.grid(True, which="major", alpha=0.3)
        _note(ax, [f"{hidden} exactly 0 not shown (log axis)"] if hidden else [])
    _legend(fig, list(axes))
    if title:
        fig.suptitle(_label(title, 110), fontsize=10)
    return _png(fig)


def error_vs_depth(results: list[dict[str, Any]], title: str = "") -> bytes | None:
    """Worst bound ratio (against the composed bound) after each layer of the depth check, per variant and dtype."""
    curves = {}
    for result in results:
        if result.get("check") != "depth" or not isinstance(result.get("depth_curve"), dict):
            continue
        for variant, values in result["depth_curve"].items():
            points = [(i + 1, _finite(v)) for i, v in enumerate(values or []) if _finite(v) is not None]
            if points:
                curves[f"{variant} {result.get('dtype', '')}"] = points
    if not curves:
        return None
    fig = _figure(7.5, 3.8)
    ax = fig.subplots()
    for index, (key, points) in enumerate(sorted(curves.items())):
        ax.plot([p[0] for p in points], [max(p[1], 1e-12) for p in points], marker="o", markersize=3,
                linewidth=1, color=_colour(key, index), label=_label(key))
    ax.axhline(1.0, color="crimson", linestyle="--", linewidth=1.2, label="composed bound")
    ax.set_yscale("log")
    ax.set_xlabel("depth (layers, ReLU between)")
    ax.set_ylabel("max error / composed bound (log)")
    ax.grid(True, which="major", alpha=0.3)
    _legend(fig, [ax])
    if title:
        fig.suptitle(_label(title, 110), fontsize=10)
    return _png(fig)


def _speed_rows(results: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    """(grid point, variant, relative time) of every speed row with a positive relative time."""
    rows = []
    for result in results:
        if not isinstance(result, dict) or result.get("check") != "speed" or not isinstance(result.get("speed"), list):
            continue
        several = len({r.get("dtype") for r in results if isinstance(r, dict) and r.get("check") == "speed"}) > 1
        for row in result["speed"]:
            if not isinstance(row, dict):
                continue
            value = _finite(row.get("relative"))
            if value is None or value <= 0:
                continue
            point = str(row.get("point") or row.get("shape") or "–")
            if several:
                point += f" · {result.get('dtype')}"
            rows.append((point, str(row.get("variant", "–")), value))
    return rows


def speed_plot(results: list[dict[str, Any]], title: str = "") -> bytes | None:
    """Median forward time of each variant over the fastest variant of its claim at the same grid
    point: horizontal bars on a log axis, one colour per grid point; None without speed rows."""
    rows = _speed_rows(results)
    if not rows:
        return None
    points = list(dict.fromkeys(point for point, _, _ in rows))
    fig = _figure(7.5, max(1.6, 0.28 * len(rows) + 1.0))
    ax = fig.add_subplot()
    labels = []
    for index, (point, variant, value) in enumerate(rows):
        colour_index = points.index(point)
        ax.barh(index, value, left=0, color=OTHER_COLOURS[colour_index % len(OTHER_COLOURS)],
                label=_label(point) if point not in [r[0] for r in rows[:index]] else None)
        labels.append(_label(variant, 55))
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    low = min(value for _, _, value in rows)
    ax.set_xlim(left=min(low, 1.0) / 1.5, right=max(value for _, _, value in rows) * 1.5)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("median forward time / fastest variant at the same grid point (log)")
    ax.grid(True, axis="x", which="major", alpha=0.3)
    _legend(fig, [ax])
    if title:
        fig.suptitle(_label(title, 110), fontsize=10)
    return _png(fig)


PORT_SERIES = (("isolated", "tab:blue", "o", "-"), ("propagated", "tab:orange", "s", "-"),
               ("gradient", "tab:green", "x", "none"))


def _port_points(entry: dict[str, Any]) -> tuple[dict[str, list[tuple[int, float | None]]], dict[str, int]]:
    """Per series, (layer index, ratio) of every layer, the ratio None where it cannot be drawn (missing:
    null, no comparison judged; or not finite), and the counts of zeros, missing and infinite ratios.

    The gradient series is the largest ratio over the layer's parameters; a layer without parameters has none.
    """
    layers = entry.get("layers") if isinstance(entry.get("layers"), list) else []
    points: dict[str, list[tuple[int, float | None]]] = {name: [] for name, *_ in PORT_SERIES}
    counts = {"zero": 0, "missing": 0, "infinite": 0}
    for position, layer in enumerate((item for item in layers if isinstance(item, dict)), 1):
        index = layer.get("layer")
        index = index if isinstance(index, int) and not isinstance(index, bool) else position
        gradient = layer.get("gradient") if isinstance(layer.get("gradient"), dict) else {}
        values = {"isolated": [layer.get("isolated")], "propagated": [layer.get("propagated")],
                  "gradient": list(gradient.values())}
        for name, raw in values.items():
            if not raw:
                continue
            numbers = [float(v) for v in raw if isinstance(v, (int, float)) and not isinstance(v, bool)
                       and not math.isnan(v)]
            worst = max(numbers) if numbers else None
            if worst is None:
                counts["missing"] += 1
            elif math.isinf(worst):
                counts["infinite"] += 1
                worst = None
            elif worst <= 0:
                counts["zero"] += 1
            points[name].append((index, worst))
    return points, counts


PORT_CEILING = 1e8


def port_ratio_plot(entry: dict[str, Any], title: str = "") -> bytes | None:
    """The bound ratio of every layer of a model port against its index (log y axis): isolated and propagated
    as lines, the worst parameter gradient as crosses, the bound (ratio 1) dashed and the first failing
    layer marked by a vertical line; None when no layer has a ratio to draw.

    A ratio of 0 has no place on a log axis: it is drawn as an open triangle at a floor a decade below the
    smallest positive ratio; missing (null) and infinite ratios are not drawn. The lines break at all of them,
    and a note counts each.
    """
    if not isinstance(entry, dict):
        return None
    points, counts = _port_points(entry)
    # a wrong port's ratios reach 1e30 and beyond (a reference exactly 0 has a bound of a few subnormals):
    # drawn at a ceiling, so that the layers around 1 stay readable
    over = sum(1 for series in points.values() for _, ratio in series if ratio is not None and ratio > PORT_CEILING)
    points = {name: [(index, None if ratio is None else min(ratio, PORT_CEILING)) for index, ratio in series]
              for name, series in points.items()}
    every = [ratio for series in points.values() for _, ratio in series if ratio is not None]
    if not every:
        return None
    floor = min([ratio for ratio in every if ratio > 0] + [1.0]) / 10
    layers = {index for series in points.values() for index, _ in series}
    first = entry.get("first_failure") if isinstance(entry.get("first_failure"), dict) else {}
    first_layer = first.get("layer")

    fig = _figure(min(11.0, max(7.5, 0.12 * len(layers) + 5.0)), 3.8)
    ax = fig.add_subplot()
    for name, colour, marker, linestyle in PORT_SERIES:
        series = points[name]
        if not any(ratio is not None for _, ratio in series):
            continue
        # NaN breaks the line: a layer without a drawable ratio is a gap, not a straight line across it.
        ax.plot([index for index, _ in series],
                [ratio if ratio is not None and ratio > 0 else math.nan for _, ratio in series], color=colour,
                marker=marker, markersize=4, linewidth=1.2, linestyle=linestyle, label=name)
        zeros = [index for index, ratio in series if ratio is not None and ratio <= 0]
        if zeros:
            ax.scatter(zeros, [floor] * len(zeros), s=40, marker="v", facecolors="none", edgecolors=colour,
                       label="exactly 0 (drawn at the floor)")
    ax.axhline(1.0, color="crimson", linestyle="--", linewidth=1.2, label="bound (ratio 1)")
    if isinstance(first_layer, int) and not isinstance(first_layer, bool):
        ax.axvline(first_layer, color="crimson", linestyle=":", linewidth=1.5,
                   label=f"first failure: layer {first_layer}")
    ax.set_yscale("log")
    if counts["zero"]:
        ax.set_ylim(bottom=floor / 2)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("max error / derived bound (log)")
    ax.grid(True, which="major", alpha=0.3)
    notes = []
    if counts["zero"]:
        notes.append(f"{counts['zero']} exactly 0 drawn at {floor:.3g}")
    if counts["missing"]:
        notes.append(f"{counts['missing']} not judged (null) not shown")
    if counts["infinite"]:
        notes.append(f"{counts['infinite']} infinite not shown")
    if over:
        notes.append(f"{over} above {PORT_CEILING:.0e} drawn at {PORT_CEILING:.0e}")
    _note(ax, notes)
    _legend(fig, [ax])
    if title:
        fig.suptitle(_label(title, 110), fontsize=10)
    return _png(fig)


def claim_plots(results: list[dict[str, Any]], title: str = "") -> dict[str, Any]:
    """The plots for one claim as data: URIs (None where there is nothing to draw).

    A plot that fails to draw must not cost the whole report: its error is returned instead.
    """
    plots: dict[str, Any] = {"histogram": None, "scatter": None, "depth": None, "speed": None, "errors": []}
    for name, draw in (("histogram", bound_ratio_histogram), ("scatter", error_vs_length), ("depth", error_vs_depth),
                       ("speed", speed_plot)):
        try:
            png = draw(results, title)
        except Exception as exc:  # noqa: BLE001 - report data is arbitrary; keep the rest of the page
            plots["errors"].append(f"{name}: {exc.__class__.__name__}: {exc}")
            continue
        if png is not None:
            plots[name] = png_data_uri(png)
    return plots


def many_claim_plots(jobs: Sequence[tuple[list[dict[str, Any]], str]], workers: int | None = None) -> list[dict[str, Any]]:
    """`claim_plots` for each (results, title), in that order, drawn in parallel processes.

    A full report has about 60 plots at about 0.4 s each, the longest step of writing it: on two
    cores it takes half the time. Each process draws whole claims, so the bytes are the same as drawn
    in one. Where the processes fail (no interpreter to start, say) the plots are drawn here.
    """
    from layer_conformance.reports.cores import usable_cores

    workers = min(workers or usable_cores(), len(jobs))
    if workers > 1:
        try:
            return drawn_in_processes(jobs, workers)
        except (OSError, ValueError, EOFError, pickle.UnpicklingError):
            pass
    return [claim_plots(*job) for job in jobs]


def drawn_in_processes(jobs: Sequence[tuple[list[dict[str, Any]], str]], workers: int) -> list[dict[str, Any]]:
    """The plots drawn by `workers` child interpreters (`python -m layer_conformance.reports.plots`), jobs dealt round robin.

    Plain child processes, not multiprocessing: its spawn and forkserver methods import the caller's
    main script again in each child, which runs a script without a `__main__` guard a second time.
    """
    import tempfile

    chunks = [list(jobs[i::workers]) for i in range(workers)]
    with tempfile.TemporaryDirectory(prefix="conformance-plots-") as folder:
        children = []
        try:
            for index, chunk in enumerate(chunks):
                path = os.path.join(folder, f"jobs-{index}.pickle")
                with open(path, "wb") as handle:
                    pickle.dump(chunk, handle)
                children.append(subprocess.Popen([sys.executable, "-m", "layer_conformance.reports.plots", path],
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            drawn = []
            for child in children:
                out, err = child.communicate()
                if child.returncode != 0:
                    raise OSError(f"plot process exited with {child.returncode}: "
                                  f"{err.decode(errors='replace')[-500:]}")
                drawn.append(pickle.loads(out))
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
    return [drawn[i % workers][i // workers] for i in range(len(jobs))]


def _serve() -> None:
    """The child's side of `drawn_in_processes`: pickled jobs in the file named, their plots pickled on stdout."""
    with open(sys.argv[1], "rb") as handle:
        jobs = pickle.load(handle)
    sys.stdout.buffer.write(pickle.dumps([claim_plots(*job) for job in jobs]))


if __name__ == "__main__":
    _serve()
