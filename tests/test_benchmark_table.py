"""benchmark.py's table: which rows it compares, and the project's fastest against transformers' fastest; and
settings none of which this machine runs."""

import pytest

import benchmark
from benchmark import format_table


def row(setting, examples_per_s, eval_seconds, **extra):
    return {
        "setting": setting,
        "cpu_threads": 2,
        "products": "a library",
        "denormals": "kept",
        "mkl_cpu_type": "n/a",
        "train_examples_per_s": examples_per_s,
        "train_tokens_per_s": 100.0,
        "train_computed_per_real": 1.0,
        "eval_seconds": eval_seconds,
        "eval_tokenizing_seconds": 0.0,
        "eval_export_seconds": 0.0,
        "eval_predictor_seconds": 0.0,
        "eval_computed_per_real": 1.0,
        "peak_memory_mb": 1000.0,
        "train_mfu": 0.5,
        "eval_mfu": 0.5,
        **extra,
    }


def table_rows(rows):
    text = format_table(rows, {"a matmul": 1e11}, {"float32": "a matmul", "bfloat16": None}, 2, "gpu")
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines() if line[:2] == "| "]
    return {cells[0]: cells[1:] for cells in cells[1:]}, text


def test_the_last_row_sets_the_fastest_of_each_side_against_each_other_in_training_and_evaluation_apart():
    compiled = row("transformers-bf16-compile", 3.0, 1350.0, train_compile_seconds=150.0, eval_compile_seconds=31.4)
    rows = [
        row("project", 6.0, 1800.0),
        row("project-bf16", 9.0, 900.0),
        row("transformers", 2.0, 5000.0),
        row("transformers-bf16", 4.0, 1500.0),
        compiled,
    ]
    table, text = table_rows(rows)
    name = (
        "project's fastest / transformers' fastest (training: project-bf16 / transformers-bf16; "
        "evaluation: project-bf16 / transformers-bf16-compile)"
    )
    assert list(table)[-1] == name
    examples_per_s, eval_seconds, memory = table[name][4], table[name][7], table[name][11]
    assert (examples_per_s, eval_seconds, memory) == ("2.25x", "1.50x faster", "")
    eager = table["transformers-bf16-compile / transformers-bf16 (torch.compile against eager)"]
    assert (eager[4], eager[7], eager[11]) == ("0.75x", "1.11x faster", "1.00x")
    assert "transformers-bf16-compile: torch.compile took 150 s on training's shapes and 31 s on evaluation's, " in text


def test_no_fastest_row_with_one_transformers_setting():
    table, _ = table_rows([row("project", 6.0, 1800.0), row("transformers", 2.0, 5000.0)])
    assert list(table) == ["project", "transformers", "project / transformers (same threads)"]


def test_settings_none_of_which_runs_here_are_refused_naming_why(xnli_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--xnli_dir", xnli_dir, "--transformers_python", "/no/python", "--settings", "transformers"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "benchmark.py: error: no setting asked for runs here: transformers: left out, /no/python: no such program "
        "(README: Benchmark says how to install them apart; then pass --transformers_python)"
    )
