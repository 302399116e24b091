"""What ``sqm`` tells a user before it runs anything: ``serve --help`` lists every ``SQM_*``
variable, and README's table of them says the same (services/cli.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.cli import documented_variables, environment_defaults, main

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_table() -> list[tuple[list[str], str]]:
    """(variables, default cell) of each row of README's environment variable table."""
    rows = []
    for line in README.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `SQM_") and len(cells) == 3:
            rows.append((re.findall(r"`(SQM_[A-Z_]+)`", cells[0]), cells[1]))
    return rows


def test_serve_help_describes_the_command_and_lists_every_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "Run every API of the suite" in text
    assert "--unsafe-skip-fsync" in text
    listed = dict(re.findall(r"^  (SQM_[A-Z_]+) +(.+)$", text, flags=re.MULTILINE))
    assert list(listed) == [name for name, _ in documented_variables()]
    assert listed == dict(environment_defaults())
    assert listed["SQM_PAGE_MAX_LIMIT"] == "1000"
    assert listed["SQM_UNSAFE_SKIP_FSYNC"] == "false"
    assert listed["SQM_DELIVERY_BACKOFF_SECONDS"] == "1"


def test_readme_documents_every_variable_once() -> None:
    in_readme = [name for names, _ in readme_table() for name in names]
    assert sorted(in_readme) == sorted(name for name, _ in documented_variables())
    assert len(in_readme) == len(set(in_readme))


def test_readme_defaults_agree_with_the_help() -> None:
    shown = dict(environment_defaults())
    compared = 0
    for names, cell in readme_table():
        # Only cells that are nothing but values (`a` or `a` / `b`); prose explains the others.
        values = re.fullmatch(r"`([^`]*)`(?: / `([^`]*)`)*", cell)
        if values is None:
            continue
        literal = re.findall(r"`([^`]*)`", cell)
        assert len(literal) == len(names), f"README row for {names}: one default per variable"
        for name, value in zip(names, literal, strict=True):
            assert shown[name] == value, f"README says {name} defaults to {value}, sqm serve --help {shown[name]}"
            compared += 1
    assert compared >= 20


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert re.fullmatch(r"sqm \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)
