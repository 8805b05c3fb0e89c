"""The CPU cores this process may use: what `conformance run` sizes its workers by, the suites their
threads by, and the report writer its plot processes by."""
from __future__ import annotations

import os


def usable_cores() -> int:
    """Cores in this process's affinity mask (a container's or taskset's limit), else the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
