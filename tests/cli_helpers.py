"""The one way the self-tests call the `conformance` command in-process: exit status, stdout, stderr."""
from __future__ import annotations

from typing import Any

from layer_conformance.cli import main


def run_cli(argv: list[str], capsys: Any) -> tuple[int, str, str]:
    """`conformance ARGV` through layer_conformance.cli.main; argparse's SystemExit becomes the status."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err
