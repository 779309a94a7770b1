"""The repository stands on its own: every document it names is in it.

Code comments, docstrings, the README and the docs cite documents by path (often with
a section: `docs/design.md, "The drive"`, `docs/format.md §5`). A citation of a file
that is not in the repository, or of a section that its document does not have,
sends a reader nowhere; so does a reference to notes kept outside the repository.
These tests read every tracked text file and check each citation.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Notes that once lived outside the repository; the patterns are written so that
# this file does not match itself.
OUTSIDE = re.compile(
    r"\b(?:DESIGN|FINDINGS)\.md\b|IMAGE[-]NOTES|\.\./shared\b|/work/(?:shared)|shared[ ]notes"
)
# A Markdown file named in text: `docs/format.md`, `bench/RESULTS.md`, `README.md`.
MD_NAME = re.compile(r"(?<![\w./-])([\w./-]*\w\.md)\b")
# ... with a section: `docs/design.md, "One process"` or `docs/format.md §5`.
MD_SECTION = re.compile(r"(?<![\w./-])([\w./-]*\w\.md),?\s+(?:#\s*)?\"([^\"\n]+)\"")
MD_NUMBERED = re.compile(r"(?<![\w./-])([\w./-]*\w\.md)\s+§(\d+)")
# A Markdown link's target inside a .md file.
MD_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)
# The image installs the repository's README at /opt/letterbox/README.md.
INSTALLED = "/opt/letterbox/"


def tracked_files() -> list[Path]:
    """The repository's files: git's list where there is one, else a walk of the tree."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "build", ".letterbox", "__pycache__", "out"}
        names = [
            str(p.relative_to(ROOT))
            for p in ROOT.rglob("*")
            if p.is_file() and not skip & set(p.relative_to(ROOT).parts)
        ]
    return [ROOT / n for n in sorted(names) if (ROOT / n).is_file()]


def text_files() -> list[tuple[Path, str]]:
    files = []
    for path in tracked_files():
        try:
            files.append((path, path.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            continue  # images, fixtures: no citations in them
    return files


def resolve(name: str, where: Path) -> Path | None:
    """The repository file a citation in `where` means, or None if there is none."""
    if name.startswith("/") or name.startswith("file:"):
        stripped = "/" + name.lstrip("/")
        if not stripped.startswith(INSTALLED):
            return None
        name = stripped[len(INSTALLED) :]
        candidates = [ROOT / name]
    else:  # relative to the file's folder or one above it (bench/peers/ names bench/'s)
        folders = [where.parent, *where.parent.parents]
        candidates = [d / name for d in folders if d.is_relative_to(ROOT)]
    for candidate in candidates:
        candidate = candidate.resolve()
        if candidate.is_relative_to(ROOT) and candidate.is_file():
            return candidate
    return None


def headings(path: Path) -> list[str]:
    return HEADING.findall(path.read_text(encoding="utf-8"))


def has_section(path: Path, section: str) -> bool:
    """A heading that is the section's name, or starts with it (`## Drive (issue 2)`)."""
    pattern = re.compile(re.escape(section) + r"(?:\W|$)")
    return any(pattern.match(h) for h in headings(path))


def line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_nothing_refers_to_notes_outside_the_repository() -> None:
    found = [
        f"{rel(path)}:{line_of(text, m.start())}: {m.group(0)!r}"
        for path, text in text_files()
        for m in OUTSIDE.finditer(text)
    ]
    assert not found, "references to documents outside the repository:\n" + "\n".join(found)


def test_every_markdown_file_named_is_in_the_repository() -> None:
    missing = [
        f"{rel(path)}:{line_of(text, m.start())}: {m.group(1)}"
        for path, text in text_files()
        for m in MD_NAME.finditer(text)
        if resolve(m.group(1), path) is None
    ]
    assert not missing, "documents named that are not in the repository:\n" + "\n".join(missing)


def test_every_markdown_link_leads_to_a_file() -> None:
    broken = [
        f"{rel(path)}:{line_of(text, m.start())}: {m.group(1)}"
        for path, text in text_files()
        if path.suffix == ".md"
        for m in MD_LINK.finditer(text)
        if not re.match(r"[a-z]+:", m.group(1))  # http:, https:, mailto:
        and not (path.parent / m.group(1)).resolve().exists()
    ]
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


def test_every_cited_section_exists() -> None:
    wrong = []
    for path, text in text_files():
        for m in MD_SECTION.finditer(text):
            doc = resolve(m.group(1), path)
            if doc is not None and not has_section(doc, m.group(2)):
                wrong.append(f"{rel(path)}:{line_of(text, m.start())}: {m.group(0)!r}")
        for m in MD_NUMBERED.finditer(text):
            doc = resolve(m.group(1), path)
            if doc is not None and not has_section(doc, m.group(2) + "."):
                wrong.append(f"{rel(path)}:{line_of(text, m.start())}: {m.group(0)!r}")
    assert not wrong, "citations of sections their document does not have:\n" + "\n".join(wrong)


def test_the_design_record_and_findings_are_in_the_repository() -> None:
    """The README leads to them; the code cites them."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for doc in ("docs/design.md", "docs/findings.md", "docs/format.md"):
        assert (ROOT / doc).is_file(), doc
        assert f"({doc})" in readme, f"README.md does not link to {doc}"


PACKAGES = ["drive", "smtp", "pop3", "usb", "e2e", "web", "web/setup"]


@pytest.mark.parametrize("package", PACKAGES)
def test_package_docstring_maps_every_module(package: str) -> None:
    """Each package's docstring names every module in it, so a reader finds the one
    that does a job without opening them all."""
    pkg = ROOT / "appliance" / "letterbox" / package
    doc = ast.get_docstring(ast.parse((pkg / "__init__.py").read_text(encoding="utf-8"))) or ""
    modules = sorted(p.name for p in pkg.glob("*.py") if p.name != "__init__.py")
    modules += sorted(
        f"{p.name}/" for p in pkg.iterdir() if p.is_dir() and (p / "__init__.py").is_file()
    )
    unmapped = [m for m in modules if not re.search(rf"(?m)^(?:[*-] )?{re.escape(m)}[\s:]", doc)]
    assert not unmapped, f"letterbox/{package}/__init__.py does not map {unmapped}"
