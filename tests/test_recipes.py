"""`--recipe paper`: the official scripts' settings for the model size, task type and processes."""

import json

import pytest

from ernie_m_xnli.setup.arguments import parse_args
from ernie_m_xnli.setup.recipes import describe_recipe, split_global_batch

from conftest import flags, last_line


def model_dir(tmp_path, layers, hidden):
    """A directory with only the config.json of a model of this shape (the recipe reads no more)."""
    directory = tmp_path / f"model-{layers}x{hidden}"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"num_hidden_layers": layers, "hidden_size": hidden}))
    return str(directory)


def recipe_args(monkeypatch, processes, model, task_type, **options):
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", str(processes))
    return parse_args(flags(task_type=task_type, model_name_or_path=model, output_dir="out", recipe="paper", **options))


@pytest.mark.parametrize(
    "shape, task_type, epochs, global_batch",
    [
        ((12, 768), "cross-lingual-transfer", 5, 32),
        ((24, 1024), "cross-lingual-transfer", 5, 32),
        ((12, 768), "translate-train-all", 2, 128),
        ((24, 1024), "translate-train-all", 1, 128),
    ],
)
@pytest.mark.parametrize("processes", [1, 2, 4])
def test_the_paper_recipe_by_model_shape_task_and_processes(
    monkeypatch, tmp_path, shape, task_type, epochs, global_batch, processes
):
    args = recipe_args(monkeypatch, processes, model_dir(tmp_path, *shape), task_type)
    assert (args.learning_rate, args.num_train_epochs, args.layerwise_decay, args.max_seq_length) == (
        5e-5,
        epochs,
        0.8,
        256,
    )
    assert (args.warmup_proportion, args.weight_decay, args.max_grad_norm, args.eval_steps) == (0.1, 0.0, 1.0, 1000)
    assert args.batch_size == min(16, global_batch // processes)  # the official scripts' 16, or the whole share
    assert args.batch_size * processes * args.gradient_accumulation_steps == global_batch
    assert args.resolved_recipe["model_size"] == {12: "base", 24: "large"}[shape[0]]
    assert args.resolved_recipe["explicit"] == []


def test_pretrained_names_need_no_directory(monkeypatch):
    args = recipe_args(monkeypatch, 1, "ernie-m-large", "translate-train-all")
    assert (args.num_train_epochs, args.batch_size, args.gradient_accumulation_steps) == (1, 16, 8)
    line = describe_recipe(args.resolved_recipe)
    assert line.startswith("recipe paper for ernie-m-large, translate-train-all: learning_rate 5e-05, ")
    assert line.endswith(
        "global batch 128 = batch_size 16 x 1 process(es) x gradient_accumulation_steps 8; "
        "given explicitly (kept): none"
    )


def test_explicit_arguments_win_and_are_named(monkeypatch):
    args = recipe_args(monkeypatch, 2, "ernie-m-base", "cross-lingual-transfer", learning_rate=3e-5, batch_size=8)
    assert (args.learning_rate, args.batch_size, args.gradient_accumulation_steps) == (3e-5, 8, 2)
    assert args.resolved_recipe["explicit"] == ["batch_size", "learning_rate"]
    assert "given explicitly (kept): --batch_size, --learning_rate" in describe_recipe(args.resolved_recipe)
    without_recipe = parse_args(
        flags(task_type="cross-lingual-transfer", model_name_or_path="ernie-m-base", output_dir="o")
    )
    assert (without_recipe.max_grad_norm, without_recipe.eval_steps, without_recipe.resolved_recipe) == (
        0.0,
        10000,
        None,
    )


@pytest.mark.parametrize(
    "processes, options, message",
    [
        (1, {"batch_size": 24}, "cannot be reached exactly as 24 per card x 1 process(es) x 1 accumulation step(s)"),
        (2, {"gradient_accumulation_steps": 3}, "cannot be reached exactly as 5 per card x 2 process(es) x 3"),
        (3, {}, "the paper's global batch of 32 does not split over 3 processes"),
        (64, {}, "the paper's global batch of 32 does not split over 64 processes"),
    ],
)
def test_an_unreachable_global_batch_is_refused_with_the_numbers(capsys, monkeypatch, processes, options, message):
    with pytest.raises(SystemExit) as exit_info:
        recipe_args(monkeypatch, processes, "ernie-m-base", "cross-lingual-transfer", **options)
    assert exit_info.value.code == 2
    assert message in last_line(capsys.readouterr().err)


def test_a_model_of_another_shape_is_refused(capsys, monkeypatch, tmp_path):
    with pytest.raises(SystemExit):
        recipe_args(monkeypatch, 1, model_dir(tmp_path, 2, 32), "cross-lingual-transfer")
    assert (
        "has 2 layers of 32, the shape of neither ernie-m-base (12 x 768) nor ernie-m-large" in capsys.readouterr().err
    )


def test_many_cards_take_smaller_batches_per_card():
    assert split_global_batch(32, 8) == (4, 1)
    assert split_global_batch(128, 8) == (16, 1)
    assert split_global_batch(128, 1) == (16, 8)
    assert split_global_batch(32, 1, accumulation=4) == (8, 4)
