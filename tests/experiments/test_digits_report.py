"""reports/digits_fair.md against the committed OfflineDigits results.

Each ``collect_results`` command the report shows (``... > FILE``) prints, from the
committed folder, exactly the committed FILE; every table the report marks
``<!-- digits:NAME -->`` is a table of one of those files (header and rows as printed,
or a choice of its rows). ``tests/experiments/test_sweep.py`` checks that the
committed jobs are the presets' and finished.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from test_fair_comparison_report import parse_tables

pytestmark = pytest.mark.domainbed

REPO = Path(__file__).resolve().parents[2]
REPORT = (REPO / "reports" / "digits_fair.md").read_text()


def commands() -> list[tuple[list[str], str]]:
    """The report's collect_results commands: (arguments, the file they print to)."""
    found = []
    for command in re.findall(r"python -m domainbed_dge\.collect_results .*?(?<!\\)\n", REPORT, re.S):
        joined = re.sub(r"\\\n\s*", "", command)
        arguments, _, target = joined.partition(">")
        found.append((shlex.split(arguments)[3:], target.strip()))
    return found


def printed(arguments: list[str]) -> str:
    from domainbed_dge.collect_results import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(arguments) == 0
    return out.getvalue()


def test_the_report_shows_its_commands():
    targets = [target for _, target in commands()]
    assert "reports/digits_fair/collect_results.md" in targets
    assert "reports/digits_fair/lr_search.md" in targets


@pytest.mark.parametrize("arguments,target", commands(), ids=[target for _, target in commands()])
def test_each_committed_table_file_is_what_its_command_prints(arguments, target, monkeypatch):
    monkeypatch.chdir(REPO)
    assert printed(arguments) == (REPO / target).read_text()


MARKED = re.findall(r"<!-- digits:(.+?) -->\n(.*?)<!-- /digits:\1 -->", REPORT, re.S)


def test_the_report_marks_its_tables():
    names = [name for name, _ in MARKED]
    assert {"lr_search", "overview", "targets"} <= set(names)
    assert len(parse_tables(REPORT)) == len(MARKED) + len(re.findall(r"<!-- unmarked -->", REPORT))


@pytest.mark.parametrize("name,body", MARKED, ids=[name for name, _ in MARKED])
def test_a_marked_table_is_a_table_that_collect_results_printed(name, body):
    (shown,) = parse_tables(body)
    if name == "targets":  # each row's accuracy on each target under source validation, printed whole
        text = (REPO / "reports" / "digits_fair" / "collect_results.md").read_text()
        heading = "source validation selection: accuracy (%) on each target domain"
        (section,) = [part for part in text.split("#### ")[1:] if heading in part.splitlines()[0]]
        assert parse_tables(section) == [shown], name
        return
    printed_tables = [table for _, target in commands() for table in parse_tables((REPO / target).read_text())]
    candidates = [table for table in printed_tables if table[0] == shown[0]]
    assert candidates, f"{name}: no printed table has the header {shown[0]}"
    assert any(all(row in table[1:] for row in shown[1:]) for table in candidates), name
