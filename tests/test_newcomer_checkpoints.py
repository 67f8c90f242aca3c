"""What a new user meets with checkpoints from elsewhere: model names, exports one can hand on,
unnamed labels, and messages that say what is wrong and what to do. (Tokenizer layouts: test_families.)"""

import json
import os
import shutil
import stat

import pytest
from safetensors.numpy import load_file, save_file

from utils import error_reason

from conftest import cpu_run, fixture_dir, last_line, read_results, run_main, run_script

FIXTURE_SEQ_LENGTH = 48
QUICK = dict(max_seq_length=FIXTURE_SEQ_LENGTH, batch_size=8, max_steps=2, disable_tqdm=True)


def copy_of(model_type, directory, drop=()):
    shutil.copytree(fixture_dir(model_type), directory, ignore=shutil.ignore_patterns("reference.json", *drop))
    return directory


def edit_config(directory, **changes):
    path = os.path.join(directory, "config.json")
    with open(path, encoding="utf-8") as file:
        config = json.load(file)
    config.update(changes)
    for key in [key for key, value in changes.items() if value is None]:
        del config[key]
    with open(path, "w", encoding="utf-8") as file:
        json.dump(config, file)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_hub_id_without_network_says_how_to_get_the_directory(tmp_path, xnli_dir):
    # HF_HUB_OFFLINE: huggingface_hub answers at once, as on a machine without network, and sends nothing.
    result = run_script(
        **cpu_run("FacebookAI/xlm-roberta-base", xnli_dir, tmp_path / "run", max_steps=1),
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2
    line = last_line(result.stderr)
    assert line.startswith(
        "run_classifier.py: error: --model_name_or_path FacebookAI/xlm-roberta-base: neither a directory nor a name "
        "PaddleNLP resolves, and the Hugging Face hub did not give it ("
    )
    assert line.endswith(
        "without network, run `huggingface-cli download FacebookAI/xlm-roberta-base --local-dir DIR` on a machine "
        "that has it, then pass --model_name_or_path DIR"
    )
    assert not (tmp_path / "run").exists()


def test_a_hub_id_behind_a_refusing_connection_says_so_in_the_systems_words(tmp_path, xnli_dir, monkeypatch):
    # a real connection, refused by the port (requests wraps the refusal in urllib3's nested reprs)
    for variable in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    result = run_main(**cpu_run("FacebookAI/xlm-roberta-base", xnli_dir, tmp_path / "run", cache_dir=tmp_path / "c"))
    assert result.returncode == 2
    assert last_line(result.stderr) == (
        "run_classifier.py: error: --model_name_or_path FacebookAI/xlm-roberta-base: neither a directory nor a name "
        "PaddleNLP resolves, and the Hugging Face hub did not give it (no connection to the hub: [Errno 111] "
        "Connection refused); without network, run `huggingface-cli download FacebookAI/xlm-roberta-base "
        "--local-dir DIR` on a machine that has it, then pass --model_name_or_path DIR"
    )


def test_error_reasons_are_whole_sentences_of_the_first_line():
    text = "Cannot find a snapshot. Check your connection and try again.\nTraceback follows"
    assert error_reason(OSError(text)) == "Cannot find a snapshot. Check your connection and try again"
    assert error_reason(OSError(text), limit=30) == "Cannot find a snapshot"
    assert error_reason(OSError("one sentence longer than the limit, kept whole"), limit=5) == (
        "one sentence longer than the limit, kept whole"
    )
    assert error_reason(KeyError()) == "KeyError"


@pytest.mark.parametrize("name", ["bert-base-multilingual-cased", "ernie-m-base"])
def test_names_paddlenlp_resolves_are_taken_as_names(name):
    from ernie_m_xnli.models.hub import is_paddlenlp_name, local_model_source

    assert is_paddlenlp_name(name) and local_model_source(name, "") == name


def test_an_export_is_whole_portable_readable_and_replaces_only_an_earlier_export(tmp_path, xnli_dir):
    export_dir = tmp_path / "hf"
    first = run_main(**cpu_run(fixture_dir("xlm-roberta"), xnli_dir, tmp_path / "a", export_hf_dir=export_dir, **QUICK))
    assert first.returncode == 0, first.stderr[-3000:]
    assert (export_dir / "sentencepiece.bpe.model").exists()
    # A BERT export replaces the XLM-R one whole: none of its files stay behind.
    second = run_main(**cpu_run(fixture_dir("bert"), xnli_dir, tmp_path / "b", export_hf_dir=export_dir, **QUICK))
    assert second.returncode == 0, second.stderr[-3000:]
    assert not (export_dir / "sentencepiece.bpe.model").exists() and (export_dir / "vocab.txt").exists()
    assert json.loads((export_dir / "config.json").read_text())["model_type"] == "bert"
    assert [name for name in os.listdir(tmp_path) if name.startswith(".export-")] == []
    # Files get the umask's mode (safetensors makes them 0600), the exported weights included.
    old_umask = os.umask(0o022)
    try:
        expected = 0o644
        assert {name: mode(export_dir / name) for name in os.listdir(export_dir)} == {
            name: expected for name in os.listdir(export_dir)
        }
    finally:
        os.umask(old_umask)
    # No path of this machine inside.
    for name in os.listdir(export_dir):
        if name.endswith(".json"):
            assert (
                str(tmp_path) not in (export_dir / name).read_text() and "/root" not in (export_dir / name).read_text()
            )


@pytest.mark.parametrize("flag", ["export_hf_dir", "export_model_dir"])
def test_an_export_into_a_directory_of_other_files_is_refused_before_training(tmp_path, xnli_dir, flag):
    # An export replaces its directory whole: one holding anything but an earlier export is not its to replace.
    other = tmp_path / "papers"
    other.mkdir()
    (other / "draft.tex").write_text("keep me")
    run = run_main(**cpu_run(fixture_dir("bert"), xnli_dir, tmp_path / "run", **{flag: other}, **QUICK))
    assert run.returncode == 2 and not (tmp_path / "run").exists()
    assert last_line(run.stderr) == (
        f"run_classifier.py: error: --{flag} {other}: not empty and not an earlier export of this suite; "
        "name a new or empty directory"
    )
    assert os.listdir(other) == ["draft.tex"]


def test_converted_weights_in_the_cache_get_the_umasks_mode(tmp_path, xnli_dir):
    old_umask = os.umask(0o022)
    try:
        run = run_main(
            **cpu_run(fixture_dir("bert"), xnli_dir, tmp_path / "run", cache_dir=tmp_path / "cache", **QUICK)
        )
    finally:
        os.umask(old_umask)
    assert run.returncode == 0, run.stderr[-3000:]
    (entry,) = os.listdir(tmp_path / "cache" / "converted")
    assert mode(tmp_path / "cache" / "converted" / entry / "model.safetensors") == 0o644


@pytest.mark.parametrize("id2label", [None, {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}], ids=["none", "generic"])
def test_a_classifier_with_unnamed_labels_is_said_to_be_read_in_xnlis_order(tmp_path, xnli_dir, id2label):
    model = copy_of("xlm-roberta", tmp_path / "model")
    edit_config(model, id2label=id2label, label2id=None)
    trained = run_main(**cpu_run(model, xnli_dir, tmp_path / "run", **QUICK))
    assert trained.returncode == 0, trained.stderr[-3000:]
    said = [line for line in trained.stderr.splitlines() if "its classifier's labels have no names" in line]
    assert len(said) == 1 and " INFO " in said[0]
    assert "taken in XNLI's order (0 entailment, 1 neutral, 2 contradiction)" in said[0]
    assert "give config.json an id2label" in said[0]
    evaluated = run_main("--eval_only", **cpu_run(model, xnli_dir, tmp_path / "e", **QUICK))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "WARNING the label order is unknown: " in evaluated.stderr


def test_a_classifier_for_another_number_of_labels_is_named_as_such(tmp_path, xnli_dir):
    model = copy_of("bert", tmp_path / "model")
    weights = load_file(model / "model.safetensors")
    weights = {name: array[:2] if name.startswith("classifier.") else array for name, array in weights.items()}
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    edit_config(model, id2label={"0": "negative", "1": "positive"}, label2id={"negative": 0, "positive": 1})
    run = run_main(**cpu_run(model, xnli_dir, tmp_path / "run", **QUICK))
    assert run.returncode == 2
    assert last_line(run.stderr) == (
        f"run_classifier.py: error: --model_name_or_path {model}: its classifier has 2 outputs and XNLI 3 labels (a "
        "model fine-tuned for another task): give its encoder without the classifier's weights (classifier.*), "
        "which fine-tuning then trains from scratch"
    )


def test_a_model_without_tokenizer_files_says_so_and_takes_another_directorys(tmp_path, xnli_dir):
    model = copy_of("bert", tmp_path / "model", drop=("vocab.txt", "tokenizer.json"))
    run = run_main(**cpu_run(model, xnli_dir, tmp_path / "run", **QUICK))
    assert run.returncode == 2
    assert last_line(run.stderr) == (
        f"run_classifier.py: error: --model_name_or_path {model}: no tokenizer files (expected tokenizer.json, "
        "or vocab.txt); save the tokenizer there with save_pretrained, or pass --tokenizer_name_or_path"
    )
    run = run_main(**cpu_run(model, xnli_dir, tmp_path / "run", tokenizer_name_or_path=fixture_dir("bert"), **QUICK))
    assert run.returncode == 0, run.stderr[-3000:]
    assert os.path.isfile(os.path.join(read_results(tmp_path / "run")["checkpoint"], "vocab.txt"))


def test_an_export_for_paddle_inference_of_xlm_roberta_points_to_export_hf_dir(tmp_path, xnli_dir):
    options = dict(QUICK, export_model_dir=tmp_path / "inference")
    run = run_main(**cpu_run(fixture_dir("xlm-roberta"), xnli_dir, tmp_path / "run", **options))
    assert run.returncode == 2
    assert last_line(run.stderr).endswith("; --export_hf_dir saves the model for transformers and this suite")
