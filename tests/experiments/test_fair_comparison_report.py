"""reports/fair_comparison.md against the committed 3,000-step results.

Every table the report marks ``<!-- t3000:NAME -->`` (the first 11 rows) or
``<!-- all:NAME -->`` (every complete row) is printed by ``collect_results`` from
``reports/rotated_mnist_fair/sweep`` (whole, or as a choice of its rows and checkpoint
columns), the tables marked ``<!-- all:runs ROW -->`` are each run's selected
checkpoint in the committed results, every cell of the report's two answers is a cell
of those tables, each verdict there agrees with its intervals, and the rows the "Every
row" section reads are exactly the complete ones. An edit to the results or to the report that breaks
this fails here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from domainbed_dge.experiments.presets import load_preset

pytestmark = pytest.mark.domainbed

REPO = Path(__file__).resolve().parents[2]
REPORT = (REPO / "reports" / "fair_comparison.md").read_text()
FIRST_ANSWER_HEADING = "## Answer for the first 11 rows"
EVERY_ROW_HEADING = "## Every row of the paper's comparison"
SWEEP = "reports/rotated_mnist_fair/sweep"
#: Where the "Every row" section's command prints every table the section shows.
ALL_TABLES = "reports/rotated_mnist_fair/collect_results_all.md"
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
    "overview": "source validation selection: overview",
    "diagnostics": "each method's own diagnostics over training",
}


def marked(name: str, prefix: str = "t3000") -> str:
    match = re.search(rf"<!-- {prefix}:{name} -->\n(.*?)<!-- /{prefix}:{name} -->", REPORT, re.S)
    assert match, f"the report has no table marked {prefix}:{name}"
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
    answer = REPORT[REPORT.index(FIRST_ANSWER_HEADING):REPORT.index("## Question and set-up")]
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
    at_3000 = REPORT[REPORT.index("## At 3,000 steps"):REPORT.index(EVERY_ROW_HEADING)]
    commands = re.findall(rf"collect_results --input_dir {SWEEP} .*?(?<!\\)\n", at_3000, re.S)
    rows_option = "--rows " + " ".join(f"'{row}'" if " " in row else row for row in FIRST_ROWS)
    assert len(commands) == 2
    for command in commands:
        assert rows_option in re.sub(r"\\\n\s*", "", command), command


def test_every_table_at_3000_steps_is_a_checked_one():
    at_3000 = REPORT[REPORT.index("## At 3,000 steps"):REPORT.index(EVERY_ROW_HEADING)]
    names = re.findall(r"<!-- t3000:(\w+) -->", at_3000)
    assert sorted(names) == sorted(["curves", "equilibrium", "peers", *WHOLE_TABLES])
    assert len(parse_tables(at_3000)) == len(names)


# The "Every row" section: every complete row, read with one collect_results command.
EVERY_ROW = REPORT[REPORT.index(EVERY_ROW_HEADING):REPORT.index("## Not run")]
ALL_REFERENCES = ("Baseline", "DGE", "GradAvg")
JOBS_PER_ROW = 2 * 3  # sources x trials


def every_row_command() -> list[str]:
    """The arguments of the section's collect_results command that prints its tables
    into ``ALL_TABLES`` (line continuations joined)."""
    commands = re.findall(rf"python -m domainbed_dge.collect_results --input_dir {SWEEP} .*?(?<!\\)\n",
                          EVERY_ROW, re.S)
    (command,) = (command for command in commands if f"> {ALL_TABLES}" in command)
    return shlex.split(re.sub(r"\\\n\s*", "", command).split(">")[0])


def option(arguments: list[str], name: str) -> list[str]:
    """The values of ``name`` up to the next option."""
    values = arguments[arguments.index(name) + 1:]
    return values[:next((i for i, value in enumerate(values) if value.startswith("--")), len(values))]


@pytest.fixture(scope="module")
def every_row():
    """The committed sweep's finished runs, per row, and the section's printed markdown."""
    from domainbed_dge.collect_results import keep_rows
    from domainbed_dge.experiments.records import load_runs
    from domainbed_dge.experiments.tables import report

    loaded = load_runs(str(REPO / SWEEP), finished_only=True)
    runs_of: dict[str, int] = {}
    for run in loaded.runs:
        runs_of[run.method] = runs_of.get(run.method, 0) + 1
    rows = option(every_row_command(), "--rows")
    keep_rows(loaded, rows)
    return runs_of, rows, report(SWEEP, loaded, "markdown", tuple(option(every_row_command(), "--reference")))


def test_every_row_reads_the_first_rows_and_every_complete_new_row(every_row):
    runs_of, rows, _ = every_row
    assert option(every_row_command(), "--reference") == list(ALL_REFERENCES)
    assert rows[:len(FIRST_ROWS)] == list(FIRST_ROWS)
    complete = {row for row, runs in runs_of.items() if runs == JOBS_PER_ROW}
    assert set(rows) == complete, "a row is complete but not read, or read but not complete"
    new_jobs = sum(runs_of.values()) - len(FIRST_ROWS) * JOBS_PER_ROW
    status = re.search(r"\*\*Status at this commit: (\d+) of the (\d+) new jobs", EVERY_ROW)
    preset_rows = len(load_preset(str(REPO / "sweeps" / "rotated_mnist_fair.json")).variants)
    assert status and int(status.group(1)) == new_jobs
    assert int(status.group(2)) == (preset_rows - len(FIRST_ROWS)) * JOBS_PER_ROW


def test_the_overview_is_printed_whole_by_collect_results(every_row):
    assert parse_tables(marked("overview", "all")) == parse_tables(section(every_row[2], "overview"))


@pytest.mark.parametrize("name", ["curves", "diagnostics", "equilibrium"])
def test_a_marked_table_of_every_row_is_a_choice_of_collect_results_rows_and_columns(every_row, name):
    (table,) = parse_tables(section(every_row[2], name))
    full = {tuple(row[:2]): dict(zip(table[0][2:], row[2:])) for row in table[1:]}
    (shown,) = parse_tables(marked(name, "all"))
    assert shown[0][:2] == table[0][:2] and len(shown) > 1
    for row in shown[1:]:
        assert tuple(row[:2]) in full, row[:2]
        assert dict(zip(shown[0][2:], row[2:])) == {step: full[tuple(row[:2])][step] for step in shown[0][2:]}


def overview_rows(every_row) -> dict[str, dict[str, str]]:
    (table,) = parse_tables(section(every_row[2], "overview"))
    return {row[1]: dict(zip(table[0], row)) for row in table[1:]}


def test_the_rankings_sentences_follow_from_the_overview(every_row):
    rows = overview_rows(every_row)
    for reference in ("Baseline", "DGE"):
        better = [row for row, cells in rows.items() if row != reference
                  and interval_above_zero(cells[f"vs {reference}"])]
        line = re.search(rf"^\*\*Detectably better than {re.escape(reference)}\*\* \(.*?\): (.*)$", EVERY_ROW, re.M)
        assert line, reference
        assert line.group(1).rstrip(".") == (", ".join(better) or "none"), reference


def test_the_answer_for_every_row_is_the_overview(every_row):
    answer = REPORT[REPORT.index("## Answer for every row"):REPORT.index(FIRST_ANSWER_HEADING)]
    (table,) = parse_tables(answer)
    rows = overview_rows(every_row)
    assert table[0] == ["row", "rank", "Avg", "vs Baseline", "vs DGE", "vs GradAvg"]
    readings = [row for row in rows if row.startswith("DGE")]
    assert [row[0] for row in table[1:]] == readings  # every DGE reading, in rank order
    for row in table[1:]:
        cells = rows[row[0]]
        assert row[1:] == [f"{cells['Rank']} of {len(rows)}", cells["Avg"], cells["vs Baseline"], cells["vs DGE"],
                           cells["vs GradAvg"]], row[0]



PER_RUN_HEADER = ["source, trial", "selected step", "source validation", "target accuracy", "final training loss"]
PER_RUN_ROWS = re.findall(r"<!-- all:runs (.+?) -->", EVERY_ROW)


def test_every_per_run_table_is_marked():
    tables = [table for table in parse_tables(EVERY_ROW) if table[0] == PER_RUN_HEADER]
    assert PER_RUN_ROWS and len(tables) == len(PER_RUN_ROWS)


@pytest.mark.parametrize("row", PER_RUN_ROWS)
def test_a_per_run_table_is_each_runs_selected_checkpoint(row):
    """Each (source, trial) of the row: the checkpoint source validation selects, its
    accuracies, and the run's last logged training loss, from the committed results."""
    from domainbed_dge.experiments.records import load_runs
    from domainbed_dge.experiments.selection import SOURCE_VALIDATION, select

    selections = select(load_runs(str(REPO / SWEEP), finished_only=True).runs, SOURCE_VALIDATION)
    expected = [[f"{15 * source}, {trial}", f"{chosen.record['step']:,}", f"{100 * chosen.score:.1f}",
                 f"{100 * chosen.accuracy:.1f}", f"{chosen.run.records[-1]['loss']:.3f}"]
                for (_, method, source, trial), chosen in sorted(selections.items()) if method == row]
    assert len(expected) == JOBS_PER_ROW, row
    (table,) = parse_tables(marked(f"runs {row}", "all"))
    assert table == [PER_RUN_HEADER, *expected]
