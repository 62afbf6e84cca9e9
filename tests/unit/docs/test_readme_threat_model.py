"""The threat model (docs/security.md) names, for each threat, the tests that prove its control: each
named test must exist and must not be skipped, or the row claims a proof nobody runs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOCUMENT = ROOT / "docs" / "security.md"
HEADING = "## Threat model"
# Threats the table must keep (issue 14); more rows are welcome.
REQUIRED_THREATS = (
    "claim certificate leak",
    "serial guessing",
    "device impersonation",
    "revoked devices",
    "registry outage",
    "hostile parameters",
    "claim key in terraform state",
)
_REFERENCE = re.compile(r"`((?:tests/[\w/]+\.py)?)::(\w+)`")
_SKIPPING = {"skip", "skipif", "xfail", "importorskip"}


def threat_rows(document: str) -> list[tuple[str, str, str]]:
    """(threat, control, tests) of each row of the table under the heading."""
    lines = document.split(HEADING, 1)[1].splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("|")) :]
    table = table[: next((i for i, line in enumerate(table) if not line.startswith("|")), len(table))]
    rows = []
    for line in table[2:]:  # after the header and its separator
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 3, f"a threat-model row needs 3 cells (no '|' inside one): {line}"
        rows.append((cells[0], cells[1], cells[2]))
    return rows


def references(cell: str) -> list[tuple[str, str]]:
    """(file, test) for each `tests/...py::name` in the cell; `::name` is in the file named before it."""
    found, current = [], ""
    for path, name in _REFERENCE.findall(cell):
        current = path or current
        assert current, f"`::{name}` before any file in: {cell}"
        found.append((current, name))
    return found


def _skips(node: ast.AST) -> bool:
    """A marker or call that skips: pytest.mark.skip/skipif/xfail (also inside pytest.param marks),
    pytest.skip(...), pytest.xfail(...), pytest.importorskip(...)."""
    return any(isinstance(n, ast.Attribute) and n.attr in _SKIPPING for n in ast.walk(node))


def problems(document: str, root: Path) -> list[str]:
    found: list[str] = []
    rows = threat_rows(document)
    threats = " ".join(threat.lower() for threat, _, _ in rows)
    found += [f"no row for the threat '{t}'" for t in REQUIRED_THREATS if t not in threats]
    for threat, _, cell in rows:
        named = references(cell)
        if not named:
            found.append(f"{threat[:40]}: names no test")
        for path, name in named:
            file = root / path
            if not file.is_file():
                found.append(f"{path}::{name}: no such file")
                continue
            module = ast.parse(file.read_text())
            marks = [
                n.value
                for n in module.body
                if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in n.targets)
            ]
            if any(_skips(mark) for mark in marks):
                found.append(f"{path}::{name}: the module's pytestmark skips it")
            functions = [n for n in module.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
            test = next((f for f in functions if f.name == name), None)
            if test is None:
                found.append(f"{path}::{name}: no such test")
            elif any(_skips(decorator) for decorator in test.decorator_list):
                found.append(f"{path}::{name}: marked skip or xfail")
            elif any(_skips(statement) for statement in test.body):
                found.append(f"{path}::{name}: calls pytest.skip or pytest.xfail")
    return found


def test_every_test_the_threat_model_names_exists_and_is_not_skipped() -> None:
    document = DOCUMENT.read_text()

    assert problems(document, ROOT) == []
    rows = threat_rows(document)
    print(f"threat model: {len(rows)} threats, {sum(len(references(c)) for _, _, c in rows)} tests named")


def test_the_check_finds_a_missing_file_a_missing_test_and_each_way_of_skipping(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests/a.py").write_text(
        "import pytest\n\n"
        "def test_runs():\n    assert True\n\n"
        "@pytest.mark.skip(reason='later')\ndef test_marked():\n    assert True\n\n"
        "@pytest.mark.parametrize('x', [pytest.param(1, marks=pytest.mark.xfail)])\n"
        "def test_param(x):\n    assert x\n\n"
        "def test_calls():\n    if True:\n        pytest.skip('not here')\n"
    )
    (tmp_path / "tests/b.py").write_text(
        "import pytest\n\npytestmark = [pytest.mark.integration, pytest.mark.skipif(True, reason='x')]\n\n"
        "def test_in_skipped_module():\n    assert True\n"
    )
    document = f"""{HEADING}

| threat | control | proving tests |
|---|---|---|
| Claim certificate leak | c | `tests/a.py::test_runs`, `::test_marked`, `::test_param`, `::test_calls`, `::test_gone` |
| Serial guessing | c | `tests/b.py::test_in_skipped_module`, `tests/c.py::test_x` |
| Hostile parameters | c | none |

## Next section
"""
    assert problems(document, tmp_path) == [
        "no row for the threat 'device impersonation'",
        "no row for the threat 'revoked devices'",
        "no row for the threat 'registry outage'",
        "no row for the threat 'claim key in terraform state'",
        "tests/a.py::test_marked: marked skip or xfail",
        "tests/a.py::test_param: marked skip or xfail",
        "tests/a.py::test_calls: calls pytest.skip or pytest.xfail",
        "tests/a.py::test_gone: no such test",
        "tests/b.py::test_in_skipped_module: the module's pytestmark skips it",
        "tests/c.py::test_x: no such file",
        "Hostile parameters: names no test",
    ]


def test_a_real_test_that_skips_itself_would_be_refused() -> None:
    """The project has one test that skips itself where it cannot run (it changes the system trust
    store): naming it in the table would be caught."""
    document = DOCUMENT.read_text()
    name = "test_a_client_trusting_only_the_system_store_provisions_once_the_sandbox_ca_is_trusted"
    row = f"| Extra | c | `tests/integration/test_device_provisioning.py::{name}` |\n"
    table_end = document.index("\n\n", document.index("| threat | control | proving tests |"))
    assert problems(document[: table_end + 1] + row + document[table_end + 1 :], ROOT) == [
        f"tests/integration/test_device_provisioning.py::{name}: calls pytest.skip or pytest.xfail"
    ]
