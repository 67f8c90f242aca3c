"""benchmarks/fidelity.py: the suite and transformers' Trainer train one checkpoint alike, step by step.

CI has no torch: the suite is checked against transformers' losses and test predictions recorded by
tests/fixtures/make_fidelity_reference.py on the same tiny corpus; with TRANSFORMERS_PYTHON set, the
check runs against transformers itself."""

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from benchmarks.fidelity import common_start, fidelity_report, format_report, parse_args, run_outcome
from ernie_m_xnli.data.xnli_files import xnli_file_paths
from ernie_m_xnli.models.loading import load_classifier
from utils import set_seed

from conftest import TRANSFORMERS_PYTHON, XNLI_DIR, first_rows, fixture_dir, has_peer_packages, last_line, run_script

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "fidelity", "bert-reference.json")
# A tiny BERT made by transformers, 20 full steps on real English pairs, every language's first test pairs.
SETTINGS = dict(steps=20, batch_size=8, learning_rate="1e-3", max_seq_length=64, eval_pairs_per_language=20)
TRAIN_PAIRS = 200

pytestmark = pytest.mark.skipif(
    not (XNLI_DIR and os.path.isdir(XNLI_DIR)), reason="set XNLI_DIR to a folder with the real XNLI release files"
)


def tiny_xnli(target):
    """The first rows of the real XNLI files (read by path; the data never enters the repository)."""
    paths = xnli_file_paths(XNLI_DIR, ["en"])
    first_rows(paths["dev"], os.path.join(target, "XNLI-1.0", "xnli.dev.tsv"), rows_per_language=2)
    first_rows(paths["test"], os.path.join(target, "XNLI-1.0", "xnli.test.tsv"), rows_per_language=20)
    train = os.path.join(target, "XNLI-MT-1.0", "multinli", "multinli.train.en.tsv")
    first_rows(paths["train"]["en"], train, rows_per_language=TRAIN_PAIRS)
    return target


def fidelity(xnli_dir, output_dir, *source, **settings):
    arguments = ["--model_dir", fixture_dir("bert"), "--xnli_dir", xnli_dir, "--output_dir", output_dir, *source]
    for name, value in {**SETTINGS, **settings}.items():
        arguments += [f"--{name}", str(value)]
    return run_script(*arguments, script="benchmarks/fidelity.py")


def read_report(output_dir):
    return json.loads(open(os.path.join(output_dir, "fidelity.json"), encoding="utf-8").read())


@pytest.fixture(scope="module")
def recorded_check(tmp_path_factory):
    """(CompletedProcess, output_dir) of fidelity.py against the recorded reference."""
    tmp_path = tmp_path_factory.mktemp("fidelity")
    return fidelity(tiny_xnli(tmp_path / "xnli"), tmp_path / "out", "--reference", REFERENCE), tmp_path / "out"


def test_the_suite_trains_as_recorded_transformers_did(recorded_check):
    result, output_dir = recorded_check
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = read_report(output_dir)
    assert [entry["step"] for entry in report["losses"]] == list(range(1, 21))
    # Float rounding only: measured 3e-6 against transformers on this machine kind.
    assert report["max_loss_difference"] < 1e-4
    assert report["identical_test_predictions"] == 1.0 and report["test_pairs"] == 15 * 20
    assert report["passed"] is True and report["first_step_beyond_tolerance"] is None and "PASS" in result.stdout
    # The losses move: a check of a model that does not train would prove nothing.
    losses = [entry["suite"] for entry in report["losses"]]
    assert max(losses) - min(losses) > 0.05


def test_a_reference_that_parts_from_the_suite_fails(recorded_check):
    _, output_dir = recorded_check
    reference = json.loads(open(REFERENCE, encoding="utf-8").read())
    reference["train_loss_history"][9]["loss"] += 0.01  # step 10
    args = checked_args(output_dir, "--reference", REFERENCE)
    report = fidelity_report(args, run_outcome(output_dir / "suite"), reference)
    assert report["passed"] is False and report["max_loss_difference"] == pytest.approx(0.01, abs=1e-4)
    assert report["first_step_beyond_tolerance"] == 10 and "beyond it from step 10" in format_report(report)
    assert last_line(format_report(report)).startswith("FAIL")
    reference["train_loss_history"][9]["loss"] -= 0.01
    reference["test_predictions"]["en"] = [(label + 1) % 3 for label in reference["test_predictions"]["en"]]
    report = fidelity_report(args, run_outcome(output_dir / "suite"), reference)
    assert report["identical_test_predictions"] == pytest.approx(14 / 15) and report["passed"] is False


def checked_args(output_dir, *source):
    """fidelity.py's parsed arguments of the recorded check."""
    xnli_dir = str(output_dir.parent / "xnli")  # recorded_check's
    arguments = ["--model_dir", fixture_dir("bert"), "--xnli_dir", xnli_dir, "--output_dir", str(output_dir)]
    for name, value in SETTINGS.items():
        arguments += [f"--{name}", str(value)]
    return parse_args([*arguments, *source])


def test_the_classifier_starts_as_the_suite_draws_it_with_the_seed(recorded_check, tmp_path):
    # A checkpoint without a classifier, as multilingual-e5: the start drew it with seed 42 whatever --seed said.
    _, output_dir = recorded_check
    pretrained = tmp_path / "pretrained"
    shutil.copytree(fixture_dir("bert"), pretrained)
    weights = load_file(pretrained / "model.safetensors")
    save_file(
        {name: array for name, array in weights.items() if not name.startswith("classifier.")},
        pretrained / "model.safetensors",
    )
    source = ["--reference", REFERENCE, "--seed", "7", "--model_dir", str(pretrained), "--output_dir", str(tmp_path)]
    start = load_file(os.path.join(common_start(checked_args(output_dir, *source)), "model.safetensors"))

    def drawn_by_the_suite(seed):
        set_seed(seed)
        classifier = load_classifier(str(pretrained), 0.1, 10, 64, None, False, True, name="bert")
        return classifier.model.state_dict()["classifier.weight"].numpy()

    assert np.array_equal(start["classifier.weight"], drawn_by_the_suite(7).T)
    assert not np.array_equal(start["classifier.weight"], drawn_by_the_suite(42).T)


def test_a_reference_that_is_not_one_or_of_other_settings_is_refused_in_one_line(tmp_path):
    not_reference = tmp_path / "results.json"
    not_reference.write_text("{}")
    xnli_dir = tiny_xnli(tmp_path / "xnli")
    result = fidelity(xnli_dir, tmp_path / "out", "--reference", not_reference)
    assert result.returncode != 0 and not (tmp_path / "out").exists()
    assert result.stderr.strip() == (
        f"fidelity.py: error: --reference {not_reference}: not a transformers_reference.json written by this script"
    )
    result = fidelity(xnli_dir, tmp_path / "out", "--reference", REFERENCE, steps=12)
    assert result.returncode != 0 and not (tmp_path / "out").exists()
    assert result.stderr.strip() == (
        f"fidelity.py: error: --reference {REFERENCE} was recorded with --steps 20; this run has --steps 12"
    )


@pytest.mark.skipif(
    not has_peer_packages(TRANSFORMERS_PYTHON),
    reason=f"{TRANSFORMERS_PYTHON} has no torch and transformers: set TRANSFORMERS_PYTHON to a Python that has them",
)
def test_the_suite_trains_as_transformers_does(tmp_path):
    # 25 steps: a warmup of 2.5 steps, which transformers' own rule rounds up and the suite's down.
    xnli_dir = tiny_xnli(tmp_path / "xnli")
    result = fidelity(xnli_dir, tmp_path / "out", "--transformers_python", TRANSFORMERS_PYTHON, steps=25)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = read_report(tmp_path / "out")
    assert report["max_loss_difference"] < 1e-4 and report["identical_test_predictions"] == 1.0
