r"""Fine-tune and evaluate ERNIE-M on XNLI, in PaddlePaddle's dynamic graph; mBERT, XLM-R and
mDeBERTa-v3 too, from PaddleNLP's names and directories or from Hugging Face directories.

One card:
    python run_classifier.py --task_type cross-lingual-transfer --model_name_or_path ernie-m-base \
        --output_dir output/base-clt --device gpu
Several cards (`--batch_size` is per card) or machines:
    python -m paddle.distributed.launch --gpus 0,1,2,3 run_classifier.py \
        --task_type translate-train-all --model_name_or_path ernie-m-large --output_dir output/large-tta
CPU smoke run, offline, on local XNLI files and the tiny model that `python sanity_check.py` builds:
    python run_classifier.py --task_type cross-lingual-transfer \
        --model_name_or_path output/sanity_check/tiny-random-ernie-m --output_dir output/smoke --device cpu \
        --data_dir ../shared/xnli --max_steps 20
Continue a run that was stopped or killed:
    python run_classifier.py ...the same arguments... --resume_from_checkpoint latest
Evaluate the model a run selected (results.json's "checkpoint") on dev and test, predict a file's pairs,
export for Paddle Inference:
    python run_classifier.py --eval_only --task_type cross-lingual-transfer \
        --model_name_or_path output/base-clt/best-12000 --output_dir output/base-clt-eval
    python run_classifier.py --predict_file pairs.tsv --task_type cross-lingual-transfer \
        --model_name_or_path output/base-clt/best-12000 --output_dir output/predictions \
        --export_model_dir output/inference

Settings:
    cross-lingual-transfer  train on English, evaluate dev and test in all 15 languages
    translate-train-all     train on all 15 machine-translated training sets, evaluate all 15
"""

import logging
import os
import time
from functools import partial

from ernie_m_xnli.setup.arguments import parse_args

if __name__ == "__main__":
    # Importing Paddle and PaddleNLP takes seconds: --help and argument errors answer before that.
    parse_args(description=__doc__)

from safetensors import SafetensorError  # noqa: E402
from tqdm.contrib.logging import logging_redirect_tqdm  # noqa: E402

from ernie_m_xnli.data.encoding import PairEncoder  # noqa: E402
from ernie_m_xnli.data.splits import find_data_files, prepare_features  # noqa: E402
from ernie_m_xnli.data.xnli_files import read_prediction_file  # noqa: E402
from ernie_m_xnli.evaluation.evaluator import Evaluator  # noqa: E402
from ernie_m_xnli.evaluation.predictions import write_predictions  # noqa: E402
from ernie_m_xnli.evaluation.reporting import SelectedResult, format_evaluation, report_results  # noqa: E402
from ernie_m_xnli.models.hf_checkpoints import export_hf_checkpoint, is_hf_export  # noqa: E402
from ernie_m_xnli.models.hub import local_model_source  # noqa: E402
from ernie_m_xnli.models.inference import export_inference_model, is_inference_export  # noqa: E402
from ernie_m_xnli.models.loading import RunModel, load_classifier, model_name  # noqa: E402
from ernie_m_xnli.models.precision import run_precision, with_float32_products  # noqa: E402
from ernie_m_xnli.models.tokenizer_files import load_tokenizer, num_token_ids, pair_has_token_types  # noqa: E402
from ernie_m_xnli.setup import distributed  # noqa: E402
from ernie_m_xnli.setup.recipes import describe_recipe  # noqa: E402
from ernie_m_xnli.setup.runtime import progress_bar, set_up  # noqa: E402
from ernie_m_xnli.training.checkpoints import (  # noqa: E402
    SELECTION_PROTOCOLS,
    DiskFull,
    TrainingState,
    check_intact,
    checkpoint_float32_matmul,
    find_resume_checkpoint,
    no_space_left,
)
from ernie_m_xnli.training.output_dir import one_run_in, prepare_output_dir, removed_on_bad_input  # noqa: E402
from ernie_m_xnli.training.run_control import errors_as_exit_codes  # noqa: E402
from ernie_m_xnli.training.trainer import Trainer  # noqa: E402
from utils import InputError, check_export_dir, cpu_cores_per_process, threads_per_process  # noqa: E402

PREDICTIONS_FILE = "predictions.tsv"

logger = logging.getLogger("run_classifier")


def main(argv=None):
    args = parse_args(argv, description=__doc__)
    with errors_as_exit_codes(args.debug):
        set_up(args)
        precision = run_precision(args.device, args.use_amp, args.amp_dtype)
        if args.resolved_recipe:
            logger.info(describe_recipe(args.resolved_recipe))
        with removed_on_bad_input(args.output_dir), one_run_in(args.output_dir), logging_redirect_tqdm():
            resume_dir = find_resume_checkpoint(args)  # each directory is checked against its manifest once
            data_files = None if args.predict_file else find_data_files(args)  # named before a model loads
            model = load_model(args, resume_dir, precision)
            if args.export_model_dir:  # before any training: its result must be exportable
                model.classifier.family.check_static_graph("--export_model_dir")
                check_export_dir("--export_model_dir", args.export_model_dir, is_inference_export)
            if args.export_hf_dir:
                check_export_dir("--export_hf_dir", args.export_hf_dir, is_hf_export)
            evaluator = Evaluator(
                model.classifier,
                args.eval_batch_size,
                model.tokenizer.pad_token_id,
                model.tokenizer.sep_token_id,
                model.precision,
                partial(progress_bar, args.disable_tqdm, desc="evaluating", unit="language"),
                args.eval_backend,
                args.cpu_threads,
            )
            prepare_output_dir(args)
            if args.predict_file:
                predict(args, model.tokenizer, evaluator)
            else:
                train_and_evaluate(args, model, evaluator, resume_dir, data_files)
        if distributed.is_main():
            export(args, model)


def load_model(args, resume_dir, precision):
    """The RunModel of the checkpoint to resume, or of the model and tokenizer the arguments name (a
    hub id downloaded first), computing in `precision`."""
    model_dir = resume_dir or check_intact(
        local_model_source(args.model_name_or_path, args.cache_dir), "--model_name_or_path"
    )
    if args.tokenizer_name_or_path and not resume_dir:
        tokenizer = load_tokenizer(args.tokenizer_name_or_path, "--tokenizer_name_or_path")
    else:
        tokenizer = load_tokenizer(model_dir)
    require_trained = bool(args.eval_only or args.predict_file) and not args.allow_untrained_classifier
    classifier = load_classifier(
        model_dir,
        args.dropout,
        num_token_ids(tokenizer),
        args.max_seq_length,
        args.cache_dir,
        require_trained,
        pair_has_token_types(tokenizer),
        name=model_name(args.model_name_or_path),
    )
    threads, resumed = threads_per_process(args.cpu_threads), resume_dir and checkpoint_float32_matmul(resume_dir)
    precision = with_float32_products(precision, classifier, args.cpu_matmul, threads, args.cache_dir, resumed)
    return RunModel(classifier, tokenizer, precision)


def train_and_evaluate(args, model, evaluator, resume_dir, data_files):
    """Train (unless --eval_only), select on dev, evaluate the selected models on test, report."""
    features = prepare_features(args, model.tokenizer, data_files)
    started = time.time()
    examples_per_second = None
    if args.eval_only:
        state, selected = TrainingState(), evaluate_model(args, evaluator, features)
    else:
        trainer = Trainer(args, model, features, evaluator, resume_dir)
        state = trainer.train()
        examples_per_second = trainer.tokens.examples_per_second * distributed.world_size()
        selected = evaluate_selected_models(trainer, evaluator, features.test)
    if distributed.is_main():
        timing = {"runtime_seconds": time.time() - started, "train_examples_per_second": examples_per_second}
        report_results(args, model.classifier.model.config, state, selected, timing, features.test_file)


def evaluate_model(args, evaluator, features):
    """--eval_only: dev and test of the model as given."""
    dev, test = evaluator.evaluate(features.dev), evaluator.evaluate(features.test)
    logger.info(format_evaluation(f"dev accuracy of {args.model_name_or_path}", dev))
    logger.info(format_evaluation(f"test accuracy of {args.model_name_or_path}", test))
    return {args.select_on: SelectedResult(None, args.model_name_or_path, dev, test)}


def evaluate_selected_models(trainer, evaluator, test_features):
    """{protocol: SelectedResult} of the models each selection protocol chose on dev, testing each
    distinct one once and --select_on's last, so that the model ends with its weights (to export)."""
    best, tested = trainer.state.best, {}
    for protocol in sorted(SELECTION_PROTOCOLS, key=lambda protocol: protocol == trainer.args.select_on):
        step = best[protocol].step
        if step not in tested:
            trainer.restore(best[protocol])
            chosen_by = [other for other in SELECTION_PROTOCOLS if best[other].step == step]
            scores = " and ".join(f"{other} {100 * best[other].score:.2f}" for other in chosen_by)
            logger.info("restored %s (best dev %s) for test", os.path.basename(best[protocol].directory), scores)
            tested[step] = evaluator.evaluate(test_features)
            what = f"test accuracy of step {step} (selected on dev {' and '.join(chosen_by)})"
            logger.info(format_evaluation(what, tested[step]))
    return {
        protocol: SelectedResult(
            best[protocol].step, best[protocol].directory, best[protocol].dev, tested[best[protocol].step]
        )
        for protocol in SELECTION_PROTOCOLS
    }


def export(args, model):
    """The (selected) model for Paddle Inference and in transformers' layout, as asked, each whole or not
    at all; one that cannot be written stops in one line, the run's own files complete by then."""
    exports = {
        "--export_model_dir": (args.export_model_dir, partial(export_inference_model, model.classifier)),
        "--export_hf_dir": (
            args.export_hf_dir,
            partial(export_hf_checkpoint, model.classifier.model, model.classifier.family),
        ),
    }
    for flag, (directory, write) in exports.items():
        if not directory:
            continue
        try:
            write(model.tokenizer, directory)
        except (OSError, SafetensorError) as error:
            full = no_space_left(error)
            reason = "No space left on device" if full else getattr(error, "strerror", None) or error
            raise (DiskFull if full else InputError)(
                f"{flag} {directory}: cannot write the export ({reason}); nothing of it was kept, and the run's "
                f"own files in {args.output_dir} are complete: once it can be written, --eval_only with "
                f"--model_name_or_path set to the checkpoint results.json names and {flag} writes it"
            ) from None


def predict(args, tokenizer, evaluator):
    """Write the model's predictions for --predict_file to output_dir/predictions.tsv."""
    pairs, languages, num_skipped = read_prediction_file(args.predict_file)
    num_workers = args.preprocessing_num_workers or cpu_cores_per_process()
    with PairEncoder(tokenizer, args.max_seq_length, args.memory_length, num_workers) as encoder:
        features = encoder.encode(pairs)
    logger.info(
        "predicting %d pairs of %s (%d rows with an empty field skipped)", len(pairs), args.predict_file, num_skipped
    )
    logits = evaluator.predict_logits(features)
    if distributed.is_main():
        path = os.path.join(args.output_dir, PREDICTIONS_FILE)
        write_predictions(path, pairs, languages, logits)
        logger.info("wrote %s", path)


if __name__ == "__main__":
    main()
