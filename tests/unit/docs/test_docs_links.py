"""The README, docs/*.md and bench/README.md send readers to each other: every relative link must reach
a file, and every #anchor a heading of that file as GitHub slugs it, or a moved section leaves a dead
link behind. The
README's Layout must name every folder git tracks at the top level and every function under lambda/, so
a new folder cannot go unexplained."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
LAYOUT_HEADING = "## Layout"

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`(?:[^`\n]|\n(?![ \t]*\n))*`")  # a span may wrap onto the next line, not past a paragraph
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # https:, mailto: ...: not this repository's
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def documents(root: Path) -> list[Path]:
    bench = [root / "bench" / "README.md"] if (root / "bench" / "README.md").exists() else []
    return [root / "README.md", *sorted((root / "docs").glob("*.md")), *bench]


def _prose(text: str) -> str:
    """The text without fenced blocks and code spans: brackets and parentheses there are code."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped except '-' and '_', each space a '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading's anchor; a repeated heading gets -1, -2, ... as GitHub numbers them."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in _HEADING.findall(_FENCE.sub("", text)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def _name(path: Path, root: Path) -> str:
    return os.path.relpath(path, root)


def link_problems(files: list[Path], root: Path) -> list[str]:
    found: list[str] = []
    for file in files:
        for target in _LINK.findall(_prose(file.read_text())):
            if _SCHEME.match(target):
                continue
            path, _, anchor = target.partition("#")
            where = f"{_name(file, root)}: ({target})"
            destination = (file.parent / path).resolve() if path else file
            if not destination.exists():
                found.append(f"{where}: no such file")
            elif anchor and not destination.is_file():
                found.append(f"{where}: a folder has no headings")
            elif anchor and anchor not in anchors(destination.read_text()):
                found.append(f"{where}: no heading '#{anchor}' in {_name(destination, root)}")
    return found


def test_every_relative_link_in_the_readme_and_docs_reaches_a_file_and_a_heading() -> None:
    files = documents(ROOT)
    links = sum(len(_LINK.findall(_prose(f.read_text()))) for f in files)

    assert link_problems(files, ROOT) == []
    assert len(files) > 1 and links > 0  # nothing checked would prove nothing
    print(f"docs links: {links} links in {len(files)} documents")


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/guide.md").write_text(
        "# Guide\n\n## AWS's own samples: the sandbox\n\n## Notes\n\n## Notes\n\n"
        "```text\n## Not a heading\n```\n\n[back](../README.md#the-top)\n"
    )
    (tmp_path / "README.md").write_text(
        "# The top\n\n"
        "[fine](docs/guide.md#awss-own-samples-the-sandbox), [repeated](docs/guide.md#notes-1),\n"
        "[a folder](docs), [here](#the-top), [outside](https://example.com/x.md#nowhere),\n"
        "[gone](docs/missing.md), [wrong anchor](docs/guide.md#notes-2),\n"
        "[not a heading](docs/guide.md#not-a-heading), [no such section](#the-bottom),\n"
        "[folder anchor](docs#x)\n\n"
        "```bash\necho [not](a-link.md)\n```\n\n`[code](span.md)`\n"
    )

    assert link_problems(documents(tmp_path), tmp_path) == [
        "README.md: (docs/missing.md): no such file",
        "README.md: (docs/guide.md#notes-2): no heading '#notes-2' in docs/guide.md",
        "README.md: (docs/guide.md#not-a-heading): no heading '#not-a-heading' in docs/guide.md",
        "README.md: (#the-bottom): no heading '#the-bottom' in README.md",
        "README.md: (docs#x): a folder has no headings",
    ]


def section(text: str, heading: str) -> str:
    """The text under the heading, up to the next heading of its level or higher."""
    level = len(heading) - len(heading.lstrip("#"))
    body = text.split(f"\n{heading}\n", 1)[1]
    end = re.search(rf"^#{{1,{level}}} ", _FENCE.sub(lambda m: " " * len(m.group(0)), body), re.MULTILINE)
    return body[: end.start()] if end else body


def layout_problems(layout: str, tracked: list[str]) -> list[str]:
    """Each top-level folder of the tracked paths (dot-folders aside) and each folder under lambda/ must
    be named in the layout as a path (`name/` at the start of a word)."""
    folders = sorted({p.split("/")[0] for p in tracked if "/" in p and not p.startswith(".")})
    functions = sorted({"/".join(p.split("/")[:2]) for p in tracked if p.startswith("lambda/") and p.count("/") > 1})
    return [
        f"the Layout does not name {folder}/"
        for folder in folders + functions
        if not re.search(rf"(^|[\s`]){re.escape(folder)}/", layout, re.MULTILINE)
    ]


def test_the_readme_layout_names_every_top_level_folder_and_every_function() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    layout = section((ROOT / "README.md").read_text(), LAYOUT_HEADING)

    assert layout_problems(layout, tracked) == []
    assert any(p.startswith("lambda/") for p in tracked)  # the tree was listed, not an empty answer


def diagram_problems(design: str, tracked: list[str]) -> list[str]:
    """The design's diagram (its first fenced block) must name every folder under lambda/ and every package
    the project installs (a folder holding an __init__.py at its top: constructs/iot_fleet, scripts, ...)."""
    diagram = _FENCE.search(design)
    text = diagram.group(0) if diagram else ""
    functions = {"/".join(p.split("/")[:2]) for p in tracked if p.startswith("lambda/") and p.count("/") > 1}
    packages = {p.rsplit("/", 1)[0] for p in tracked if p.endswith("/__init__.py") and not p.startswith("tests/")}
    tops = {p for p in packages if "/" not in p or p.rsplit("/", 1)[0] not in packages}  # not sub-packages
    return [
        f"the diagram does not name {name}/"
        for name in sorted(functions | tops)
        if not re.search(rf"(^|[\s(`]){re.escape(name)}([/)\s`]|$)", text, re.MULTILINE)
    ]


def test_the_design_diagram_names_every_function_and_every_installed_package() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()

    assert diagram_problems((ROOT / "docs" / "design.md").read_text(), tracked) == []


def test_the_diagram_check_finds_a_function_and_a_package_it_does_not_name() -> None:
    design = "# Design\n\n```text\nlambda/hook/ answers\nsrc/app/ runs\n```\n\nlambda/late/ sandbox/\n"
    tracked = ["lambda/hook/hook.py", "lambda/late/late.py", "src/app/__init__.py", "src/app/x/__init__.py"]
    tracked += ["sandbox/__init__.py", "tests/unit/__init__.py"]

    assert diagram_problems(design, tracked) == [
        "the diagram does not name lambda/late/",
        "the diagram does not name sandbox/",
    ]


def test_the_layout_check_finds_a_folder_and_a_function_it_does_not_name() -> None:
    readme = (
        "# App\n\n## Layout\n\n```\nsrc/          the code\nlambda/hook/  a function\n"
        "## not a heading inside the block\ntests/unit/   tests\n```\n\n## Next\n\ndocs/ lambda/late/\n"
    )
    tracked = [
        ".ci/run",
        "README.md",
        "src/app.py",
        "tests/unit/test_app.py",
        "lambda/hook/hook.py",
        "lambda/late/late.py",
        "docs/guide.md",
    ]

    assert layout_problems(section(readme, LAYOUT_HEADING), tracked) == [
        "the Layout does not name docs/",
        "the Layout does not name lambda/late/",
    ]
