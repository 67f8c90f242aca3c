"""Tables and the picture of the results."""

import pytest

from ernie_m_xnli.evaluation.reporting import (
    PAPER_ACCURACY,
    format_results_table,
    paper_reference,
    percent,
    plot_results,
)
from utils import XNLI_LANGUAGES

from conftest import png_size


def test_table_has_the_papers_language_order_percent_and_one_decimal():
    accuracy = percent({lang: (index + 1) / 20 for index, lang in enumerate(XNLI_LANGUAGES)})
    lines = format_results_table({"run": accuracy}).splitlines()
    assert lines[0] == "| Model | en | fr | es | de | el | bg | ru | tr | ar | vi | th | zh | hi | sw | ur | Avg |"
    assert lines[1] == "|" + "---|" * 17
    assert lines[2] == (
        "| run | 5.0 | 10.0 | 15.0 | 20.0 | 25.0 | 30.0 | 35.0 | 40.0 | 45.0 | 50.0 | 55.0 | 60.0 | "
        "65.0 | 70.0 | 75.0 | 40.0 |"
    )


@pytest.mark.parametrize(
    "layers, hidden, task_type, model, average",
    [
        (12, 768, "cross-lingual-transfer", "ernie-m-base", 77.3),
        (24, 1024, "cross-lingual-transfer", "ernie-m-large", 82.0),
        (12, 768, "translate-train-all", "ernie-m-base", 80.6),
        (24, 1024, "translate-train-all", "ernie-m-large", 84.2),
    ],
)
def test_the_paper_reference_is_found_by_architecture(layers, hidden, task_type, model, average):
    name, accuracy = paper_reference(layers, hidden, task_type)
    assert name == model
    assert round(accuracy["avg"], 1) == average
    assert accuracy["en"] == pytest.approx(PAPER_ACCURACY[model, task_type][0])


def test_no_reference_for_other_architectures():
    assert paper_reference(2, 32, "cross-lingual-transfer") is None


def test_the_plot_is_a_1200_by_500_png(tmp_path):
    reference = paper_reference(12, 768, "translate-train-all")
    plot_results(tmp_path / "results.png", "title", reference[1], reference)
    assert png_size(tmp_path / "results.png") == (1200, 500)
