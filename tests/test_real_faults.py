"""Faults as a user's machine makes them: a real full file system (a small tmpfs) under the checkpoints
and the token cache, a read-only one, and files cut short: a cache entry, a model whose download stopped."""

import contextlib
import json
import os
import shutil
import subprocess

import pytest

from ernie_m_xnli.setup.arguments import parse_args
from ernie_m_xnli.training import checkpoints, trainer
from ernie_m_xnli.training.checkpoints import check_intact
from utils import written_then_renamed

from conftest import cpu_run, fixture_dir, last_line, read_results, run_main, run_script

QUICK_RUN = dict(max_steps=4, save_steps=2, eval_steps=4, visualdl="false", logging_steps=2)


@contextlib.contextmanager
def small_file_system(path, size="16m", read_only=False):
    """A tmpfs of `size` mounted at `path` for the block (root only; the test is skipped otherwise)."""
    os.makedirs(path, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder, leave=0):
    """Take every free byte of `folder`'s file system but `leave`, as another program writing there would."""
    path = os.path.join(folder, "filler")
    with open(path, "wb") as file:
        with contextlib.suppress(OSError):
            while True:
                file.write(b"\0" * (1 << 16))
                file.flush()
    os.truncate(path, max(0, os.path.getsize(path) - leave))


def output_dir_on_a_full_disk(tmp_path, capsys, main, arguments):
    """main(arguments, --output_dir a folder on a full tmpfs): the SystemExit code, the last line on
    stderr, what the folder holds afterwards and its path."""
    with small_file_system(tmp_path / "disk", size="1m") as disk:
        fill(disk)
        with pytest.raises(SystemExit) as exit:
            main([*arguments, "--output_dir", str(disk / "out")])
        return exit.value.code, last_line(capsys.readouterr().err), os.listdir(disk / "out"), disk / "out"


def filling_before(function, when, disk, leave):
    """`function`, which first fills `disk` but `leave` bytes when `when(its path argument)` says so."""

    def fill_then_call(path, *args, **kwargs):
        if when(str(path)):
            fill(disk, leave)
        return function(path, *args, **kwargs)

    return fill_then_call


def in_checkpoint_4(path):
    return "checkpoint-4.partial" in path


@pytest.mark.parametrize(
    "module, name, when, leave",
    [
        # Room for config.json, not for the weights: safetensors raises its own error type.
        (trainer, "save_model", in_checkpoint_4, 8192),
        (checkpoints, "save_state_dict", in_checkpoint_4, 0),  # the optimizer: numpy's npz
        (
            checkpoints,
            "write_json_atomically",
            lambda path: in_checkpoint_4(path) and path.endswith("rng_state.json"),
            0,
        ),
    ],
    ids=["model-safetensors", "optimizer-npz", "json"],
)
def test_a_full_disk_while_saving_stops_in_one_line_and_keeps_the_earlier_checkpoints(
    monkeypatch, tmp_path, tiny_model_dir, xnli_dir, module, name, when, leave
):
    with small_file_system(tmp_path / "disk") as disk:
        output_dir = disk / "run"
        monkeypatch.setattr(module, name, filling_before(getattr(module, name), when, disk, leave))
        arguments = cpu_run(tiny_model_dir, xnli_dir, output_dir, **QUICK_RUN)
        full = run_main(**arguments)
        assert full.returncode == 1, full.stderr[-3000:]
        message = last_line(full.stderr)
        assert message.startswith(
            f"run_classifier.py: error: no space left on the device of {output_dir} while saving checkpoint-4: "
            "free at least "
        )
        assert message.endswith(
            " MB there, then continue with --resume_from_checkpoint latest (the checkpoints saved before are intact)"
        )
        assert sorted(entry for entry in os.listdir(output_dir) if entry.startswith("checkpoint")) == ["checkpoint-2"]
        check_intact(str(output_dir / "checkpoint-2"), "checkpoint-2")

        os.remove(disk / "filler")
        monkeypatch.undo()
        resumed = run_main(**arguments, resume_from_checkpoint="latest")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"INFO resuming from {output_dir}/checkpoint-2" in resumed.stderr


def cache_entries(cache_dir):
    return sorted(name for name in os.listdir(cache_dir) if name.endswith(".npz"))


def test_a_truncated_cache_entry_is_tokenized_again_and_replaced(tmp_path, tiny_model_dir, xnli_dir):
    cache_dir = tmp_path / "cache"
    first = run_main(**cpu_run(tiny_model_dir, xnli_dir, tmp_path / "first", cache_dir=cache_dir, **QUICK_RUN))
    assert first.returncode == 0, first.stderr
    entries = cache_entries(cache_dir)
    sizes = {entry: os.path.getsize(cache_dir / entry) for entry in entries}
    for entry in entries:  # what a killed copy or a full disk leaves
        with open(cache_dir / entry, "r+b") as file:
            file.truncate(sizes[entry] // 2)

    second = run_main(**cpu_run(tiny_model_dir, xnli_dir, tmp_path / "second", cache_dir=cache_dir, **QUICK_RUN))
    assert second.returncode == 0, second.stderr[-3000:]
    for entry in entries:
        assert f"WARNING the token cache entry {cache_dir / entry} is damaged (BadZipFile: " in second.stderr
        assert os.path.getsize(cache_dir / entry) == sizes[entry]
    assert read_results(tmp_path / "second")["test_accuracy"] == read_results(tmp_path / "first")["test_accuracy"]

    third = run_main(**cpu_run(tiny_model_dir, xnli_dir, tmp_path / "third", cache_dir=cache_dir, **QUICK_RUN))
    assert third.returncode == 0 and "WARNING" not in third.stderr, third.stderr[-3000:]


def cut_in_half(path):
    os.truncate(path, os.path.getsize(path) // 2)


def emptied(path):
    os.truncate(path, 0)


def saved_in_utf_16(path):
    with open(path, encoding="utf-8") as file:
        text = file.read()
    with open(path, "w", encoding="utf-16") as file:
        file.write(text)


def hugging_face_download_cut_short(directory, tiny_model_dir):
    shutil.copytree(fixture_dir("bert"), directory)
    cut_in_half(directory / "model.safetensors")


def paddlenlp_safetensors_cut_short(directory, tiny_model_dir):
    from paddlenlp.transformers import ErnieMModel

    shutil.copytree(tiny_model_dir, directory)
    ErnieMModel.from_pretrained(tiny_model_dir).save_pretrained(str(directory), safe_serialization=True)
    os.remove(directory / "model_state.pdparams")
    cut_in_half(directory / "model.safetensors")


def paddlenlp_pdparams_cut_short(directory, tiny_model_dir):
    shutil.copytree(tiny_model_dir, directory)
    cut_in_half(directory / "model_state.pdparams")


def hugging_face_download_stopped_between_shards(directory, tiny_model_dir):
    shutil.copytree(fixture_dir("bert"), directory)
    os.rename(directory / "model.safetensors", directory / "model-00001-of-00002.safetensors")
    weight_map = {"embeddings.word_embeddings.weight": "model-00001-of-00002.safetensors"}
    weight_map["pooler.dense.weight"] = "model-00002-of-00002.safetensors"
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


CUT_SHORT = (
    "{model}/model.safetensors: not a complete safetensors file (Error while deserializing header: "
    "incomplete metadata, file not fully covered); download or copy it again"
)


@pytest.mark.parametrize(
    "write_model, message",
    [
        (hugging_face_download_cut_short, CUT_SHORT),
        (paddlenlp_safetensors_cut_short, CUT_SHORT),
        (
            paddlenlp_pdparams_cut_short,
            "--model_name_or_path {model}: cannot load its weights (`paddle.load` can not parse the "
            "file:{model}/model_state.pdparams.)",
        ),
        (
            hugging_face_download_stopped_between_shards,
            "{model}/model.safetensors.index.json: names model-00002-of-00002.safetensors, not in {model} "
            "(a download that stopped?)",
        ),
    ],
    ids=["hugging-face", "paddlenlp-safetensors", "paddlenlp-pdparams", "hugging-face-shards"],
)
def test_a_model_whose_download_stopped_is_refused_naming_the_file(
    tmp_path, tiny_model_dir, xnli_dir, write_model, message
):
    model = tmp_path / "model"
    write_model(model, tiny_model_dir)
    run = run_main(**cpu_run(model, xnli_dir, tmp_path / "run", cache_dir=tmp_path / "cache"))
    assert run.returncode == 2
    assert last_line(run.stderr) == "run_classifier.py: error: " + message.format(model=model)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "source, damaged, damage, error",
    [
        ("tiny-ernie-m", "sentencepiece.bpe.model", cut_in_half, "TypeError"),
        ("tiny-ernie-m", "vocab.txt", emptied, "AssertionError"),
        ("xlm-roberta-tokenizer-json-only", "tokenizer.json", cut_in_half, "Exception"),
        ("bert", "vocab.txt", saved_in_utf_16, "UnicodeDecodeError"),
    ],
    ids=["sentencepiece-cut-short", "vocab-emptied", "tokenizer-json-cut-short", "vocab-not-utf-8"],
)
def test_tokenizer_files_that_cannot_be_read_are_named_in_one_line(
    tmp_path, tiny_model_dir, xnli_dir, source, damaged, damage, error
):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir if source == "tiny-ernie-m" else fixture_dir(source), model)
    if source == "bert":  # its slow files are read only where there is no tokenizer.json
        os.remove(model / "tokenizer.json")
    damage(model / damaged)
    read = {"tiny-ernie-m": ["sentencepiece.bpe.model", "vocab.txt"]}.get(source, [damaged])

    run = run_main(**cpu_run(model, xnli_dir, tmp_path / "run"))
    assert run.returncode == 2
    files = ", ".join(str(model / name) for name in read)
    line = last_line(run.stderr)
    assert line.startswith(
        f"run_classifier.py: error: --model_name_or_path: cannot read the tokenizer in {files} ({error}: "
    )
    assert line.endswith(
        "): is a file cut short, empty or not UTF-8? Save the tokenizer there again with save_pretrained"
    )


@pytest.mark.parametrize("read_only", [False, True], ids=["full", "read-only"])
def test_a_cache_that_cannot_be_written_only_costs_the_cache(tmp_path, tiny_model_dir, xnli_dir, read_only):
    with small_file_system(tmp_path / "cache", size="64k", read_only=read_only) as cache_dir:
        if not read_only:
            fill(cache_dir)
        result = run_script(**cpu_run(tiny_model_dir, xnli_dir, tmp_path / "run", cache_dir=cache_dir, **QUICK_RUN))
        assert result.returncode == 0, result.stderr[-3000:]
        warnings = [line for line in result.stderr.splitlines() if "could not write the token cache entry" in line]
        assert len(warnings) == 3 and all("the run goes on without it" in line for line in warnings)
        assert "Exception ignored" not in result.stderr  # every half-written entry closed before its file
        assert [name for name in os.listdir(cache_dir) if name != "filler"] == []
    assert read_results(tmp_path / "run")["test_accuracy"]["avg"] >= 0
    shutil.rmtree(tmp_path / "run")


def test_a_full_cache_costs_a_hugging_face_checkpoint_only_its_cached_conversion(tmp_path, xnli_dir):
    """The BERT fixture converted on a full cache: one warning, converted for the run alone, nothing left."""
    with small_file_system(tmp_path / "cache", size="64k") as cache_dir:
        fill(cache_dir)
        run = cpu_run(fixture_dir("bert"), xnli_dir, tmp_path / "run", cache_dir=cache_dir, max_seq_length=48)
        result = run_main(**run, **QUICK_RUN)
        assert result.returncode == 0, result.stderr[-3000:]
        warnings = [line for line in result.stderr.splitlines() if "cannot cache the converted weights" in line]
        assert len(warnings) == 1 and warnings[0].endswith("converting for this run only"), warnings
        leftovers = [os.path.join(root, name) for root, _, names in os.walk(cache_dir) for name in names]
        assert [path for path in leftovers if "model.safetensors" in path] == []


def test_a_file_written_through_a_temporary_name_is_whole_or_not_written(tmp_path):
    path = tmp_path / "results.md"
    path.write_text("the last complete table\n")
    with pytest.raises(RuntimeError), written_then_renamed(path) as temporary:
        with open(temporary, "w") as file:
            file.write("half a ta")
        raise RuntimeError("the writer dies")
    assert path.read_text() == "the last complete table\n" and os.listdir(tmp_path) == ["results.md"]
    with written_then_renamed(path) as temporary, open(temporary, "w") as file:
        file.write("the new table\n")
    assert path.read_text() == "the new table\n" and os.listdir(tmp_path) == ["results.md"]


@pytest.mark.parametrize("flag", ["--export_model_dir", "--export_hf_dir"])
def test_a_folder_on_a_read_only_file_system_is_refused_before_training(tmp_path, capsys, flag):
    # The exports are written after training: a run must not train for hours to fail there.
    with small_file_system(tmp_path / "disk", size="64k", read_only=True) as disk:
        required = {"--task_type": "cross-lingual-transfer", "--model_name_or_path": "ernie-m-base"}
        arguments = {**required, "--output_dir": str(tmp_path / "run"), flag: str(disk / "model")}
        with pytest.raises(SystemExit) as exit:
            parse_args([item for pair in arguments.items() for item in pair])
        assert exit.value.code == 2
        assert last_line(capsys.readouterr().err) == (
            f"run_classifier.py: error: {flag} {disk / 'model'} cannot be written: {disk} is not writable"
        )


def pairs_to_predict(tmp_path):
    """A file of one pair, and the arguments that predict it with a model not fine-tuned."""
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("A cat sat on the mat.\tA cat sits.\n")
    return dict(predict_file=pairs, allow_untrained_classifier=True)


@pytest.mark.parametrize("flag", ["export_model_dir", "export_hf_dir"])
def test_a_full_disk_at_the_export_stops_in_one_line_and_leaves_nothing_of_it(tmp_path, tiny_model_dir, flag):
    with small_file_system(tmp_path / "disk", size="64k") as disk:
        export = {flag: disk / "export"}
        run = run_main(**cpu_run(tiny_model_dir, None, tmp_path / "run", **pairs_to_predict(tmp_path), **export))
        assert run.returncode == 1
        assert last_line(run.stderr).startswith(
            f"run_classifier.py: error: --{flag} {disk / 'export'}: cannot write the export (No space left on device"
        )
        assert os.listdir(disk) == []
    assert (tmp_path / "run" / "predictions.tsv").is_file()  # the run's own files come first


def test_a_full_disk_under_the_predictions_stops_in_one_line(tmp_path, tiny_model_dir):
    with small_file_system(tmp_path / "disk", size="64k") as disk:
        fill(disk)
        run = run_main(**cpu_run(tiny_model_dir, None, disk / "run", **pairs_to_predict(tmp_path)))
        assert run.returncode == 1
        assert last_line(run.stderr) == (
            "run_classifier.py: error: no space left on device: free some space and run again; what was saved "
            "before is intact (--resume_from_checkpoint latest continues a training run)"
        )
        assert os.listdir(disk / "run") == []
