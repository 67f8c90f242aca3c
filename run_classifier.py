r"""Fine-tune and evaluate ERNIE-M on XNLI, in PaddlePaddle's dynamic graph.

One card:
    python run_classifier.py --task_type cross-lingual-transfer --model_name_or_path ernie-m-base \
        --output_dir output/base-clt --device gpu
Several cards (`--batch_size` is per card) or machines:
    python -m paddle.distributed.launch --gpus 0,1,2,3 run_classifier.py \
        --task_type translate-train-all --model_name_or_path ernie-m-large --output_dir output/large-tta
CPU smoke run on local XNLI files:
    python run_classifier.py --task_type cross-lingual-transfer --model_name_or_path ernie-m-base \
        --output_dir output/smoke --device cpu --data_dir ../shared/xnli --max_steps 20
Continue a run that was stopped or killed:
    python run_classifier.py ...the same arguments... --resume_from_checkpoint latest
Evaluate a fine-tuned checkpoint on dev and test, predict a file's pairs, export for Paddle Inference:
    python run_classifier.py --eval_only --task_type cross-lingual-transfer \
        --model_name_or_path output/base-clt/checkpoint-10000 --output_dir output/base-clt-eval
    python run_classifier.py --predict_file pairs.tsv --task_type cross-lingual-transfer \
        --model_name_or_path output/base-clt/checkpoint-10000 --output_dir output/predictions \
        --export_model_dir output/inference

Settings:
    cross-lingual-transfer  train on English, evaluate dev and test in all 15 languages
    translate-train-all     train on all 15 machine-translated training sets, evaluate all 15
"""

import logging
import os
import time
import warnings
from functools import partial
from typing import NamedTuple

# Paddle warns at import about a compiler cache and about AMP on CPU; neither concerns a user.
warnings.filterwarnings("ignore", message="No ccache found")
warnings.filterwarnings("ignore", message="Setuptools is replacing distutils")
warnings.filterwarnings("ignore", message="(AmpScaler|amp_guard) can only be enabled")

from paddlenlp.transformers import AutoTokenizer  # noqa: E402
from tqdm.contrib.logging import logging_redirect_tqdm  # noqa: E402

import distributed  # noqa: E402
from checkpoints import TrainingState, find_resume_checkpoint, prepare_output_dir  # noqa: E402
from cli import TRAIN_LANGUAGES, parse_args  # noqa: E402
from data import (  # noqa: E402
    Features,
    PairEncoder,
    download_xnli,
    read_eval_split,
    read_prediction_file,
    read_train_split,
    xnli_file_paths,
)
from evaluation import Evaluator, write_predictions  # noqa: E402
from feature_cache import cache_key, load_or_tokenize  # noqa: E402
from modeling import export_inference_model, load_model  # noqa: E402
from reporting import format_evaluation, report_results  # noqa: E402
from run_control import errors_as_exit_codes, progress_bar  # noqa: E402
from runtime import set_up  # noqa: E402
from training import Trainer  # noqa: E402
from utils import cpu_cores_per_process  # noqa: E402

PREDICTIONS_FILE = "predictions.tsv"

logger = logging.getLogger("run_classifier")


class XnliFeatures(NamedTuple):
    train: Features  # None with --eval_only
    dev: dict  # {language: Features}
    test: dict


def main(argv=None):
    args = parse_args(argv, description=__doc__)
    with errors_as_exit_codes(args.debug):
        set_up(args)
        prepare_output_dir(args)
        resume_dir = find_resume_checkpoint(args)

        model_dir = resume_dir or args.model_name_or_path
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = load_model(model_dir, args.dropout, len(tokenizer), args.max_seq_length)
        evaluator = Evaluator(
            model,
            args.eval_batch_size,
            tokenizer.pad_token_id,
            args.use_amp,
            partial(progress_bar, args.disable_tqdm, desc="evaluating", unit="language"),
        )
        with logging_redirect_tqdm():
            if args.predict_file:
                predict(args, tokenizer, evaluator)
            else:
                train_and_evaluate(args, model, tokenizer, evaluator, resume_dir)
        if args.export_model_dir and distributed.is_main():
            export_inference_model(model, args.export_model_dir)


def train_and_evaluate(args, model, tokenizer, evaluator, resume_dir):
    """Train (unless --eval_only), select on dev, evaluate the selected model on test, report."""
    features = prepare_features(args, tokenizer)
    started = time.time()
    if args.eval_only:
        state, dev_result = TrainingState(), evaluator.evaluate(features.dev)
    else:
        trainer = Trainer(args, model, tokenizer, features, evaluator, resume_dir)
        state = trainer.train()
        trainer.restore_best()
        dev_result = state.best_dev
    test_result = evaluator.evaluate(features.test)
    logger.info(format_evaluation("test", state.global_step, test_result))
    if distributed.is_main():
        report_results(args, model.config, state, dev_result, test_result, time.time() - started)


def predict(args, tokenizer, evaluator):
    """Write the model's predictions for --predict_file to output_dir/predictions.tsv."""
    pairs, num_skipped = read_prediction_file(args.predict_file)
    num_workers = args.preprocessing_num_workers or cpu_cores_per_process()
    with PairEncoder(tokenizer, args.max_seq_length, args.memory_length, num_workers) as encoder:
        features = encoder.encode(pairs)
    logger.info(
        "predicting %d pairs of %s (%d rows with an empty field skipped)", len(pairs), args.predict_file, num_skipped
    )
    logits = evaluator.predict_logits(features)
    if distributed.is_main():
        path = os.path.join(args.output_dir, PREDICTIONS_FILE)
        write_predictions(path, pairs, logits)
        logger.info("wrote %s", path)


def prepare_features(args, tokenizer):
    """Read XNLI and tokenize every split once for the whole run (or load it from the cache)."""
    train_languages = () if args.eval_only else TRAIN_LANGUAGES[args.task_type]
    paths = xnli_file_paths(args.data_dir or download_xnli(with_train=bool(train_languages)), train_languages)
    readers = {split: (partial(read_eval_split, paths[split]), [paths[split]]) for split in ("dev", "test")}
    if train_languages:
        readers["train"] = (partial(read_train_split, paths["train"]), list(paths["train"].values()))
    features = {split: tokenized_split(split, read, files, tokenizer, args) for split, (read, files) in readers.items()}
    train_features = Features.concatenate(features["train"].values()) if train_languages else None
    return XnliFeatures(train_features, features["dev"], features["test"])


def tokenized_split(split, read_split, data_files, tokenizer, args):
    """{language: Features} of one split, from the cache or tokenized (in worker processes)."""

    def tokenize(num_workers):
        xnli_file = read_split()
        num_pairs = sum(len(pairs) for pairs in xnli_file.pairs_by_language.values())
        bar = progress_bar(args.disable_tqdm, total=num_pairs, desc=f"tokenizing {split}", unit="pair")
        encoder = PairEncoder(
            tokenizer, args.max_seq_length, args.memory_length, args.preprocessing_num_workers or num_workers
        )
        with bar, encoder:
            features = {lang: encoder.encode(pairs, bar.update) for lang, pairs in xnli_file.pairs_by_language.items()}
        return features, xnli_file.num_skipped

    cache_path = args.cache_dir and os.path.join(
        args.cache_dir, f"{split}-{cache_key(tokenizer, data_files, args.max_seq_length, args.memory_length)}.npz"
    )
    split_data = load_or_tokenize(cache_path, tokenize)
    features_by_language = split_data.features_by_language
    logger.info(
        "%s: %d pairs in %d language(s) -> %d inputs; %d rows with an empty field skipped (%s)",
        split,
        sum(features.num_examples for features in features_by_language.values()),
        len(features_by_language),
        sum(len(features) for features in features_by_language.values()),
        split_data.num_skipped,
        split_data.source,
    )
    return features_by_language


if __name__ == "__main__":
    main()
