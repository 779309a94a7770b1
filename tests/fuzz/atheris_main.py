"""Long fuzz runs of tests/fuzz/targets.py under atheris (coverage-guided): `make fuzz`.

    python -m tests.fuzz.atheris_main TARGET [libFuzzer options...]

TARGET is data_reader, syntax or pop3; the options are libFuzzer's
(-max_total_time=SECONDS, -runs=N, a corpus directory). atheris is installed
into the venv by `make fuzz` only; the suite runs the same targets under
hypothesis (tests/fuzz/test_targets.py).
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-not-found]

with atheris.instrument_imports():
    import letterbox.pop3.session
    import letterbox.smtp.data
    import letterbox.smtp.syntax  # noqa: F401

from tests.fuzz import targets

TARGETS = {"data_reader": targets.data_reader, "syntax": targets.syntax, "pop3": targets.pop3}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options]")
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
