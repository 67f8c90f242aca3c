"""transformers' Trainer on PyTorch fine-tuning a Hugging Face checkpoint on English XNLI-MT, with the
settings of a run_classifier.py run, for README's real-model table. Prints one JSON line: English dev
and test accuracy (%) and Trainer's training examples/s. Needs torch, transformers and accelerate (which
Trainer requires), not Paddle:

    ~/hf-venv/bin/python -m benchmarks.hf_finetune_peer --model_dir minilm --xnli_dir ../shared/xnli \
        --output_dir output/minilm-transformers --num_train_epochs 2
"""

import argparse
import json

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from ernie_m_xnli.data.xnli_files import read_eval_split, read_train_split, xnli_file_paths
from utils import LABELS


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--xnli_dir", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_train_epochs", type=float, default=2)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--warmup_proportion", type=float, default=0.1)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


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


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = xnli_file_paths(args.xnli_dir, ["en"])
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model_dir,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: index for index, label in enumerate(LABELS)},
    )
    train = Pairs(tokenizer, read_train_split(paths["train"]).pairs_by_language["en"], args.max_seq_length)
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        num_train_epochs=args.num_train_epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_ratio=args.warmup_proportion,
        max_grad_norm=args.max_grad_norm,
        seed=args.seed,
        save_strategy="no",
        eval_strategy="no",
        logging_steps=50,
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model, args=training_args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer)
    )
    metrics = trainer.train().metrics
    row = {"train_examples_per_second": metrics["train_samples_per_second"], "threads": args.threads}
    for split in ("dev", "test"):
        pairs = read_eval_split(paths[split]).pairs_by_language["en"]
        logits = trainer.predict(Pairs(tokenizer, pairs, args.max_seq_length)).predictions
        row[f"en_{split}_accuracy"] = round(100 * float(np.mean(logits.argmax(-1) == [p.label for p in pairs])), 2)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
