"""Flight recorder: what a test process was doing when it died, kept on disk before every framework call.

A framework that kills its process (a segfault, an abort, the OOM killer) or hangs takes the Python
state with it, so the pytest-xdist worker cannot report anything. Each worker therefore writes, before
every framework call (adapters' `build`, `forward`, `vjp`, observed through
`layer_conformance.adapters.base.set_call_observer`), one small record of the test and of the call: which test, claim,
dtype and device, which framework and layer, the geometry, and the arrays the layer was given. The
controller reads it when xdist reports the worker crashed (`describe_crash`) and turns it into an
`error` row with a saved counterexample and a command that reproduces the crash (`save_crash`).

Per worker process the folder `<run folder>/<pid>/` holds

* ``test.json``: the test that is running and its report row as known at its start;
* ``call.bin``: the framework call about to run, one JSON line, then its arrays (``np.save`` of x,
  kernel, bias, cotangent in turn, empty arrays where there is none); rewritten in place with one
  write per call, on a file kept open;
* ``fault.txt``: Python's faulthandler output: "Fatal Python error: Segmentation fault" with the
  stack for a fatal signal, or "Timeout (0:10:00)!" when the per-test limit was reached (the
  watchdog then ends the process, which xdist reports as a crash like any other).

This module imports no framework; NumPy only.
"""
from __future__ import annotations

import faulthandler
import functools
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, IO

import numpy as np

FOLDER_ENV = "CONFORMANCE_FLIGHT_DIR"
TIMEOUT_ENV = "CONFORMANCE_TIMEOUT"
DEFAULT_TIMEOUT_S = 900.0  # per test: a ci test takes seconds to a minute; only a hang reaches this
ARRAYS = ("x", "kernel", "bias", "cotangent")
CRASH_SCHEMA = "layer-conformance/crash/v1"

# faulthandler's first line for each fatal signal it catches
_FATAL = {"Segmentation fault": "SIGSEGV", "Aborted": "SIGABRT", "Bus error": "SIGBUS",
          "Floating-point exception": "SIGFPE", "Floating point exception": "SIGFPE",
          "Illegal instruction": "SIGILL"}


def _overwrite(fd: int, data: bytes) -> None:
    """Replace a kept-open file's content: one pwrite, no open/close (those cost ~0.5 ms on busy disks)."""
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


@functools.lru_cache(maxsize=4096)
def _call_line(stage: str, framework: str, variant: str, spec: Any, input_shape: tuple[int, ...] | None) -> bytes:
    """The call's JSON line up to its time stamp (without the closing brace): the same for every
    example of a geometry, so serialized once."""
    from layer_conformance.suites.serialize import spec_to_json

    line = json.dumps({"stage": stage, "framework": framework, "variant": variant, "layer": spec.describe(),
                       "spec": spec_to_json(spec), "input_shape": None if input_shape is None else list(input_shape)})
    return line[:-1].encode()


_NPY_HEADERS: dict[tuple[int, ...], bytes] = {}


def _npy_record(value: np.ndarray | None) -> list[Any]:
    """`np.save` of a float64 array (an empty one for None) as [header, data]: the header, the slow
    part of np.save, is formatted once per shape."""
    if value is None:
        value = np.empty(0)
    header = _NPY_HEADERS.get(value.shape)
    if header is None:
        buffer = io.BytesIO()
        np.save(buffer, np.zeros(value.shape), allow_pickle=False)
        header = _NPY_HEADERS[value.shape] = buffer.getvalue()[:buffer.tell() - value.nbytes]
    return [header, memoryview(value).cast("B")]


class Recorder:
    """The worker side: one per process; a call costs one in-memory serialization and one write."""

    def __init__(self, folder: Path, timeout_s: float | None):
        self.folder = folder / str(os.getpid())
        self.folder.mkdir(parents=True, exist_ok=True)
        self.timeout_s = timeout_s
        self.test: dict[str, Any] = {}
        self.owner: Any = None  # the pytest config that started it
        self.fault: IO[str] = open(self.folder / "fault.txt", "w", encoding="utf-8")  # noqa: SIM115 (kept open)
        self._test_fd = os.open(self.folder / "test.json", os.O_RDWR | os.O_CREAT, 0o644)
        self._call_fd = os.open(self.folder / "call.bin", os.O_RDWR | os.O_CREAT, 0o644)
        self._call_length = 0
        faulthandler.enable(file=self.fault, all_threads=True)

    def begin(self, nodeid: str) -> None:
        """A test starts: note it, clear the last call, arm the hang watchdog."""
        self.test = {"nodeid": nodeid, "started": time.time()}
        _overwrite(self._test_fd, json.dumps(self.test).encode())
        os.ftruncate(self._call_fd, 0)
        self._call_length = 0
        faulthandler.enable(file=self.fault, all_threads=True)  # again: pytest's own faulthandler may have taken it
        if self.timeout_s:
            faulthandler.dump_traceback_later(self.timeout_s, exit=True, file=self.fault)

    def describe(self, row: dict[str, Any]) -> None:
        """The test's report row as known before its first example (claim, dtype, device, variants)."""
        keep = ("claim", "title", "relation", "source", "check", "variants", "dtype", "device", "keras_backend",
                "numerics", "geometry_pool")
        self.test = {**self.test, "row": {k: row[k] for k in keep if k in row}}
        _overwrite(self._test_fd, json.dumps(self.test, default=str).encode())

    def end(self) -> None:
        faulthandler.cancel_dump_traceback_later()
        self.test = {}

    def call(self, stage: str, framework: str, variant: str, spec: Any, arrays: dict[str, Any]) -> None:
        """Before a framework call: what is called, on which arrays (on disk before the call runs).

        call.bin is one JSON line describing the call, then the arrays of ARRAYS as `np.save` records.
        """
        if not self.test:
            return  # outside a test (collection, other plugins' fixtures): nothing to attribute it to
        x = arrays.get("x")
        shape = None if x is None else tuple(np.shape(x))
        try:
            line = _call_line(stage, framework, variant, spec, shape)
        except TypeError:  # a spec that cannot be hashed (an `extra` holding a dict): serialized each time
            line = _call_line.__wrapped__(stage, framework, variant, spec, shape)
        parts = [line + f', "at": {time.time()!r}}}\n'.encode()]
        for name in ARRAYS:
            value = arrays.get(name)
            parts += _npy_record(None if value is None else np.ascontiguousarray(value, dtype=np.float64))
        data = b"".join(parts)
        os.pwrite(self._call_fd, data, 0)
        if len(data) < self._call_length:  # a shorter record than the last: drop the old one's tail
            os.ftruncate(self._call_fd, len(data))
        self._call_length = len(data)

    def close(self) -> None:
        faulthandler.cancel_dump_traceback_later()
        self.fault.close()
        os.close(self._test_fd)
        os.close(self._call_fd)


_RECORDER: Recorder | None = None


def start(folder: str | os.PathLike[str], timeout_s: float | None, owner: Any) -> Recorder:
    """Start recording in this process (an xdist worker) for the pytest config `owner`; observe every adapter call."""
    global _RECORDER
    from layer_conformance.adapters.base import set_call_observer

    _RECORDER = Recorder(Path(folder), timeout_s)
    _RECORDER.owner = owner
    set_call_observer(_RECORDER.call)
    return _RECORDER


def recorder(config: Any) -> Recorder | None:
    """This process's recorder, if `config` is the session that started it (a nested in-process pytest
    session, as pytester runs, must neither move the worker's record nor close it)."""
    return _RECORDER if _RECORDER is not None and _RECORDER.owner is config else None


def stop(config: Any) -> None:
    global _RECORDER
    if recorder(config) is not None:
        from layer_conformance.adapters.base import set_call_observer

        set_call_observer(None)
        _RECORDER.close()
        _RECORDER = None


def parse_timeout(value: str | None) -> float | None:
    """Seconds per test from the option or $CONFORMANCE_TIMEOUT; 0 or `off` disables the limit."""
    text = (value if value is not None else os.environ.get(TIMEOUT_ENV, "")).strip().lower()
    if not text:
        return DEFAULT_TIMEOUT_S
    if text in ("0", "off", "none"):
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"{value!r} is not a number of seconds; give a positive number, or 0/off for no limit")
    return seconds


# ---- the controller side ---------------------------------------------------------------------------------

def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def find(folder: Path, nodeid: str) -> Path | None:
    """The worker folder whose running test was `nodeid` (the newest, if a test ran twice)."""
    found = [p.parent for p in folder.glob("*/test.json") if _read_json(p).get("nodeid") == nodeid]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def signal_name(signum: int) -> str:
    """`SIGSEGV` for 11 (a child's exit status -N is signal N); `signal N` for a number with no name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def cause(fault_text: str, returncode: int | None, timeout_s: float | None) -> tuple[str, str]:
    """(short name, sentence) of what ended the process: a fatal signal, the hang watchdog, or a kill."""
    if re.search(r"^Timeout \(", fault_text, re.M):
        return "hang", f"hung: no result after the per-test limit of {timeout_s or '?'} s (--conformance-timeout)"
    match = re.search(r"Fatal Python error: ([A-Za-z -]+)", fault_text)
    if match and match.group(1).strip() in _FATAL:
        name = _FATAL[match.group(1).strip()]
        return name, f"the process died with {name} ({match.group(1).strip()})"
    if returncode is not None and returncode < 0:
        name = signal_name(-returncode)
        extra = " (SIGKILL: the kernel's OOM killer, or someone, killed it)" if name == "SIGKILL" else ""
        return name, f"the process died with {name}{extra}"
    code = "unknown" if returncode is None else str(returncode)
    return "died", (f"the process died without a Python error (exit status {code}; a SIGKILL, e.g. from the "
                    f"kernel's OOM killer, looks like this)")


def _stack_excerpt(fault_text: str, lines: int = 6) -> str:
    """The innermost frames of the crashing thread from faulthandler's dump."""
    chunks = fault_text.split("\n\n")
    block = next((c for c in chunks if "Current thread" in c), next((c for c in chunks if "File " in c), ""))
    frames = [line.strip() for line in block.splitlines() if line.strip().startswith("File ")]
    return "; ".join(frames[:lines])


def describe_crash(folder: Path, nodeid: str, returncode: int | None, timeout_s: float | None,
                   counterexamples: Path | None) -> dict[str, Any]:
    """The report row of a test whose process died: status error, the cause, the call, a counterexample."""
    worker = find(folder, nodeid)
    test = _read_json(worker / "test.json") if worker else {}
    call, arrays = read_call(worker / "call.bin") if worker else ({}, {})
    fault_text = (worker / "fault.txt").read_text(encoding="utf-8", errors="replace") if worker else ""
    short, sentence = cause(fault_text, returncode, timeout_s)
    row: dict[str, Any] = {"claim": nodeid.rsplit("::", 1)[-1], **test.get("row", {}), "nodeid": nodeid,
                           "examples": None, "max_abs_error": None, "max_bound_ratio": None}
    crash: dict[str, Any] = {"cause": short, "signal": short if short.startswith("SIG") else None}
    where = "before any framework call was recorded"
    if call:
        where = (f"in {call['variant']} {call['stage']} ({call['framework']}), layer {call['layer']}, "
                 f"input shape {tuple(call['input_shape']) if call.get('input_shape') else '?'}")
        crash.update({k: call.get(k) for k in ("framework", "variant", "stage", "layer", "input_shape", "spec")})
    context = f"[{row.get('dtype', '?')}, {row.get('device', '?')}]"
    reason = f"{sentence} {where}; claim {row.get('claim')} {context}, test {nodeid}"
    stack = _stack_excerpt(fault_text)
    if stack:
        crash["stack"] = stack
    if call and arrays and counterexamples is not None:
        try:
            saved = save_crash(counterexamples, arrays, call, row, reason, timeout_s)
        except (OSError, ValueError) as exc:  # never lose the row for want of its files
            reason += f" (the counterexample could not be saved: {exc})"
        else:
            row["counterexample"] = saved
            reason += f"\n  reproduce: {saved['command']}"
    row.update({"status": "error", "reason": reason, "crash": crash})
    return row


# ---- crash counterexamples -------------------------------------------------------------------------------

def read_call(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The last call a worker recorded and its arrays (empty when none was, or the file is unreadable)."""
    try:
        with open(path, "rb") as handle:
            call = json.loads(handle.readline() or b"{}")
            arrays = {}
            for name in ARRAYS:
                value = np.load(handle, allow_pickle=False)
                if value.size or name == "x":
                    arrays[name] = value
    except (OSError, ValueError, EOFError):
        return {}, {}
    return call, arrays


def save_crash(folder: Path, arrays: dict[str, np.ndarray], call: dict[str, Any], row: dict[str, Any],
               reason: str, timeout_s: float | None) -> dict[str, Any]:
    """`<stem>.crash.npz` (the call's arrays and its description) and `<stem>.crash.py`, which makes the
    call once in a fresh process: its exit status is the crash's, so `conformance repro` can tell."""
    from layer_conformance.suites.serialize import counterexample_stem

    folder.mkdir(parents=True, exist_ok=True)
    stem = counterexample_stem(row["nodeid"], row.get("keras_backend")) + ".crash"
    meta = {"schema": CRASH_SCHEMA, "nodeid": row["nodeid"], "claim": row.get("claim"), "dtype": row.get("dtype"),
            "device": row.get("device"), "keras_backend": row.get("keras_backend"), "message": reason,
            "timeout_s": timeout_s, "call": call}
    npz = folder / f"{stem}.npz"
    np.savez(npz, meta=np.array(json.dumps(meta, default=str)), **arrays)
    script = folder / f"{stem}.py"
    script.write_text(crash_script(meta, npz.name), encoding="utf-8")
    script.chmod(0o755)
    base = folder.resolve().parent
    return {"npz": npz.resolve().relative_to(base).as_posix(), "script": script.resolve().relative_to(base).as_posix(),
            "scripts": [script.resolve().relative_to(base).as_posix()],
            "command": f"conformance repro {shlex.quote(str(npz))}"}


_SCRIPT = '''#!/usr/bin/env python3
"""Reproduce a framework crash seen by layer-conformance: one layer call, in this process.

{comment}
The layer is rebuilt with layer-conformance's adapter for {framework} from the saved spec and weights,
in {dtype} on {device}, and called once ({stage}) on the saved arrays. If the framework still crashes,
this process dies the same way (its exit status is the signal); exit status 0 means it no longer does.

Usage: python {script} [NPZ]      (NPZ defaults to {npz} next to this script)
"""
import json
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", {backend!r})


def main(path):
    from layer_conformance.adapters import get_adapter
    from layer_conformance.suites.serialize import spec_from_json

    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        arrays = {{name: data[name] for name in data.files if name != "meta"}}
    call = meta["call"]
    spec = spec_from_json(call["spec"])
    weights = {{name: arrays[name] for name in ("kernel", "bias") if name in arrays}}
    adapter = get_adapter(call["framework"])
    print(f"{{call['variant']}} {{call['stage']}}: {{call['layer']}} in {{meta['dtype']}} on {{meta['device']}}, "
          f"input {{tuple(arrays['x'].shape)}}", flush=True)
    layer = adapter.build(spec, weights, meta["dtype"], meta["device"])
    if call["stage"] == "forward":
        layer.forward(arrays["x"])
    elif call["stage"] == "vjp":
        layer.vjp(arrays["x"], arrays["cotangent"])
    print("no crash: the call completed", flush=True)
    return 0


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, {npz!r})))
'''


def crash_script(meta: dict[str, Any], npz_name: str) -> str:
    call = meta["call"]
    comment = "\n".join(f"# {line}" for line in meta["message"].splitlines())
    return _SCRIPT.format(comment=comment, framework=call["framework"], dtype=meta["dtype"], device=meta["device"],
                          stage=call["stage"], script=f"{Path(npz_name).stem}.py", npz=npz_name,
                          backend=meta.get("keras_backend") or "tensorflow")


def crash_meta(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The description of a saved crash, or None when `path` is not one (another reader says why)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"])) if "meta" in data.files else {}
    except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile):  # TypeError: a .npy
        return None
    return meta if isinstance(meta, dict) and meta.get("schema") == CRASH_SCHEMA else None


def repro_crash(npz: Path, meta: dict[str, Any]) -> int:
    """`conformance repro` of a crash: run its script in a child process; 1 when it crashes (or hangs) again."""
    script = npz.with_suffix(".py")
    if not script.is_file():
        script.write_text(crash_script(meta, npz.name), encoding="utf-8")
    timeout = meta.get("timeout_s") or DEFAULT_TIMEOUT_S
    env = dict(os.environ)  # the script imports layer_conformance, installed like this process's
    print(f"conformance repro: {meta['message'].splitlines()[0]}")
    print(f"conformance repro: running {script} in a child process (limit {timeout:g} s)", flush=True)
    try:
        code = subprocess.run([sys.executable, str(script), str(npz)], env=env, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"conformance repro: the crash reproduces: the call hung past {timeout:g} s")
        return 1
    if code < 0:
        print(f"conformance repro: the crash reproduces: the call died with {signal_name(-code)}")
        return 1
    if code != 0:
        print(f"conformance repro: the call failed again (exit status {code}); see its output above")
        return 1
    print("conformance repro: the crash no longer reproduces: the call completed")
    return 0
