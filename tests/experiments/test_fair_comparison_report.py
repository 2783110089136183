"""reports/fair_comparison.md against the committed 3,000-step results.

Every table the report marks ``<!-- t3000:NAME -->`` is printed by ``collect_results``
from ``reports/rotated_mnist_fair/sweep`` (whole, or as a choice of its checkpoint
columns), every cell of the report's "Answer" is a cell of those tables, and each
verdict there agrees with its intervals. An edit to the results or to the report that
breaks this fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.domainbed

REPO = Path(__file__).resolve().parents[2]
REPORT = (REPO / "reports" / "fair_comparison.md").read_text()
SWEEP = "reports/rotated_mnist_fair/sweep"
CONTROL, BASELINE, BASELINE_RA = "GradAvg x K", "Baseline", "Baseline + RandAugment"
#: The Answer's first column, by its opening words, and the row label each stands for.
READINGS = {"DGE, literal": "DGE", "DGE, reset weights": "DGE (reset weights)",
            "DGE, fixed views": "DGE (fixed views)", "DGE, adjust against original": "DGE (adjust against original)"}
#: The part of collect_results' heading that names each marked table's section.
SECTIONS = {
    "accuracy": "source validation selection: accuracy by source domain",
    "validation": "source validation selection: the selected checkpoints' source validation accuracy",
    "paired": "source validation selection: paired difference to",
    "curves": "learning curves of the selected runs",
    "equilibrium": "DGE's equilibrium over training",
}


def marked(name: str) -> str:
    match = re.search(rf"<!-- t3000:{name} -->\n(.*?)<!-- /t3000:{name} -->", REPORT, re.S)
    assert match, f"the report has no table marked t3000:{name}"
    return match.group(1).strip()


def section(text: str, name: str) -> str:
    """The one section of collect_results' text whose heading holds SECTIONS[name]."""
    (body,) = [part for part in text.split("#### ")[1:] if SECTIONS[name] in part.splitlines()[0]]
    return body


def parse_tables(markdown: str) -> list[list[list[str]]]:
    """Each markdown table of the text as rows of cells, header first, rule left out."""
    tables, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(set(cell) <= {"-"} for cell in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


#: The comparison's first rows, the ones the "At 3,000 steps" section reads (its
#: collect_results commands name them with ``--rows``).
FIRST_ROWS = ("Baseline", "Baseline + RandAugment", "GradAvg", "GradAvg x K", *READINGS.values(),
              "PCGrad", "Agr-Sum", "Agr-Rand")


@pytest.fixture(scope="module")
def printed():
    """collect_results' markdown for the committed sweep's first rows, by paired reference row."""
    from domainbed_dge.collect_results import keep_rows
    from domainbed_dge.experiments.records import load_runs
    from domainbed_dge.experiments.tables import report

    loaded = load_runs(str(REPO / SWEEP), finished_only=True)
    keep_rows(loaded, FIRST_ROWS)
    cache: dict[str, str] = {}

    def for_reference(reference: str) -> str:
        if reference not in cache:
            cache[reference] = report(SWEEP, loaded, "markdown", (reference,))
        return cache[reference]

    return for_reference


def paired(text: str) -> dict[str, str]:
    """The paired table of collect_results' text: row label -> 'mean [interval] (pairs)'."""
    (table,) = parse_tables(section(text, "paired"))
    return {row[0]: f"{row[2]} {row[3]} ({row[1]})" for row in table[1:]}


def interval_above_zero(cell: str) -> bool:
    low = float(re.search(r"\[([-+]?\d+\.\d+),", cell).group(1))
    return low > 0


#: Marked tables printed whole: the section of collect_results' text, and its reference row.
WHOLE_TABLES = {
    "accuracy": ("accuracy", CONTROL), "validation": ("validation", CONTROL),
    "paired_control": ("paired", CONTROL), "paired_baseline": ("paired", BASELINE),
    "paired_bra": ("paired", BASELINE_RA),
}


@pytest.mark.parametrize("name", WHOLE_TABLES)
def test_a_marked_table_is_printed_whole_by_collect_results(printed, name):
    part, reference = WHOLE_TABLES[name]
    assert parse_tables(marked(name)) == parse_tables(section(printed(reference), part))


@pytest.mark.parametrize("name", ["curves", "equilibrium"])
def test_a_marked_curve_table_is_a_choice_of_collect_results_columns(printed, name):
    (table,) = parse_tables(section(printed(CONTROL), name))
    full = {tuple(row[:2]): dict(zip(table[0][2:], row[2:])) for row in table[1:]}
    (shown,) = parse_tables(marked(name))
    steps = shown[0][2:]
    assert [tuple(row[:2]) for row in shown[1:]] == list(full)
    for row in shown[1:]:
        assert dict(zip(steps, row[2:])) == {step: full[tuple(row[:2])][step] for step in steps}, row[:2]


def test_the_peers_table_is_collect_results_with_each_reading_as_reference(printed):
    (table,) = parse_tables(marked("peers"))
    readings = table[0][1:]
    assert readings == list(READINGS.values())
    for row in table[1:]:
        for reading, cell in zip(readings, row[1:]):
            assert cell == paired(printed(reading))[row[0]], (row[0], reading)


def test_the_answer_is_the_paired_tables_and_its_verdicts_follow_from_them(printed):
    answer = REPORT[REPORT.index("## Answer"):REPORT.index("## Question and set-up")]
    (table,) = parse_tables(answer)
    assert len(table) == 1 + len(READINGS)
    (peers_table,) = parse_tables(marked("peers"))
    peer_cells = {(row[0], reading): cell
                  for row in peers_table[1:] for reading, cell in zip(peers_table[0][1:], row[1:])}
    for row in table[1:]:
        (reading,) = [label for opening, label in READINGS.items() if row[0].startswith(opening)]
        against = {reference: paired(printed(reference))[reading] for reference in (CONTROL, BASELINE, BASELINE_RA)}
        assert row[1:4] == [cell.rsplit(" (", 1)[0] for cell in against.values()], reading

        better = {peer: cell.rsplit(" (", 1)[0] for (peer, of), cell in peer_cells.items()
                  if of == reading and interval_above_zero(cell)}
        assert row[4] == ("; ".join(f"{peer} {cell}" for peer, cell in better.items()) or "none"), reading

        verdict = row[5]
        assert "does not win" in verdict or "does not beat the control" in verdict, reading
        if "does not win" in verdict:
            assert not any(interval_above_zero(cell) for cell in against.values()), reading
        assert not interval_above_zero(against[CONTROL]), reading
        for peer in better:
            assert f"loses to {peer}" in verdict, reading


def test_the_sections_commands_name_the_first_rows():
    at_3000 = REPORT[REPORT.index("## At 3,000 steps"):REPORT.index("## Not run")]
    commands = re.findall(rf"collect_results --input_dir {SWEEP} .*?(?<!\\)\n", at_3000, re.S)
    rows_option = "--rows " + " ".join(f"'{row}'" if " " in row else row for row in FIRST_ROWS)
    assert len(commands) == 2
    for command in commands:
        assert rows_option in re.sub(r"\\\n\s*", "", command), command


def test_every_table_at_3000_steps_is_a_checked_one():
    at_3000 = REPORT[REPORT.index("## At 3,000 steps"):REPORT.index("## Not run")]
    names = re.findall(r"<!-- t3000:(\w+) -->", at_3000)
    assert sorted(names) == sorted(["curves", "equilibrium", "peers", *WHOLE_TABLES])
    assert len(parse_tables(at_3000)) == len(names)
