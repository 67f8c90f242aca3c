"""transformers' Trainer on PyTorch fine-tuning a Hugging Face checkpoint on XNLI-MT with the settings
of a run_classifier.py run, for README's real-model tables. It evaluates dev and test in all 15
languages once training ends and writes, like run_classifier.py, results.json (the keys compare.py
and aggregate.py read: accuracies in percent, model_name, model_type, environment, test_file, args)
and test_predictions.tsv, with each training step's loss (train_loss_history). `--batch_order suite`
trains on the batches run_classifier.py draws with the same --seed and --batch_size, in its order
(benchmarks/fidelity.py's identical-batch runs). Needs torch, transformers and accelerate (which Trainer
requires), not Paddle:

    ~/hf-venv/bin/python -m benchmarks.hf_finetune_peer --model_dir ~/models/multilingual-e5-small \
        --xnli_dir ../shared/xnli --output_dir output/e5-transformers-seed42 --max_steps 120 \
        --learning_rate 1e-4 --eval_pairs_per_language 500 --seed 42
"""

import argparse
import json
import os
import time

import numpy as np
import torch
import transformers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from benchmarks.fine_tuning_settings import add_fine_tuning_settings, refuse_unusable_paths, warmup_steps
from ernie_m_xnli.data.batching import ShardedBatchSampler
from ernie_m_xnli.data.xnli_files import read_eval_split, read_train_split, xnli_file_paths
from ernie_m_xnli.evaluation.predictions import TEST_PREDICTIONS_FILE, write_test_predictions
from utils import LABELS, XNLI_LANGUAGES, file_digest, machine_description, write_json_atomically


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--xnli_dir", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--train_languages", nargs="+", default=["en"], choices=XNLI_LANGUAGES)
    parser.add_argument("--num_train_epochs", type=float, default=2)
    parser.add_argument("--max_steps", type=int, default=-1, help="> 0 overrides --num_train_epochs")
    parser.add_argument("--eval_batch_size", type=int, default=64)
    add_fine_tuning_settings(parser, eval_pairs_per_language=0)
    parser.add_argument(
        "--batch_order",
        choices=("shuffled", "suite"),
        default="shuffled",
        help="shuffled: Trainer's own random order; suite: run_classifier.py's batches for the same seed",
    )
    args = parser.parse_args(argv)
    refuse_unusable_paths(parser, args, args.train_languages)
    if args.batch_order == "suite" and args.max_steps <= 0:
        parser.error("--batch_order suite needs --max_steps")
    return args


class Pairs(torch.utils.data.Dataset):
    def __init__(self, tokenizer, pairs, max_seq_length):
        self.encoded = tokenizer(
            [pair.premise for pair in pairs],
            [pair.hypothesis for pair in pairs],
            truncation=True,
            max_length=max_seq_length,
        )
        self.labels = [pair.label for pair in pairs]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {**{name: values[index] for name, values in self.encoded.items()}, "labels": self.labels[index]}


class SuiteWarmupArguments(TrainingArguments):
    """TrainingArguments whose --warmup_proportion warms up for as many steps as run_classifier.py's."""

    def get_warmup_steps(self, num_training_steps):
        return self.warmup_steps if self.warmup_steps > 0 else warmup_steps(self.warmup_ratio, num_training_steps)


class LoggingTrainer(Trainer):
    """Trainer that keeps every step's exact loss (its log rounds to 4 decimals), and with
    `batch_order` trains on the examples in that order, cut into consecutive batches."""

    def __init__(self, *args, batch_order=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_order, self.step_losses = batch_order, []

    def _get_train_sampler(self):
        return self.batch_order if self.batch_order is not None else super()._get_train_sampler()

    def training_step(self, *args, **kwargs):
        loss = super().training_step(*args, **kwargs)
        self.step_losses.append({"step": len(self.step_losses) + 1, "loss": float(loss)})
        return loss


def suite_batch_order(num_pairs, batch_size, seed, num_steps):
    """The training pair indices of run_classifier.py's first `num_steps` batches (one process, no
    --group_by_length), epoch after epoch, flattened."""
    sampler, order, epoch = ShardedBatchSampler(num_pairs, batch_size, seed=seed), [], 0
    while len(order) < num_steps * batch_size:
        sampler.set_epoch(epoch)
        order += [index for batch in sampler for index in batch]
        epoch += 1
    return order[: num_steps * batch_size]


def percent(accuracy_by_language):
    return {**accuracy_by_language, "avg": float(np.mean([accuracy_by_language[lang] for lang in XNLI_LANGUAGES]))}


def evaluate(trainer, tokenizer, path, args):
    """({language: accuracy %}, {language: logits}, {language: gold labels}) of a dev or test file."""
    pairs_by_language = read_eval_split(path).pairs_by_language
    accuracy, logits, labels = {}, {}, {}
    for lang in XNLI_LANGUAGES:
        pairs = pairs_by_language[lang][: args.eval_pairs_per_language or None]
        logits[lang] = trainer.predict(Pairs(tokenizer, pairs, args.max_seq_length)).predictions
        labels[lang] = np.array([pair.label for pair in pairs])
        accuracy[lang] = 100 * float(np.mean(logits[lang].argmax(-1) == labels[lang]))
    return percent(accuracy), logits, labels


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()
    paths = xnli_file_paths(args.xnli_dir, args.train_languages)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    # Before the model, as transformers' run_xnli.py: --seed then draws the classifier's start too
    # (Trainer seeds only once the model exists; unseeded, every run drew another start).
    transformers.set_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model_dir,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: index for index, label in enumerate(LABELS)},
    )
    train_pairs = [pair for pairs in read_train_split(paths["train"]).pairs_by_language.values() for pair in pairs]
    batch_order = None
    if args.batch_order == "suite":
        batch_order = suite_batch_order(len(train_pairs), args.batch_size, args.seed, args.max_steps)
    training_args = SuiteWarmupArguments(
        output_dir=args.output_dir,
        num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_proportion,
        max_grad_norm=args.max_grad_norm,
        seed=args.seed,
        save_strategy="no",
        eval_strategy="no",
        logging_steps=50,
        # The suite's batches are whole lists: the last one of an epoch wraps around as the suite's does.
        dataloader_drop_last=False,
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = LoggingTrainer(
        batch_order=batch_order,
        model=model,
        args=training_args,
        train_dataset=Pairs(tokenizer, train_pairs, args.max_seq_length),
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    metrics = trainer.train().metrics
    dev_accuracy, _, _ = evaluate(trainer, tokenizer, paths["dev"], args)
    test_accuracy, test_logits, test_labels = evaluate(trainer, tokenizer, paths["test"], args)
    write_test_predictions(os.path.join(args.output_dir, TEST_PREDICTIONS_FILE), test_logits, test_labels)
    results = {
        "model": args.model_dir,
        "model_name": os.path.basename(os.path.normpath(args.model_dir)) + " (transformers)",
        "model_type": model.config.model_type,
        "task_type": "cross-lingual-transfer" if args.train_languages == ["en"] else "translate-train-all",
        "train_languages": args.train_languages,
        "eval_pairs_per_language": args.eval_pairs_per_language,
        "test_file": {"path": os.path.abspath(paths["test"]), "sha256": file_digest(paths["test"])},
        "environment": machine_description(None, torch=torch.__version__, transformers=transformers.__version__),
        "global_step": trainer.state.global_step,
        "runtime_seconds": time.time() - started,
        "train_examples_per_second": metrics["train_samples_per_second"],
        "dev_accuracy": dev_accuracy,
        "test_accuracy": test_accuracy,
        "train_loss_history": trainer.step_losses,
        "args": vars(args),
    }
    write_json_atomically(os.path.join(args.output_dir, "results.json"), results)
    print(json.dumps({key: results[key] for key in ("train_examples_per_second", "runtime_seconds", "test_accuracy")}))


if __name__ == "__main__":
    main()
