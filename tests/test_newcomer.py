"""What a newcomer trips on: no network, a failed start, a model that was never fine-tuned."""

import os
import shutil
import sys

import pytest

from benchmarks.common import python_problem

from conftest import cpu_run, fixture_dir, last_line, run_main, run_script


def offline(tmp_path):
    """An environment in which every download fails at once (a proxy that refuses) and PaddleNLP
    has no cached model or data set."""
    refused = "http://127.0.0.1:9"
    return {
        "PPNLP_HOME": str(tmp_path / "paddlenlp"),
        "HTTPS_PROXY": refused,
        "HTTP_PROXY": refused,
        "https_proxy": refused,
        "http_proxy": refused,
    }


def test_a_pretrained_model_that_cannot_be_downloaded_is_one_line_and_writes_nothing(tmp_path, xnli_dir):
    result = run_script(**cpu_run("ernie-m-base", xnli_dir, tmp_path / "out"), env=offline(tmp_path))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    message = last_line(result.stderr)
    assert message.startswith(
        "run_classifier.py: error: --model_name_or_path ernie-m-base: cannot load or download it ("
    )
    assert message.endswith(
        "Without network, pass a directory saved with save_pretrained, e.g. a copy of "
        "~/.paddlenlp/models/ernie-m-base from a machine that downloaded it"
    )
    # PaddleNLP's reason in whole sentences (its third, cut mid-word before, is left out whole)
    assert (
        "cannot load or download it (Can't load the model for 'ernie-m-base'. If you were trying to load it "
        "from 'BOS', make sure you don't have a local directory with the same name). Without network" in message
    )
    assert not (tmp_path / "out").exists()


def test_xnli_that_cannot_be_downloaded_is_one_line_and_leaves_no_output_dir(tmp_path, tiny_model_dir):
    result = run_script(**cpu_run(tiny_model_dir, None, tmp_path / "out"), env=offline(tmp_path))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    message = last_line(result.stderr)
    assert message.startswith("run_classifier.py: error: XNLI could not be downloaded (")
    assert message.endswith(
        "Without network, pass --data_dir with XNLI-1.0/xnli.{dev,test}.tsv and "
        "XNLI-MT-1.0/multinli/multinli.train.<lang>.tsv (README: Data)"
    )
    assert not (tmp_path / "out").exists()


def test_a_failed_start_removes_the_output_dir_it_made_but_not_one_that_was_there(tmp_path, tiny_model_dir, xnli_dir):
    data_dir = tmp_path / "xnli"
    shutil.copytree(xnli_dir, data_dir)
    os.remove(data_dir / "XNLI-1.0" / "xnli.test.tsv")
    assert run_main(**cpu_run(tiny_model_dir, data_dir, tmp_path / "new")).returncode == 2
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("kept")
    assert run_main(**cpu_run(tiny_model_dir, data_dir, tmp_path / "mine")).returncode == 2
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]


def test_missing_training_files_are_named_before_a_model_loads_with_the_languages_at_hand(
    tmp_path, tiny_model_dir, xnli_dir
):
    data_dir = tmp_path / "xnli"
    shutil.copytree(xnli_dir, data_dir)
    train_folder = data_dir / "XNLI-MT-1.0" / "multinli"
    for lang in ("el", "bg", "th"):
        os.remove(train_folder / f"multinli.train.{lang}.tsv")
    no_model = tmp_path / "config-only"  # loading it would fail: the data's error comes first
    no_model.mkdir()
    shutil.copy(os.path.join(tiny_model_dir, "config.json"), no_model)
    result = run_main(**cpu_run(no_model, data_dir, tmp_path / "out", task_type="translate-train-all"))
    assert result.returncode == 2
    missing = ", ".join(str(train_folder / f"multinli.train.{lang}.tsv") for lang in ("el", "bg", "th"))
    assert last_line(result.stderr) == (
        f"run_classifier.py: error: {data_dir}: missing XNLI file(s): {missing} (to train on the languages at "
        "hand: --train_languages en fr es de ru tr ar vi zh hi sw ur)"
    )
    assert not (tmp_path / "out").exists()


def test_evaluating_a_model_that_was_never_fine_tuned_is_refused(tmp_path, tiny_model_dir, xnli_dir):
    result = run_main("--eval_only", **cpu_run(tiny_model_dir, xnli_dir, tmp_path / "eval"))
    assert result.returncode == 2
    assert last_line(result.stderr) == (
        f"run_classifier.py: error: --model_name_or_path {tiny_model_dir}: not fine-tuned for XNLI (PaddleNLP "
        "initializes classifier.bias, classifier.weight at random, so its predictions would be chance); pass a "
        "checkpoint of a training run, or --allow_untrained_classifier"
    )
    allowed = run_main(
        "--eval_only", "--allow_untrained_classifier", **cpu_run(tiny_model_dir, xnli_dir, tmp_path / "e2")
    )
    assert allowed.returncode == 0, allowed.stderr


def test_training_says_in_one_plain_line_that_the_classifier_starts_at_random(tmp_path, tiny_model_dir, xnli_dir):
    result = run_script(**cpu_run(tiny_model_dir, xnli_dir, tmp_path / "out", max_steps=2, save_steps=2))
    assert result.returncode == 0, result.stderr
    assert (
        f"INFO {tiny_model_dir}: classifier.bias, classifier.weight start at random (fine-tuning trains them)"
        in result.stderr
    )
    assert "TRAIN this model" not in result.stderr and "\x1b[" not in result.stderr


def test_a_local_directory_that_cannot_be_loaded_is_named_as_given(tmp_path, tiny_model_dir, xnli_dir):
    model_dir = tmp_path / "minilm2"
    model_dir.mkdir()
    shutil.copy(os.path.join(tiny_model_dir, "config.json"), model_dir)  # no tokenizer files, no weights
    result = run_script(**cpu_run(model_dir, xnli_dir, tmp_path / "out"), env=offline(tmp_path))
    assert result.returncode == 2
    message = last_line(result.stderr)
    assert message == (
        f"run_classifier.py: error: --model_name_or_path {model_dir}: no tokenizer files (expected tokenizer.json, "
        "or sentencepiece.bpe.model and vocab.txt); save the tokenizer there with save_pretrained, or pass "
        "--tokenizer_name_or_path"
    )
    assert ".paddlenlp/models" not in message and "download" not in message


@pytest.mark.parametrize(
    "script, arguments, message",
    [
        (
            "run_classifier.py",
            [
                "--task_type",
                "cross-lingual-transfer",
                "--model_name_or_path",
                "ernie-m-base",
                "--output_dir",
                "out",
                "--lerning_rate",
                "1e-5",
            ],
            "run_classifier.py: error: unrecognized arguments: --lerning_rate 1e-5 (did you mean --learning_rate?)",
        ),
        ("run_classifier.py", ["--task_type"], "run_classifier.py: error: argument --task_type: expected one argument"),
        (
            "sanity_check.py",
            ["--sed", "3"],
            "sanity_check.py: error: unrecognized arguments: --sed 3 (did you mean --seed?)",
        ),
        (
            "sanity_check.py",
            ["--seed", "-1"],
            "sanity_check.py: error: argument --seed: expected a whole number from 0 to 2147483647, got '-1'",
        ),
        ("aggregate.py", [], "aggregate.py: error: the following arguments are required: RUN_DIR"),
        (
            "infer_static.py",
            ["--model_dir", "x"],
            "infer_static.py: error: the following arguments are required: --predict_file",
        ),
        (
            "infer_static.py",
            ["--model_dir", "x", "--predict_file", "pairs.tsv"],
            "infer_static.py: error: --model_dir x: no exported graph (inference.json and inference.pdiparams missing)",
        ),
        (
            "benchmarks/fidelity.py",
            ["--model_dir", "nowhere", "--xnli_dir", "x", "--reference", "recorded.json"],
            "fidelity.py: error: --model_dir nowhere: no config.json (expected a Hugging Face checkpoint directory)",
        ),
        (
            "benchmarks/fidelity.py",
            ["--model_dir", "nowhere", "--xnli_dir", "x", "--transformers_python", "/no/such/python"],
            "fidelity.py: error: --transformers_python /no/such/python: no such program",
        ),
        (
            "benchmarks/fidelity.py",
            ["--model_dir", "nowhere", "--xnli_dir", "x", "--reference", "recorded.json", "--output_dir", "README.md"],
            "fidelity.py: error: --output_dir README.md: a file, not a directory",
        ),
        ("benchmark.py", ["--setting", "fast"], "benchmark.py: error: argument --setting: invalid choice: 'fast'"),
        ("benchmark.py", ["--train_steps", "0"], "benchmark.py: error: --train_steps must be at least 1, got 0"),
        (
            "benchmark.py",
            ["--work_dir", "README.md"],
            "benchmark.py: error: --work_dir README.md: a file, not a directory",
        ),
        (
            "benchmark.py",
            ["--xnli_dir", "no-xnli-here"],
            "benchmark.py: error: --xnli_dir no-xnli-here: missing XNLI file(s): no-xnli-here/XNLI-1.0/xnli.dev.tsv",
        ),
        (
            "benchmark.py",
            ["--model", "base-multilingual"],
            "benchmark.py: error: argument --model: 'base-multilingual': expected base or large, or a checkpoint "
            "directory",
        ),
        (
            "benchmark.py",
            ["--model", fixture_dir("bert")],
            f"benchmark.py: error: argument --model: {fixture_dir('bert')}: config.json of 'bert' in Hugging Face's "
            "layout; the benchmark compares ERNIE-M as PaddleNLP saves it (or --model base or large)",
        ),
        (
            "benchmark.py",
            ["--setting", "transformers", "--work_dir", "nowhere"],
            "benchmark.py: error: --setting transformers reads the token ids a whole run writes (peer-batches.npz), "
            "and --work_dir nowhere has none",
        ),
    ],
)
def test_argument_errors_are_one_line_in_every_script(script, arguments, message):
    result = run_script(*arguments, script=script)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(message), result.stderr


def test_a_python_for_the_transformers_peer_is_checked_for_what_the_peer_imports():
    assert python_problem(sys.executable, ("numpy", "json")) is None
    assert python_problem(sys.executable, ("numpy", "no_such_package")) == f"{sys.executable} has no no_such_package"
    assert python_problem("/no/such/python", ("numpy",)) == "/no/such/python: no such program"
