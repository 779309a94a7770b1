"""What every benchmark report needs: its own section of RESULTS.md, and tool versions."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path


def replace_section(results: Path, heading: str, section: str) -> None:
    """Replace (or append) the section under `heading`, leaving the other sections alone."""
    text = results.read_text() if results.exists() else "# Benchmark results\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        new = [*lines, "", *section.splitlines()] if lines else section.splitlines()
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        new = [*lines[:start], *section.splitlines(), *lines[end:]]
    results.write_text("\n".join(new).rstrip() + "\n")


def first_line(*argv: str) -> str:
    """The first line a command prints ("?" if it cannot run): for version strings."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return r.stdout.strip().splitlines()[0] if r.stdout.strip() else "?"
    return "?"
