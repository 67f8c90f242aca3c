"""The command line, end to end: arguments, training, evaluation-only, both settings, two processes."""

import errno
import json
import os
import re
import shutil

import numpy as np
import paddle
import pytest

import infer_static
from ernie_m_xnli.data.synthetic import write_xnli_corpus
from ernie_m_xnli.models.inference import check_loads_back
from ernie_m_xnli.setup.arguments import parse_args
from utils import LABELS, XNLI_LANGUAGES, available_cpu_cores, has_bfloat16_instructions

from conftest import cpu_device_line, cpu_run, flags, last_line, png_size, read_results, run_main, run_script

REQUIRED = ["--task_type", "cross-lingual-transfer", "--model_name_or_path", "ernie-m-base", "--output_dir", "out"]

# Settings under which the tiny model learns the synthetic task within a few seconds.
FAST_TRAINING = dict(
    learning_rate="1e-3", layerwise_decay="1.0", warmup_proportion="0.1", batch_size=16, logging_steps=25
)


def printed_table(stdout):
    """{language: accuracy in %} from the Markdown table the script prints."""
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    header, row = lines[0], lines[-1]
    names = [cell.strip() for cell in header.strip("|").split("|")][1:]
    values = [cell.strip() for cell in row.strip("|").split("|")][1:]
    return dict(zip(names, map(float, values)))


def assert_table_matches_results(stdout, results):
    table = printed_table(stdout)
    assert list(table) == [*XNLI_LANGUAGES, "Avg"]
    for lang in XNLI_LANGUAGES:
        assert table[lang] == round(results["test_accuracy"][lang], 1)
    assert table["Avg"] == round(results["test_accuracy"]["avg"], 1)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--batch_size", "0"], "--batch_size must be at least 1, got 0"),
        (["--layerwise_decay", "0"], "--layerwise_decay must be in (0, 1], got 0.0"),
        (["--layerwise_decay", "1.5"], "--layerwise_decay must be in (0, 1], got 1.5"),
        (["--learning_rate", "-1"], "--learning_rate must be positive"),
        (["--max_seq_length", "513"], "--max_seq_length must be between 6 and 512"),
        (["--max_seq_length", "5"], "--max_seq_length must be between 6 and 512"),
        (["--output_dir", "README.md"], "--output_dir README.md is a file, expected a directory"),
        (["--export_hf_dir", "README.md"], "--export_hf_dir README.md is a file, expected a directory"),
        (["--export_model_dir", "README.md/x"], "--export_model_dir README.md/x cannot be created: /"),
        (["--tokenizer_name_or_path", "README.md"], "--tokenizer_name_or_path README.md is a file, expected a"),
        (["--cache_dir", "README.md"], "--cache_dir README.md is a file, expected a directory"),
        (["--save_total_limit", "0"], "--save_total_limit must be at least 1"),
        (["--cpu_threads", "-1"], "--cpu_threads must be non-negative, got -1"),
        (["--preprocessing_num_workers", "-2"], "--preprocessing_num_workers must be non-negative, got -2"),
        (["--max_seq_length", "64", "--memory_length", "60"], "--memory_length must be at least 0 and below"),
        (["--model_name_or_path", "no/such/dir"], "--model_name_or_path no/such/dir: no such directory (a name is"),
        (["--data_dir", "no/such/dir"], "--data_dir no/such/dir: no such directory"),
        (
            ["--model_name_or_path", "tests/fixtures/hf/bert", "--predict_file", "no/such.tsv"],
            "--predict_file no/such.tsv: no such file",
        ),
        (
            ["--model_name_or_path", "tests/fixtures/hf/bert", "--predict_file", "tests"],
            "--predict_file tests: a directory, not a file",
        ),
        (["--task_type", "zero-shot"], "argument --task_type: invalid choice: 'zero-shot'"),
        (
            ["--use_amp", "Ture"],
            "argument --use_amp: expected one of true, t, yes, y, 1, on or false, f, no, n, 0, off (any case), "
            "got 'Ture'",
        ),
        (["--eval_only"], "--eval_only needs a fine-tuned checkpoint directory"),
        (
            ["--eval_backend", "inference"],
            "--eval_backend inference runs on the CPU only (oneDNN), so it goes with --device cpu, not --device gpu",
        ),
    ],
)
def test_invalid_arguments_are_refused_with_the_argument_named(capsys, arguments, message):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(REQUIRED + arguments)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.splitlines()[-1]


def test_upstream_defaults_and_boolean_flags():
    args = parse_args(REQUIRED)
    assert (args.max_seq_length, args.learning_rate, args.batch_size, args.num_train_epochs) == (256, 5e-5, 16, 5)
    assert (args.layerwise_decay, args.warmup_proportion, args.scale_loss, args.device) == (0.8, 0.1, 32768, "gpu")
    assert args.use_amp is False and args.memory_length == 0 and args.select_on == "avg"
    assert parse_args(REQUIRED + ["--use_amp", "True"]).use_amp is True
    assert args.packing is True and args.eval_backend == "dynamic"
    assert parse_args(REQUIRED + ["--device", "cpu"]).eval_backend == "inference"
    assert parse_args(REQUIRED + ["--use_amp", "false"]).use_amp is False
    assert parse_args(REQUIRED + ["--use_amp"]).use_amp is True


def test_a_directory_without_config_is_refused_before_loading(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        parse_args([*REQUIRED[:3], str(tmp_path), *flags(output_dir=tmp_path / "out", device="cpu")])
    assert exit_info.value.code == 2
    expected = f"--model_name_or_path {tmp_path}: no config.json (expected a directory saved with save_pretrained)"
    assert last_line(capsys.readouterr().err).endswith(expected)


def test_missing_xnli_files_are_named_in_one_line(tmp_path, tiny_model_dir, xnli_dir):
    data_dir = tmp_path / "xnli"
    shutil.copytree(xnli_dir, data_dir)
    os.remove(data_dir / "XNLI-MT-1.0" / "multinli" / "multinli.train.sw.tsv")
    result = run_main(**cpu_run(tiny_model_dir, data_dir, tmp_path / "out", task_type="translate-train-all"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert last_line(result.stderr).startswith("run_classifier.py: error: ")
    assert "multinli.train.sw.tsv" in last_line(result.stderr)


def damage_rows(path, damaged_rows):
    """Replace rows of a file: {line number: new bytes}."""
    lines = path.read_bytes().splitlines(keepends=True)
    for line_number, row in damaged_rows.items():
        lines[line_number - 1] = row
    path.write_bytes(b"".join(lines))


@pytest.mark.parametrize(
    "damaged_file, damage, message",
    [
        ("XNLI-1.0/xnli.dev.tsv", b"a\tb\n", "3: expected 19 tab-separated fields, found 2"),
        (
            "XNLI-MT-1.0/multinli/multinli.train.en.tsv",
            b"a\xff\tb\tneutral\n",
            "3: invalid UTF-8 (invalid start byte at byte 1)",
        ),
    ],
)
def test_a_malformed_row_is_named_by_file_and_line(tmp_path, tiny_model_dir, xnli_dir, damaged_file, damage, message):
    data_dir = tmp_path / "xnli"
    shutil.copytree(xnli_dir, data_dir)
    damage_rows(data_dir / damaged_file, {3: damage})
    code, _, stderr = run_main(**cpu_run(tiny_model_dir, data_dir, tmp_path / "out"))
    assert code == 2
    assert last_line(stderr).endswith(f" error: {data_dir / damaged_file}:{message}")


def test_a_few_malformed_training_rows_are_skipped_and_reported(tmp_path, tiny_model_dir):
    data_dir = write_xnli_corpus(tmp_path / "xnli", num_train=400, num_eval=6)
    train_file = tmp_path / "xnli" / "XNLI-MT-1.0" / "multinli" / "multinli.train.en.tsv"
    damage_rows(train_file, {10: b"a\tb\n", 20: b"a\tb\tneutral\tx\n", 30: b"only one field\n"})
    code, _, stderr = run_main(**cpu_run(tiny_model_dir, data_dir, tmp_path / "out", max_steps=2, save_steps=2))
    assert code == 0, stderr
    assert f"WARNING {train_file}: 3 row(s) with a wrong number of fields skipped (line 10, 20, 30)" in stderr
    assert "train: 397 pairs in 1 language(s) -> 397 inputs; 3 empty or malformed rows skipped" in stderr


def test_a_training_file_with_many_malformed_rows_is_refused(tmp_path, tiny_model_dir):
    data_dir = write_xnli_corpus(tmp_path / "xnli", num_train=400, num_eval=6)
    train_file = tmp_path / "xnli" / "XNLI-MT-1.0" / "multinli" / "multinli.train.en.tsv"
    damage_rows(train_file, {line: b"a\tb\n" for line in range(2, 402, 2)})
    code, _, stderr = run_main(**cpu_run(tiny_model_dir, data_dir, tmp_path / "out", max_steps=2, save_steps=2))
    assert code == 2
    assert last_line(stderr).endswith(
        f" error: {train_file}:2: expected 3 tab-separated fields, found 2; 200 of its 400 rows "
        "have a wrong number of fields (more than 1%): not an XNLI file of this layout"
    )


def test_dev_and_test_files_of_another_size_are_named_in_a_warning(tmp_path, tiny_model_dir, xnli_dir):
    code, _, stderr = run_main(
        **cpu_run(tiny_model_dir, xnli_dir, tmp_path / "out", max_steps=2, save_steps=2, cache_dir="")
    )
    assert code == 0, stderr
    counts = " ".join(f"{lang} 24" for lang in XNLI_LANGUAGES)
    dev_file = os.path.join(xnli_dir, "XNLI-1.0", "xnli.dev.tsv")
    assert f"WARNING {dev_file}: 15 language(s) without XNLI-1.0's 2490 dev pairs ({counts})" in stderr


@pytest.mark.skipif(paddle.is_compiled_with_cuda(), reason="this PaddlePaddle build has CUDA")
def test_an_unavailable_device_is_said_plainly(capsys, tmp_path, tiny_model_dir, xnli_dir):
    from run_classifier import main

    with pytest.raises(SystemExit) as exit_info:
        main([*REQUIRED[:3], tiny_model_dir, *flags(output_dir=tmp_path, data_dir=xnli_dir)])
    assert exit_info.value.code == 2
    assert "--device gpu: this PaddlePaddle build has no CUDA support" in last_line(capsys.readouterr().err)
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir, xnli_dir):
    """A cross-lingual-transfer run of 300 steps, dev evaluated every 50 steps, checkpoints every 100."""
    output_dir = tmp_path_factory.mktemp("clt")
    training = dict(max_steps=300, eval_steps=50, save_steps=100, **FAST_TRAINING)
    result = run_script(**cpu_run(tiny_model_dir, xnli_dir, output_dir, **training))
    assert result.returncode == 0, result.stderr
    return output_dir, result


def first_best(dev_history, protocol):
    """The dev evaluation that selection keeps under `protocol`: the first of the highest scores."""
    return max(dev_history, key=lambda entry: entry[protocol])


def test_training_writes_checkpoints_results_and_the_table(trained):
    output_dir, result = trained
    results = read_results(output_dir)
    assert [entry["step"] for entry in results["dev_history"]] == [50, 100, 150, 200, 250, 300]
    best = {protocol: first_best(results["dev_history"], protocol)["step"] for protocol in ("avg", "en")}
    assert results["selected_steps"] == best
    assert results["checkpoint"] == str(output_dir / f"best-{best['avg']}") and results["selected_step"] == best["avg"]
    assert results["dev_accuracy"]["avg"] == pytest.approx(first_best(results["dev_history"], "avg")["avg"])
    assert results["test_accuracy"] == results["test_accuracy_select_avg"]
    assert results["dev_accuracy_select_en"]["en"] == pytest.approx(first_best(results["dev_history"], "en")["en"])

    names = set(os.listdir(output_dir))
    assert {"checkpoint-100", "checkpoint-200", "checkpoint-300", "results.json", "results.md", "results.png"} < names
    assert {f"best-{step}" for step in best.values()} <= names
    assert not {name for name in names if name.startswith("checkpoint-")} - {
        "checkpoint-100",
        "checkpoint-200",
        "checkpoint-300",
    }
    assert len({name for name in names if name.startswith("best-")}) <= 2 + 3  # selected, or kept for a checkpoint
    for name in ("config.json", "model.safetensors", "vocab.txt", "sentencepiece.bpe.model", "manifest.json"):
        assert (output_dir / f"best-{best['avg']}" / name).is_file(), name
    assert not (output_dir / f"best-{best['avg']}" / "optimizer.npz").exists()  # weights only

    checkpoint = output_dir / "checkpoint-300"
    for name in (
        "config.json",
        "model.safetensors",
        "vocab.txt",
        "sentencepiece.bpe.model",
        "tokenizer_config.json",
        "optimizer.npz",
        "optimizer.json",
        "rng_state.json",
        "trainer_state.json",
        "manifest.json",
    ):
        assert (checkpoint / name).is_file(), name
    # Data only: nothing in a checkpoint is unpickled to load it.
    assert not [name for name in os.listdir(checkpoint) if name.endswith((".pdparams", ".pdopt", ".pkl"))]
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["id2label"] == {"0": "entailment", "1": "neutral", "2": "contradiction"}
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 300

    assert f"selected on dev avg (step {best['avg']})" in result.stdout
    assert png_size(output_dir / "results.png") == (1200, 500)
    assert results["global_step"] == 300
    assert_table_matches_results(result.stdout, results)
    assert "train: 240 pairs in 1 language(s)" in result.stderr
    assert re.search(r"step 300/300, epoch 20, loss [\d.]+, lr 0.000e\+00, [\d.]+ examples/s", result.stderr)


def test_results_md_shows_both_selection_protocols_beside_the_paper(trained):
    output_dir, _ = trained
    results = read_results(output_dir)
    markdown = (output_dir / "results.md").read_text()
    for protocol in ("avg", "en"):
        step = results["selected_steps"][protocol]
        name = f"{os.path.basename(results['model'])}, selected on dev {protocol} (step {step})"
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {name} |"))
        cells = [float(cell) for cell in row.strip("|").split("|")[1:]]
        expected = results[f"test_accuracy_select_{protocol}"]
        assert cells == [round(expected[lang], 1) for lang in (*XNLI_LANGUAGES, "avg")]


def test_training_learns_the_task_and_shuffled_labels_do_not(trained, tmp_path, tiny_model_dir):
    accuracy = read_results(trained[0])["test_accuracy"]
    assert accuracy["en"] >= 90 and accuracy["avg"] >= 75

    shuffled_dir = write_xnli_corpus(tmp_path / "xnli", shuffle_train_labels=True)
    result = run_main(
        **cpu_run(tiny_model_dir, shuffled_dir, tmp_path / "out", max_steps=300, save_steps=300, **FAST_TRAINING)
    )
    assert result.returncode == 0, result.stderr
    assert read_results(tmp_path / "out")["test_accuracy"]["avg"] <= 55


def test_evaluation_only_reproduces_the_selected_checkpoint(trained, tmp_path, xnli_dir):
    training_results = read_results(trained[0])
    result = run_script("--eval_only", **cpu_run(training_results["checkpoint"], xnli_dir, tmp_path))
    assert result.returncode == 0, result.stderr
    results = read_results(tmp_path)
    assert results["dev_accuracy"] == training_results["dev_accuracy"]
    assert results["test_accuracy"] == training_results["test_accuracy"]
    assert "train:" not in result.stderr and "training" not in result.stderr
    assert_table_matches_results(result.stdout, results)


def test_translate_train_all_trains_on_all_15_languages(tmp_path, tiny_model_dir, xnli_dir):
    training = dict(max_steps=30, save_steps=30, **FAST_TRAINING)
    result = run_main(**cpu_run(tiny_model_dir, xnli_dir, tmp_path, task_type="translate-train-all", **training))
    assert result.returncode == 0, result.stderr
    assert f"train: {15 * 240} pairs in 15 language(s)" in result.stderr
    assert "225 steps per epoch" in result.stderr
    assert read_results(tmp_path)["task_type"] == "translate-train-all"
    assert_table_matches_results(result.stdout, read_results(tmp_path))


def test_memory_length_turns_long_pairs_into_windows(tmp_path, tiny_model_dir):
    data_dir = write_xnli_corpus(tmp_path / "xnli", num_train=60, num_eval=6, premise_words=(20, 40))
    common = dict(max_seq_length=24, max_steps=10, save_steps=10, **FAST_TRAINING)
    result = run_main(**cpu_run(tiny_model_dir, data_dir, tmp_path / "windows", memory_length=8, **common))
    assert result.returncode == 0, result.stderr
    inputs = int(re.search(r"dev: 90 pairs in 15 language\(s\) -> (\d+) inputs", result.stderr).group(1))
    assert inputs > 2 * 90

    truncated = run_main(**cpu_run(tiny_model_dir, data_dir, tmp_path / "truncated", **common))
    assert "dev: 90 pairs in 15 language(s) -> 90 inputs" in truncated.stderr

    # Windows through Paddle Inference (the default on cpu) as through the dynamic graph.
    results = {}
    for backend in ("dynamic", "inference"):
        windows = dict(memory_length=8, max_seq_length=24, eval_backend=backend)
        output_dir = tmp_path / f"eval-{backend}"
        evaluated = run_main(
            "--eval_only", **cpu_run(tmp_path / "windows" / "checkpoint-10", data_dir, output_dir, **windows)
        )
        assert evaluated.returncode == 0, evaluated.stderr
        results[backend] = read_results(output_dir)
    assert results["inference"]["test_accuracy"] == results["dynamic"]["test_accuracy"]
    assert results["inference"]["test_loss"] == pytest.approx(results["dynamic"]["test_loss"], rel=1e-4)


def test_two_processes_share_the_work_and_rank_0_reports(tmp_path, tiny_model_dir, xnli_dir):
    log_dir = tmp_path / "log"
    run = dict(max_steps=16, save_steps=8, cpu_matmul="auto", cache_dir=tmp_path / "cache", **FAST_TRAINING)
    result = run_script(
        **cpu_run(tiny_model_dir, xnli_dir, tmp_path / "out", **run),
        launcher=["-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", log_dir],
    )
    rank0_log = (log_dir / "workerlog.0").read_text()
    rank1_log = (log_dir / "workerlog.1").read_text()
    assert result.returncode == 0, rank0_log[-3000:] + rank1_log[-3000:]
    assert "16 per card x 2 card(s) x 1 accumulated = 32 per step, 8 steps per epoch" in rank0_log
    threads = max(1, available_cpu_cores() // 2)
    assert cpu_device_line(threads) in rank0_log
    results = read_results(tmp_path / "out")
    assert_table_matches_results(rank0_log, results)
    assert "| Model |" not in rank1_log and "INFO" not in rank1_log
    # rank 0 measured the matmul libraries (rank 1 waited for its answer), once
    assert re.search(r"float32 products by .* \(measured now: mkl [\d.]+ GFLOP/s, onednn [\d.]+ GFLOP/s\)", rank0_log)
    assert len(json.loads((tmp_path / "cache" / "cpu_matmul_paths.json").read_text())) == 1
    names = set(os.listdir(tmp_path / "out"))
    assert {name for name in names if not name.startswith("best-")} == {
        "checkpoint-8",
        "checkpoint-16",
        "results.json",
        "results.md",
        "results.png",
        "test_predictions.tsv",
        "visualdl",
    }

    # The test split was evaluated on the selected checkpoint, half the pairs on each rank.
    single = run_script("--eval_only", **cpu_run(results["checkpoint"], xnli_dir, tmp_path / "eval"))
    assert single.returncode == 0, single.stderr
    threads = available_cpu_cores()
    assert cpu_device_line(threads) in single.stderr
    single_results = read_results(tmp_path / "eval")
    assert single_results["test_accuracy"] == results["test_accuracy"]
    assert single_results["test_loss"] == pytest.approx(results["test_loss"], rel=1e-5)


def read_predictions(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return header, [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def test_predictions_for_an_xnli_file_match_the_reported_accuracy(trained, tmp_path, xnli_dir):
    training_results = read_results(trained[0])
    test_file = os.path.join(xnli_dir, "XNLI-1.0", "xnli.test.tsv")
    result = run_script(**cpu_run(training_results["checkpoint"], None, tmp_path, predict_file=test_file))
    assert result.returncode == 0, result.stderr
    header, rows = read_predictions(tmp_path / "predictions.tsv")
    assert header == [
        "language",
        *("premise", "hypothesis", "prediction", "p_entailment", "p_neutral", "p_contradiction", "label"),
    ]
    assert len(rows) == 15 * 24
    assert [row["language"] for row in rows[::24]] == list(XNLI_LANGUAGES)
    for row in rows:
        probabilities = [float(row[f"p_{label}"]) for label in LABELS]
        assert sum(probabilities) == pytest.approx(1, abs=1e-5)
        assert row["prediction"] == LABELS[probabilities.index(max(probabilities))]
    accuracy = sum(row["prediction"] == row["label"] for row in rows) / len(rows)
    assert 100 * accuracy == pytest.approx(training_results["test_accuracy"]["avg"])
    assert not (tmp_path / "results.json").exists()


def test_predictions_for_plain_pairs_without_header(trained, tmp_path):
    pairs_file = tmp_path / "pairs.tsv"
    pairs_file.write_text("ekaka esuta.\telomi yes.\n\nekaka.\tno esuta.\n", encoding="utf-8")
    predict = cpu_run(read_results(trained[0])["checkpoint"], None, tmp_path / "out", predict_file=pairs_file)
    result = run_script(**predict)
    assert result.returncode == 0, result.stderr
    _, rows = read_predictions(tmp_path / "out" / "predictions.tsv")
    assert [(row["premise"], row["hypothesis"], row["label"]) for row in rows] == [
        ("ekaka esuta.", "elomi yes.", ""),
        ("ekaka.", "no esuta.", ""),
    ]
    assert "predicting 2 pairs" in result.stderr and "(1 rows with an empty field skipped)" in result.stderr

    pairs_file.write_text("a\tb\nc\td\te\n", encoding="utf-8")
    bad = run_script(**predict)
    assert bad.returncode == 2
    assert last_line(bad.stderr) == (
        f"run_classifier.py: error: {pairs_file}:2: expected premise<TAB>hypothesis, found 3 field(s)"
    )


def test_the_exported_static_graph_gives_the_dynamic_logits(trained, tmp_path, xnli_dir, tokenizer):
    from paddlenlp.transformers import ErnieMForSequenceClassification

    from ernie_m_xnli.data.batching import pad_batch
    from ernie_m_xnli.data.encoding import encode_pairs
    from ernie_m_xnli.data.xnli_files import read_eval_split

    checkpoint = read_results(trained[0])["checkpoint"]
    result = run_script("--eval_only", **cpu_run(checkpoint, xnli_dir, tmp_path, export_model_dir=tmp_path / "export"))
    assert result.returncode == 0, result.stderr
    assert {"inference.json", "inference.pdiparams", "vocab.txt", "tokenizer_config.json"} <= set(
        os.listdir(tmp_path / "export")
    )

    pairs = read_eval_split(os.path.join(xnli_dir, "XNLI-1.0", "xnli.dev.tsv")).pairs_by_language["de"][:8]
    input_ids, attention_mask = pad_batch(encode_pairs(tokenizer, pairs, 64, 0).input_ids, tokenizer.pad_token_id)
    position_ids = np.tile(np.arange(input_ids.shape[1]), (len(input_ids), 1))
    dynamic = ErnieMForSequenceClassification.from_pretrained(checkpoint)
    dynamic.eval()
    with paddle.no_grad():
        expected = dynamic(paddle.to_tensor(input_ids), attention_mask=paddle.to_tensor(attention_mask)).numpy()
    exported = paddle.jit.load(str(tmp_path / "export" / "inference"))
    logits = exported(paddle.to_tensor(input_ids), paddle.to_tensor(attention_mask), paddle.to_tensor(position_ids))
    np.testing.assert_allclose(logits.numpy(), expected, atol=1e-5)

    # Its weights cut short, as a full disk leaves them (Paddle writes them without an error): not an export.
    check_loads_back(str(tmp_path / "export" / "inference"))
    weights = tmp_path / "export" / "inference.pdiparams"
    os.truncate(weights, weights.stat().st_size // 2)
    with pytest.raises(OSError, match="the weights were written short") as short:
        check_loads_back(str(tmp_path / "export" / "inference"))
    assert short.value.errno == errno.ENOSPC


def test_infer_static_labels_pairs_as_predict_file_does(trained, tmp_path, xnli_dir, capsys):
    checkpoint = read_results(trained[0])["checkpoint"]
    test_file = os.path.join(xnli_dir, "XNLI-1.0", "xnli.test.tsv")
    exported = run_script(
        **cpu_run(checkpoint, None, tmp_path, predict_file=test_file, export_model_dir=tmp_path / "inference")
    )
    assert exported.returncode == 0, exported.stderr
    assert "UserWarning" not in exported.stderr
    result = run_script(model_dir=tmp_path / "inference", predict_file=test_file, script="infer_static.py")
    assert result.returncode == 0, result.stderr
    labels = [line.split("\t")[2] for line in result.stdout.splitlines()]
    _, rows = read_predictions(tmp_path / "predictions.tsv")
    assert labels == [row["prediction"] for row in rows] and len(labels) == 15 * 24

    # --output_file: the same rows, whole; one that cannot be written is one line, before any prediction.
    arguments = ["--model_dir", str(tmp_path / "inference"), "--predict_file", test_file, "--output_file"]
    infer_static.main([*arguments, str(tmp_path / "labels.tsv")])
    assert (tmp_path / "labels.tsv").read_text() == result.stdout
    for output_file, problem in [(tmp_path, "a directory, not a file"), (tmp_path / "no" / "labels.tsv", "cannot")]:
        with pytest.raises(SystemExit) as exit:
            infer_static.main([*arguments, str(output_file)])
        assert exit.value.code == 2
        assert last_line(capsys.readouterr().err).startswith(
            f"infer_static.py: error: --output_file {output_file}: {problem}"
        )


@pytest.mark.skipif(not has_bfloat16_instructions(), reason="this CPU lacks avx512_bf16")
def test_bfloat16_predictions_of_run_classifier_and_infer_static_agree(trained, tmp_path, xnli_dir):
    checkpoint = read_results(trained[0])["checkpoint"]
    test_file = os.path.join(xnli_dir, "XNLI-1.0", "xnli.test.tsv")
    probabilities = {}
    for precision in ("float32", "bfloat16"):
        amp = dict(use_amp="true", amp_dtype="bfloat16") if precision == "bfloat16" else {}
        amp = amp or dict(export_model_dir=tmp_path / "inference")
        predicted = run_main(**cpu_run(checkpoint, None, tmp_path / precision, predict_file=test_file, **amp))
        assert predicted.returncode == 0, predicted.stderr
        _, rows = read_predictions(tmp_path / precision / "predictions.tsv")
        probabilities[precision] = np.array([[float(row[f"p_{label}"]) for label in LABELS] for row in rows])
    assert not np.array_equal(probabilities["bfloat16"], probabilities["float32"])  # computed in bfloat16
    np.testing.assert_allclose(probabilities["bfloat16"], probabilities["float32"], atol=0.02)

    options = dict(model_dir=tmp_path / "inference", predict_file=test_file, script="infer_static.py")
    result = run_script("--use_amp", "--amp_dtype", "bfloat16", **options)
    assert result.returncode == 0, result.stderr
    _, rows = read_predictions(tmp_path / "bfloat16" / "predictions.tsv")
    assert [line.split("\t")[2] for line in result.stdout.splitlines()] == [row["prediction"] for row in rows]


def test_paddle_inference_evaluates_and_predicts_as_the_dynamic_graph(trained, tmp_path, xnli_dir):
    checkpoint = read_results(trained[0])["checkpoint"]
    test_file = os.path.join(xnli_dir, "XNLI-1.0", "xnli.test.tsv")
    for backend in ("dynamic", "inference"):
        evaluated = run_main("--eval_only", **cpu_run(checkpoint, xnli_dir, tmp_path / backend, eval_backend=backend))
        assert evaluated.returncode == 0, evaluated.stderr
        assert "cannot run here" not in evaluated.stderr
        predicted = run_main(
            **cpu_run(
                checkpoint, None, tmp_path / f"{backend}-predictions", predict_file=test_file, eval_backend=backend
            )
        )
        assert predicted.returncode == 0, predicted.stderr
    dynamic, inference = read_results(tmp_path / "dynamic"), read_results(tmp_path / "inference")
    assert (
        inference["test_accuracy"] == dynamic["test_accuracy"] and inference["dev_accuracy"] == dynamic["dev_accuracy"]
    )
    assert inference["test_loss"] == pytest.approx(dynamic["test_loss"], rel=1e-4)
    _, dynamic_rows = read_predictions(tmp_path / "dynamic-predictions" / "predictions.tsv")
    _, inference_rows = read_predictions(tmp_path / "inference-predictions" / "predictions.tsv")
    assert [row["prediction"] for row in inference_rows] == [row["prediction"] for row in dynamic_rows]
    for inference_row, dynamic_row in zip(inference_rows, dynamic_rows):
        for label in LABELS:
            assert float(inference_row[f"p_{label}"]) == pytest.approx(float(dynamic_row[f"p_{label}"]), abs=1e-4)


def test_help_lists_every_argument_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for argument in (
        "--task_type",
        "--max_seq_length",
        "--memory_length",
        "--layerwise_decay",
        "--use_amp",
        "--scale_loss",
        "--predict_file",
        "--export_model_dir",
        "--resume_from_checkpoint",
    ):
        assert argument in help_text
    assert "(default: 256)" in help_text and "(default: 0.8)" in help_text
    assert "(default: None)" not in help_text and "Default: --save_steps." in help_text


def test_the_run_books_commands_use_no_download_and_name_the_selected_model():
    import run_classifier

    commands = run_classifier.__doc__
    assert "checkpoint-10000" not in commands and "best-12000" in commands
    smoke = commands[commands.index("CPU smoke run") :].split("\n\n")[0]
    assert "--device cpu" in smoke and "ernie-m-base" not in smoke


@pytest.mark.parametrize(
    "arguments",
    [
        ["--help"],
        ["--task_type", "zero-shot"],
        [*REQUIRED, "--use_amp", "Ture"],
        [*REQUIRED, "--device", "cpu", "--use_amp", "--amp_dtype", "float16"],  # no CPU computes it
    ],
)
def test_help_and_argument_errors_answer_before_paddle_is_imported(arguments):
    result = run_script(*arguments, launcher=["-X", "importtime"])
    assert result.returncode == (0 if arguments == ["--help"] else 2)
    imported = [line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    assert "ernie_m_xnli.setup.arguments" in imported and "numpy" in imported
    assert not [name for name in imported if name.split(".")[0] in ("paddle", "paddlenlp")]


def test_length_grouped_batches_train_too(tmp_path, tiny_model_dir, xnli_dir):
    # Seed 2: about a third of the seeds stay on a 66% plateau for these 300 steps (5 of 13 measured with
    # the suite's dropout, 3 of 13 with Paddle's; seed 2 leaves it with both: 96.9% and 95.8%).
    training = dict(max_steps=300, save_steps=300, group_by_length="true", seed=2, **FAST_TRAINING)
    result = run_main(**cpu_run(tiny_model_dir, xnli_dir, tmp_path, **training))
    assert result.returncode == 0, result.stderr
    assert read_results(tmp_path)["test_accuracy"]["avg"] >= 75


FLOAT32_PRODUCTS_LINE = r"float32 products by (Paddle's MKL|oneDNN [\d.]+ \(\S+\)) \((.*)\)"


def test_cpu_matmul_auto_measures_the_two_libraries_once_and_says_which_computes(tmp_path, tiny_model_dir, xnli_dir):
    cache_dir = tmp_path / "cache"
    lines = []
    for run in ("first", "second"):
        options = dict(cpu_matmul="auto", cache_dir=cache_dir, max_steps=2, save_steps=2)
        result = run_main(**cpu_run(tiny_model_dir, xnli_dir, tmp_path / run, **options))
        assert result.returncode == 0, result.stderr[-3000:]
        lines.append(re.search(FLOAT32_PRODUCTS_LINE, result.stderr))
    rates = r"mkl [\d.]+ GFLOP/s, onednn [\d.]+ GFLOP/s"
    assert re.fullmatch(f"measured now: {rates}", lines[0][2])
    assert re.fullmatch(f"measured on this CPU before: {rates}; kept in {cache_dir}/cpu_matmul_paths.json", lines[1][2])
    assert lines[0][1] == lines[1][1]


def test_cpu_matmul_names_the_library_it_was_given_and_both_train_alike(tmp_path, tiny_model_dir, xnli_dir):
    histories = {}
    for library, named in (("mkl", "Paddle's MKL"), ("onednn", "oneDNN ")):
        output_dir = tmp_path / library
        result = run_main(
            **cpu_run(tiny_model_dir, xnli_dir, output_dir, cpu_matmul=library, max_steps=6, logging_steps=1)
        )
        assert result.returncode == 0, result.stderr[-3000:]
        line = re.search(FLOAT32_PRODUCTS_LINE, result.stderr)
        assert line[1].startswith(named) and line[2] == f"--cpu_matmul {library}"
        histories[library] = [line["loss"] for line in read_results(output_dir)["train_loss_history"]]
    np.testing.assert_allclose(histories["onednn"], histories["mkl"], rtol=1e-5)
