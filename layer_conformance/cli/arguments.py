"""What every `conformance` command shares on its command line: one-line usage errors, comma lists,
and the check that an output folder can be written before any work starts."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn


PROFILES = ("dev", "ci", "thorough", "debug")  # the hypothesis profiles layer_conformance.plugin registers


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line usage errors: `PROG: error: PROBLEM; run `PROG --help` for the options`."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}; run `{self.prog} --help` for the "
                     f"options\n")


def split_csv(text: str) -> list[str]:
    """A comma-separated value as a list; empty items dropped ("torch, keras," -> ["torch", "keras"])."""
    return [item.strip() for item in text.split(",") if item.strip()]


def check_output_folder(parser: argparse.ArgumentParser, out: Path) -> None:
    """Create `out` and prove it writable, else one line naming it and exit 2."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        parser.exit(2, f"{parser.prog}: error: cannot write to output folder {out} ({exc.strerror or exc}); "
                       f"choose a writable --out\n")
