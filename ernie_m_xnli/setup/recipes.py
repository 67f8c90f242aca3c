"""Hyperparameter recipes: `--recipe paper` runs the ERNIE-M authors' fine-tuning settings.

Source: the official ERNIE-M fine-tuning scripts for XNLI (PaddlePaddle/ERNIE repository, `ernie-m`
scripts for base and large): 16 examples per card on 2 cards (cross-lingual transfer) or 8 cards
(translate-train-all), dev evaluated every 1,000 steps, gradients clipped to global norm 1.0.
"""

import json
import os

# (layers, hidden size) of the two pretrained models, to recognise them in a local directory.
MODEL_SIZES = {(12, 768): "base", (24, 1024): "large"}
# The official scripts' batch per card, used when the global batch allows it.
PAPER_BATCH_PER_CARD = 16


def paper_recipe(model_size, task_type):
    """The settings of the official scripts for `model_size` ("base" or "large") and `task_type`."""
    cross_lingual = task_type == "cross-lingual-transfer"
    epochs = 5 if cross_lingual else {"base": 2, "large": 1}[model_size]
    return {
        "learning_rate": 5e-5,
        "global_batch_size": 32 if cross_lingual else 128,
        "num_train_epochs": epochs,
        "layerwise_decay": 0.8,
        "max_seq_length": 256,
        "warmup_proportion": 0.1,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "eval_steps": 1000,
    }


class RecipeError(ValueError):
    """A recipe that cannot be applied as asked; the message says why, with the numbers."""


def model_size(model_name_or_path):
    """ "base" or "large" for a pretrained name or a directory's config.json (by its shape)."""
    name = os.path.basename(os.path.normpath(model_name_or_path))
    if name in ("ernie-m-base", "ernie-m-large") and not os.path.isdir(model_name_or_path):
        return name.split("-")[-1]
    with open(os.path.join(model_name_or_path, "config.json"), encoding="utf-8") as file:
        config = json.load(file)
    if config.get("model_type", "ernie_m") != "ernie_m":
        raise RecipeError(
            f"--recipe paper: {model_name_or_path} is a {config['model_type']} model; the recipe is the ERNIE-M "
            "paper's, so give another family's settings as arguments"
        )
    shape = (config.get("num_hidden_layers"), config.get("hidden_size"))
    if shape not in MODEL_SIZES:
        raise RecipeError(
            f"--recipe paper: {model_name_or_path} has {shape[0]} layers of {shape[1]}, the shape of neither "
            "ernie-m-base (12 x 768) nor ernie-m-large (24 x 1024)"
        )
    return MODEL_SIZES[shape]


def split_global_batch(global_batch, world_size, batch_size=None, accumulation=None):
    """(batch per card, accumulation steps) whose product with `world_size` is `global_batch`,
    keeping what is given (not None). Given neither: 16 per card, as the official scripts, where
    16 divides each process's share, else the whole share in one batch."""
    per_process, remainder = divmod(global_batch, world_size)
    if remainder or not per_process:
        raise RecipeError(
            f"--recipe paper: the paper's global batch of {global_batch} does not split over {world_size} processes"
        )
    if batch_size is None and accumulation is None:
        batch_size = PAPER_BATCH_PER_CARD if per_process % PAPER_BATCH_PER_CARD == 0 else per_process
    if accumulation is None:
        accumulation = per_process // batch_size
    elif batch_size is None:
        batch_size = per_process // accumulation
    if min(batch_size, accumulation) < 1 or batch_size * accumulation * world_size != global_batch:
        raise RecipeError(
            f"--recipe paper: the paper's global batch of {global_batch} cannot be reached exactly as "
            f"{batch_size} per card x {world_size} process(es) x {accumulation} accumulation step(s); choose "
            "--batch_size and --gradient_accumulation_steps whose product with the processes is "
            f"{global_batch}"
        )
    return batch_size, accumulation


def apply_paper_recipe(args, explicit, world_size):
    """Fill every setting of the paper recipe that is not in `explicit` (the argument names the
    user gave); returns the resolved settings, for the log and results.json."""
    size = model_size(args.model_name_or_path)
    recipe = paper_recipe(size, args.task_type)
    global_batch = recipe.pop("global_batch_size")
    for name, value in recipe.items():
        if name not in explicit:
            setattr(args, name, value)
    args.batch_size, args.gradient_accumulation_steps = split_global_batch(
        global_batch,
        world_size,
        args.batch_size if "batch_size" in explicit else None,
        args.gradient_accumulation_steps if "gradient_accumulation_steps" in explicit else None,
    )
    settings = {name: getattr(args, name) for name in recipe}
    settings.update(batch_size=args.batch_size, gradient_accumulation_steps=args.gradient_accumulation_steps)
    return {
        "name": "paper",
        "model_size": size,
        "task_type": args.task_type,
        "processes": world_size,
        "global_batch_size": global_batch,
        "settings": settings,
        "explicit": sorted(name for name in settings if name in explicit),
    }


def describe_recipe(resolved):
    """One log line of a resolved recipe: every setting it chose, and those the user gave."""
    settings = dict(resolved["settings"])
    batch_size, accumulation = settings.pop("batch_size"), settings.pop("gradient_accumulation_steps")
    given = ", ".join(f"--{name}" for name in resolved["explicit"]) or "none"
    return (
        f"recipe {resolved['name']} for ernie-m-{resolved['model_size']}, {resolved['task_type']}: "
        + ", ".join(f"{name} {value:g}" for name, value in settings.items())
        + f", global batch {resolved['global_batch_size']} = batch_size {batch_size} x {resolved['processes']} "
        f"process(es) x gradient_accumulation_steps {accumulation}; given explicitly (kept): {given}"
    )
