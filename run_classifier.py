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

import argparse
import logging
import os
import shutil
import sys
import time
import traceback
import warnings
from functools import partial
from itertools import islice

import numpy as np

# Paddle warns at import about a compiler cache and about AMP on CPU; neither concerns a user.
warnings.filterwarnings("ignore", message="No ccache found")
warnings.filterwarnings("ignore", message="Setuptools is replacing distutils")
warnings.filterwarnings("ignore", message="(AmpScaler|amp_guard) can only be enabled")

import paddle  # noqa: E402
import paddle.nn.functional as F  # noqa: E402
from paddlenlp.transformers import AutoTokenizer, ErnieMForSequenceClassification  # noqa: E402
from paddlenlp.utils.log import logger as paddlenlp_logger  # noqa: E402
from tqdm import tqdm  # noqa: E402
from tqdm.contrib.logging import logging_redirect_tqdm  # noqa: E402

from checkpoints import (  # noqa: E402
    STATE_FILE,
    WEIGHTS_FILE,
    TrainingState,
    capture_rng_state,
    check_resumable,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_training_checkpoint,
    prune_checkpoints,
    write_checkpoint,
)
from data import (  # noqa: E402
    NUM_SPECIAL_TOKENS,
    Features,
    PairEncoder,
    ShardedBatchSampler,
    collate_training_batch,
    download_xnli,
    read_eval_split,
    read_prediction_file,
    read_train_split,
    xnli_file_paths,
)
from evaluation import evaluate_languages, predict_logits, write_predictions  # noqa: E402
from feature_cache import cache_key, load_features, save_features  # noqa: E402
from optimization import create_optimizer  # noqa: E402
from reporting import format_results_table, paper_reference, plot_results  # noqa: E402
from run_control import (  # noqa: E402
    NonFiniteGuard,
    NoWriter,
    StopRequest,
    TrainingFailed,
    TrainingProgress,
    TrainingStopped,
    log_evaluation,
    open_visualdl,
)
from utils import (  # noqa: E402
    LABELS,
    XNLI_LANGUAGES,
    InputError,
    available_cpu_cores,
    average_accuracy,
    cpu_cores_per_process,
    flush_denormals,
    set_cpu_threads,
    set_seed,
    str2bool,
    write_json_atomically,
)

TASK_TYPES = ("cross-lingual-transfer", "translate-train-all")
TRAIN_LANGUAGES = {"cross-lingual-transfer": ("en",), "translate-train-all": XNLI_LANGUAGES}
PRETRAINED_MODELS = ("ernie-m-base", "ernie-m-large")
WEIGHT_FILES = ("model_state.pdparams", "model.safetensors")
RESULTS_FILE = "results.json"
RESULTS_MARKDOWN_FILE = "results.md"
RESULTS_PLOT_FILE = "results.png"
PREDICTIONS_FILE = "predictions.tsv"
# ErnieM adds 2 to position ids: the pretrained models' 514 position embeddings hold 512 tokens.
ERNIE_M_POSITION_OFFSET = 2
MAX_POSITIONS = 512

logger = logging.getLogger("run_classifier")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the run-book's layout and shows every default."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add = parser.add_argument
    add("--task_type", required=True, choices=TASK_TYPES, help="The XNLI setting.")
    add("--model_name_or_path", required=True,
        help=f"{' or '.join(PRETRAINED_MODELS)}, or a directory saved with save_pretrained (a checkpoint).")
    add("--output_dir", required=True, help="Where checkpoints and results.json are written.")
    add("--data_dir", default=None,
        help="Local XNLI in the release layout (XNLI-1.0/, XNLI-MT-1.0/). Default: download through PaddleNLP.")
    add("--eval_only", action="store_true", help="Evaluate --model_name_or_path on dev and test; no training.")
    add("--predict_file", default=None,
        help="Write predictions.tsv for this file's pairs (premise<TAB>hypothesis rows, or an XNLI file) with "
             "--model_name_or_path; no training or evaluation.")
    add("--export_model_dir", default=None,
        help="Also save the (selected) model as a static graph for Paddle Inference in this directory.")
    add("--cache_dir", default=os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                                            "ernie_m_xnli"),
        help="Where tokenized splits are kept between runs; '' turns the cache off.")
    add("--preprocessing_num_workers", type=int, default=0,
        help="Processes that tokenize; 0: the CPU cores available (all of them on a machine whose other ranks "
             "wait for the cache).")
    add("--max_seq_length", type=int, default=256, help="Maximum tokens per input, special tokens included.")
    add("--memory_length", type=int, default=0,
        help="Premise tokens shared by consecutive windows of a pair longer than max_seq_length; 0 truncates.")
    add("--learning_rate", type=float, default=5e-5, help="Peak learning rate of the top layer.")
    add("--dropout", type=float, default=0.1, help="Dropout before the classifier.")
    add("--num_train_epochs", type=float, default=5, help="Training epochs.")
    add("--logging_steps", type=int, default=100, help="Log every this many steps.")
    add("--save_steps", type=int, default=10000, help="Evaluate dev and save a checkpoint every this many steps.")
    add("--batch_size", type=int, default=16, help="Training batch size per card.")
    add("--eval_batch_size", type=int, default=64, help="Evaluation batch size per card.")
    add("--group_by_length", type=str2bool, nargs="?", const=True, default=False,
        help="Batch training inputs of similar length together, in random batch order (true/false): less padding.")
    add("--weight_decay", type=float, default=0.0, help="AdamW weight decay (not on biases and norms).")
    add("--layerwise_decay", type=float, default=0.8, help="Learning-rate ratio between successive layers.")
    add("--adam_epsilon", type=float, default=1e-8, help="AdamW epsilon.")
    add("--warmup_proportion", type=float, default=0.1, help="Fraction of training steps of linear warmup.")
    add("--warmup_steps", type=int, default=0, help="Warmup steps; > 0 overrides --warmup_proportion.")
    add("--max_steps", type=int, default=-1, help="Training steps; > 0 overrides --num_train_epochs.")
    add("--select_on", choices=("avg", "en"), default="avg",
        help="Select the best checkpoint on average dev accuracy, or English dev only (strict zero-shot).")
    add("--save_total_limit", type=int, default=None,
        help="Keep only the newest this many checkpoints, and the best. Default: keep all.")
    add("--resume_from_checkpoint", default=None,
        help="Continue a run exactly from a checkpoint directory, or 'latest' in --output_dir.")
    add("--overwrite_output_dir", action="store_true", help="Replace a run already in --output_dir.")
    add("--seed", type=int, default=42, help="Random seed.")
    add("--device", choices=("gpu", "xpu", "cpu"), default="gpu", help="Device to train on.")
    add("--cpu_threads", type=int, default=0,
        help="Threads of each process's CPU kernels with --device cpu; 0: the available cores, shared by the "
             "processes on this machine.")
    add("--flush_denormals", type=str2bool, nargs="?", const=True, default=True,
        help="With --device cpu, compute float32 values below 1.2e-38 as zero (true/false): padded batches make "
             "such denormal numbers, on which CPUs run training steps several times slower.")
    add("--use_amp", type=str2bool, nargs="?", const=True, default=False, help="Mixed precision (true/false).")
    add("--scale_loss", type=float, default=2**15, help="Initial loss scaling of mixed precision.")
    add("--disable_tqdm", action="store_true", help="No progress bars (they only show on a terminal anyway).")
    add("--visualdl", type=str2bool, nargs="?", const=True, default=None,
        help="Write VisualDL logs to output_dir/visualdl (true/false). Default: when VisualDL is installed.")
    add("--debug", action="store_true", help="Show the Python traceback of input errors.")
    args = parser.parse_args(argv)
    problem = find_invalid_argument(args)
    if problem:
        parser.error(problem)
    return args


def find_invalid_argument(args):
    """A one-line description of the first invalid argument, or None."""
    checks = [
        (args.batch_size >= 1, f"--batch_size must be at least 1, got {args.batch_size}"),
        (args.eval_batch_size >= 1, f"--eval_batch_size must be at least 1, got {args.eval_batch_size}"),
        (args.learning_rate > 0, f"--learning_rate must be positive, got {args.learning_rate}"),
        (0 < args.layerwise_decay <= 1, f"--layerwise_decay must be in (0, 1], got {args.layerwise_decay}"),
        (0 <= args.dropout < 1, f"--dropout must be in [0, 1), got {args.dropout}"),
        (args.weight_decay >= 0, f"--weight_decay must be non-negative, got {args.weight_decay}"),
        (args.adam_epsilon > 0, f"--adam_epsilon must be positive, got {args.adam_epsilon}"),
        (0 <= args.warmup_proportion <= 1, f"--warmup_proportion must be in [0, 1], got {args.warmup_proportion}"),
        (args.warmup_steps >= 0, f"--warmup_steps must be non-negative, got {args.warmup_steps}"),
        (args.max_steps > 0 or args.num_train_epochs > 0,
         f"--num_train_epochs must be positive (or set --max_steps), got {args.num_train_epochs}"),
        (args.logging_steps >= 1, f"--logging_steps must be at least 1, got {args.logging_steps}"),
        (args.save_steps >= 1, f"--save_steps must be at least 1, got {args.save_steps}"),
        (NUM_SPECIAL_TOKENS + 2 <= args.max_seq_length <= MAX_POSITIONS,
         f"--max_seq_length must be between {NUM_SPECIAL_TOKENS + 2} and {MAX_POSITIONS} "
         f"(ERNIE-M's position embeddings), got {args.max_seq_length}"),
        (0 <= args.memory_length < args.max_seq_length - NUM_SPECIAL_TOKENS,
         f"--memory_length must be at least 0 and below max_seq_length - {NUM_SPECIAL_TOKENS} "
         f"(the premise tokens one window holds), got {args.memory_length}"),
        (args.preprocessing_num_workers >= 0,
         f"--preprocessing_num_workers must be non-negative, got {args.preprocessing_num_workers}"),
        (args.cpu_threads >= 0, f"--cpu_threads must be non-negative, got {args.cpu_threads}"),
        (args.scale_loss > 0, f"--scale_loss must be positive, got {args.scale_loss}"),
        (args.save_total_limit is None or args.save_total_limit >= 1,
         f"--save_total_limit must be at least 1, got {args.save_total_limit}"),
        (not ((args.eval_only or args.predict_file) and args.resume_from_checkpoint),
         "--resume_from_checkpoint goes with training, not --eval_only or --predict_file"),
        (args.predict_file is None or os.path.isfile(args.predict_file), f"--predict_file {args.predict_file}: no such file"),
        (args.data_dir is None or os.path.isdir(args.data_dir), f"--data_dir {args.data_dir}: no such directory"),
        (not os.path.isfile(args.output_dir), f"--output_dir {args.output_dir} is a file, expected a directory"),
    ]
    return next((message for valid, message in checks if not valid), None) or find_invalid_model(args)


def find_invalid_model(args):
    path = args.model_name_or_path
    if path in PRETRAINED_MODELS:
        if args.eval_only or args.predict_file:
            mode = "--eval_only" if args.eval_only else "--predict_file"
            return f"{mode} needs a fine-tuned checkpoint directory, not the pretrained {path}"
        return None
    if not os.path.isdir(path):
        return f"--model_name_or_path {path}: neither {' nor '.join(PRETRAINED_MODELS)} nor a directory"
    if not os.path.isfile(os.path.join(path, "config.json")):
        return f"--model_name_or_path {path}: no config.json (expected a directory saved with save_pretrained)"
    return None


def main(argv=None):
    args = parse_args(argv)
    rank, world_size = set_up_device(args.device, args.use_amp)
    configure_logging(rank, world_size)
    if args.device == "cpu":
        configure_cpu(args.cpu_threads, args.flush_denormals, args.use_amp)
    set_seed(args.seed, rank)
    prepare_output_dir(args, rank, world_size)
    resume_dir = find_resume_checkpoint(args, world_size)

    model_dir = resume_dir or args.model_name_or_path
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_model(model_dir, args.dropout, len(tokenizer), args.max_seq_length)
    # Bars on rank 0 at a terminal only; log lines are written above them.
    progress_bar = partial(tqdm, disable=rank != 0 or args.disable_tqdm or not sys.stderr.isatty(), leave=False)
    predict_options = dict(batch_size=args.eval_batch_size, pad_token_id=tokenizer.pad_token_id,
                           use_amp=args.use_amp, rank=rank, world_size=world_size)

    with logging_redirect_tqdm():
        if args.predict_file:
            predict(args, model, tokenizer, predict_options, rank)
        else:
            train_and_evaluate(args, model, tokenizer, predict_options, progress_bar, resume_dir, rank, world_size)
    if args.export_model_dir and rank == 0:
        export_inference_model(model, args.export_model_dir)


def train_and_evaluate(args, model, tokenizer, predict_options, progress_bar, resume_dir, rank, world_size):
    """Train (unless --eval_only), select on dev, evaluate the selected model on test, report."""
    train_features, dev_features, test_features = prepare_features(args, tokenizer, progress_bar, rank, world_size)
    evaluate_split = partial(evaluate_languages, progress=partial(progress_bar, desc="evaluating", unit="language"),
                             **predict_options)
    started = time.time()
    if args.eval_only:
        state = TrainingState()
        dev_results = evaluate_split(model, dev_features)
    else:
        state = train(args, model, tokenizer, train_features, dev_features, evaluate_split, progress_bar,
                      resume_dir, rank, world_size)
        if state.best_step != state.global_step:
            restore_weights(model, state.best_checkpoint, rank, world_size)
        dev_results = state.best_dev
    test_results = evaluate_split(model, test_features)
    if rank == 0:
        report_results(args, model.config, state, dev_results, test_results, time.time() - started)


def predict(args, model, tokenizer, predict_options, rank):
    """Write the model's predictions for --predict_file to output_dir/predictions.tsv."""
    pairs, num_skipped = read_prediction_file(args.predict_file)
    with PairEncoder(tokenizer, args.max_seq_length, args.memory_length,
                     args.preprocessing_num_workers or cpu_cores_per_process()) as encoder:
        features = encoder.encode(pairs)
    logger.info("predicting %d pairs of %s (%d rows with an empty field skipped)", len(pairs), args.predict_file,
                num_skipped)
    logits = predict_logits(model, features, **predict_options)
    if rank == 0:
        path = os.path.join(args.output_dir, PREDICTIONS_FILE)
        write_predictions(path, pairs, logits)
        logger.info("wrote %s", path)


def export_inference_model(model, directory):
    """Save the model as a static graph for Paddle Inference (`inference.json`, `inference.pdiparams`):
    int64 inputs input_ids, position_ids and attention_mask, each [batch, length] of any size."""
    input_spec = [
        paddle.static.InputSpec(shape=[None, None], dtype="int64", name=name)
        for name in ("input_ids", "position_ids", "attention_mask")
    ]
    model.eval()
    paddle.jit.save(paddle.jit.to_static(model, input_spec=input_spec), os.path.join(directory, "inference"))
    logger.info("exported the model for Paddle Inference to %s", directory)


def set_up_device(device, use_amp):
    """Select the device and, under `paddle.distributed.launch`, join the process group."""
    if device == "gpu" and not paddle.is_compiled_with_cuda():
        raise InputError("--device gpu: this PaddlePaddle build has no CUDA support "
                         "(install paddlepaddle-gpu, see README) or pass --device cpu")
    if device == "xpu" and not paddle.is_compiled_with_xpu():
        raise InputError("--device xpu: this PaddlePaddle build has no XPU support, or pass --device cpu")
    if device == "gpu" and paddle.device.cuda.device_count() == 0:
        raise InputError("--device gpu: no GPU is visible (check CUDA_VISIBLE_DEVICES and the driver)")
    paddle.set_device(device)
    if use_amp and device != "cpu" and not paddle.amp.is_float16_supported():
        raise InputError(f"--use_amp: this {device} has no float16 support; run without --use_amp")
    world_size = paddle.distributed.get_world_size()
    if world_size > 1:
        paddle.distributed.init_parallel_env()
    return paddle.distributed.get_rank(), world_size


def configure_cpu(cpu_threads, flush_denormal_numbers, use_amp):
    """Paddle runs one CPU thread per process unless told otherwise; AMP does not apply on CPU."""
    num_threads = cpu_threads or cpu_cores_per_process()
    # Before the thread pools start: their threads inherit the setting.
    flushed = flush_denormal_numbers and flush_denormals()
    set_cpu_threads(num_threads)
    logger.info("device cpu: %d thread(s) per process, denormal numbers %s", num_threads,
                "flushed to zero" if flushed else "kept")
    if flush_denormal_numbers and not flushed:
        logger.warning("--flush_denormals: not supported on this platform (only Linux on x86-64 or aarch64)")
    if use_amp:
        logger.warning("--use_amp has no effect on cpu: Paddle computes in float32 there")


def configure_logging(rank, world_size):
    """One log format; rank 0 reports, the other ranks only warn."""
    rank_tag = f"[rank {rank}] " if world_size > 1 else ""
    logging.basicConfig(
        format=f"%(asctime)s {rank_tag}%(levelname)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S", force=True
    )
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    paddlenlp_logger.set_level("WARNING" if rank == 0 else "ERROR")
    logger.info("command: %s", " ".join(sys.argv))


def prepare_output_dir(args, rank, world_size):
    """Create `output_dir`, refusing to mix a new run with one already there."""
    training = not (args.eval_only or args.predict_file)
    previous_run = (training and list_checkpoints(args.output_dir)) or (
        not args.predict_file and os.path.isfile(os.path.join(args.output_dir, RESULTS_FILE)))
    if previous_run and not (args.resume_from_checkpoint or args.overwrite_output_dir):
        raise InputError(f"--output_dir {args.output_dir} already holds a run: pass --resume_from_checkpoint latest "
                         "to continue it, --overwrite_output_dir to replace it, or another --output_dir")
    try:
        os.makedirs(args.output_dir, exist_ok=True)
    except OSError as error:
        raise InputError(f"--output_dir {args.output_dir}: cannot create it ({error.strerror})") from None
    if not os.access(args.output_dir, os.W_OK):
        raise InputError(f"--output_dir {args.output_dir}: not writable")
    if training and args.overwrite_output_dir and not args.resume_from_checkpoint and rank == 0:
        for _, path in list_checkpoints(args.output_dir):
            shutil.rmtree(path)
    if world_size > 1:
        paddle.distributed.barrier()


def find_resume_checkpoint(args, world_size):
    """The checkpoint that --resume_from_checkpoint names, checked to continue this run, or None."""
    resume_dir = args.resume_from_checkpoint
    if resume_dir == "latest":
        resume_dir = latest_checkpoint(args.output_dir)
        if resume_dir is None:
            raise InputError(f"--resume_from_checkpoint latest: no complete checkpoint in {args.output_dir}")
    if resume_dir:
        if not os.path.isfile(os.path.join(resume_dir, STATE_FILE)):
            raise InputError(f"--resume_from_checkpoint {resume_dir}: not a complete checkpoint (no {STATE_FILE})")
        check_resumable(resume_dir, args, world_size)
        logger.info("resuming from %s", resume_dir)
    return resume_dir


def load_model(model_dir, dropout, tokenizer_size, max_seq_length):
    """ErnieM with a 3-way classifier, checked against the tokenizer and `max_seq_length`."""
    if os.path.isdir(model_dir) and not any(os.path.isfile(os.path.join(model_dir, name)) for name in WEIGHT_FILES):
        raise InputError(f"--model_name_or_path {model_dir}: no weights ({' or '.join(WEIGHT_FILES)})")
    try:
        model = ErnieMForSequenceClassification.from_pretrained(
            model_dir,
            num_labels=len(LABELS),
            classifier_dropout=dropout,
            id2label=dict(enumerate(LABELS)),
            label2id={label: index for index, label in enumerate(LABELS)},
        )
    except (RuntimeError, ValueError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = next((line for line in lines if "shape" in line), lines[-1] if lines else type(error).__name__)
        raise InputError(f"--model_name_or_path {model_dir}: weights do not fit config.json ({reason})") from None
    if tokenizer_size > model.config.vocab_size:
        raise InputError(f"--model_name_or_path {model_dir}: the tokenizer has {tokenizer_size} tokens "
                         f"but the model only {model.config.vocab_size} embeddings")
    max_length = model.config.max_position_embeddings - ERNIE_M_POSITION_OFFSET
    if max_seq_length > max_length:
        raise InputError(f"--max_seq_length {max_seq_length}: this model has position embeddings "
                         f"for at most {max_length} tokens")
    return model


def prepare_features(args, tokenizer, progress_bar, rank, world_size):
    """Read XNLI and tokenize every split once for the whole run (or load it from the cache)."""
    train_languages = () if args.eval_only else TRAIN_LANGUAGES[args.task_type]
    paths = xnli_file_paths(args.data_dir or download_xnli(with_train=bool(train_languages)), train_languages)
    readers = {split: (partial(read_eval_split, paths[split]), [paths[split]]) for split in ("dev", "test")}
    if train_languages:
        readers["train"] = (partial(read_train_split, paths["train"]), list(paths["train"].values()))
    features = {
        split: tokenized_split(split, read, files, tokenizer, args, progress_bar, rank, world_size)
        for split, (read, files) in readers.items()
    }
    train_features = Features.concatenate(features["train"].values()) if train_languages else None
    return train_features, features["dev"], features["test"]


def tokenized_split(split, read_split, data_files, tokenizer, args, progress_bar, rank, world_size):
    """{language: Features} of one split. With a cache, rank 0 tokenizes what it lacks and the
    other ranks load it; a rank that cannot see rank 0's cache (another machine) tokenizes too."""

    def tokenize(num_workers):
        xnli_file = read_split()
        num_pairs = sum(len(pairs) for pairs in xnli_file.pairs_by_language.values())
        with progress_bar(total=num_pairs, desc=f"tokenizing {split}", unit="pair") as bar, PairEncoder(
                tokenizer, args.max_seq_length, args.memory_length, args.preprocessing_num_workers or num_workers
        ) as encoder:
            features = {lang: encoder.encode(pairs, bar.update) for lang, pairs in xnli_file.pairs_by_language.items()}
        return features, xnli_file.num_skipped

    source, result = "tokenized", None
    cache_path = args.cache_dir and os.path.join(
        args.cache_dir, f"{split}-{cache_key(tokenizer, data_files, args.max_seq_length, args.memory_length)}.npz")
    if not cache_path:
        result = tokenize(cpu_cores_per_process())
    elif rank == 0 and not os.path.isfile(cache_path):
        result = tokenize(available_cpu_cores())  # the other ranks on this machine wait for it
        save_features(cache_path, *result)
    if world_size > 1 and cache_path:
        paddle.distributed.barrier()
    if result is None:
        result, source = (load_features(cache_path), f"from {cache_path}") if os.path.isfile(cache_path) else (
            tokenize(cpu_cores_per_process()), "tokenized")
    log_split(split, result[0], result[1], source)
    return result[0]


def log_split(split, features_by_language, num_skipped, source):
    num_examples = sum(features.num_examples for features in features_by_language.values())
    num_inputs = sum(len(features) for features in features_by_language.values())
    logger.info(
        "%s: %d pairs in %d language(s) -> %d inputs; %d rows with an empty field skipped (%s)",
        split, num_examples, len(features_by_language), num_inputs, num_skipped, source,
    )


def train(args, model, tokenizer, train_features, dev_features, evaluate_split, progress_bar, resume_dir, rank,
          world_size):
    """Train, evaluating dev and saving a checkpoint every `save_steps` and at the end."""
    sampler = ShardedBatchSampler(len(train_features), args.batch_size, rank, world_size, args.seed,
                                  lengths=train_features.lengths() if args.group_by_length else None)
    train_loader = paddle.io.DataLoader(
        train_features, batch_sampler=sampler,
        collate_fn=partial(collate_training_batch, pad_token_id=tokenizer.pad_token_id),
    )
    num_training_steps = args.max_steps if args.max_steps > 0 else int(np.ceil(len(sampler) * args.num_train_epochs))
    optimizer, lr_scheduler = create_optimizer(
        model, model.config.num_hidden_layers, args.learning_rate, num_training_steps,
        args.warmup_steps if args.warmup_steps > 0 else args.warmup_proportion,
        args.layerwise_decay, args.weight_decay, args.adam_epsilon,
    )
    scaler = paddle.amp.GradScaler(enable=args.use_amp, init_loss_scaling=args.scale_loss)
    state = load_training_checkpoint(resume_dir, optimizer, scaler, rank) if resume_dir else TrainingState()
    save = partial(save_checkpoint, args=args, model=model, tokenizer=tokenizer, optimizer=optimizer,
                   scaler=scaler, rank=rank, world_size=world_size)
    trained_model = paddle.DataParallel(model) if world_size > 1 else model
    logger.info(
        "training %d steps: %d inputs, %d per card x %d card(s), %d steps per epoch",
        num_training_steps, len(train_features), args.batch_size, world_size, len(sampler),
    )

    guard = NonFiniteGuard(args.output_dir)
    progress = TrainingProgress(
        progress_bar(total=num_training_steps, initial=state.global_step, desc="training", unit="step"),
        open_visualdl(args.visualdl, os.path.join(args.output_dir, "visualdl")) if rank == 0 else NoWriter(),
        args.logging_steps, num_training_steps, args.batch_size * world_size,
    )
    model.train()
    remaining_batches = islice(batches_from(train_loader, sampler, state.epoch, state.next_batch),
                               num_training_steps - state.global_step)
    with StopRequest() as stop_request:
        for epoch, batch_index, batch in remaining_batches:
            loss, skipped = training_step(trained_model, batch, optimizer, lr_scheduler, scaler, args.use_amp)
            state.global_step, state.epoch, state.next_batch = state.global_step + 1, epoch, batch_index + 1
            guard.check(state.global_step, loss, skipped)
            loss_scale = float(scaler._scale) if scaler.is_enable() else None
            progress.step(state.global_step, epoch, loss, lr_scheduler.get_lr(), loss_scale, guard.skipped)

            at_save_point = state.global_step % args.save_steps == 0 or state.global_step == num_training_steps
            if at_save_point:
                dev_results = evaluate_split(model, dev_features)
                progress.evaluation("dev", state.global_step, dev_results)
                update_best(state, dev_results, args.select_on, args.output_dir)
                checkpoint = save(state)
            signum = stop_request.agreed(world_size)
            if signum:
                raise TrainingStopped(signum, state.global_step, checkpoint if at_save_point else save(state))
    progress.close()
    return state


def batches_from(loader, sampler, epoch, start_batch):
    """(epoch, index in the epoch, batch), epoch after epoch, from a position in the data order."""
    while True:
        sampler.set_epoch(epoch, start_batch)
        for index, batch in enumerate(loader, start=start_batch):
            yield epoch, index, batch
        epoch, start_batch = epoch + 1, 0


def training_step(model, batch, optimizer, lr_scheduler, scaler, use_amp):
    """One optimizer step, the same code for every precision; returns (loss, whether the scaler
    skipped the update because the gradients were not finite)."""
    input_ids, attention_mask, labels = batch
    with paddle.amp.auto_cast(enable=use_amp):
        logits = model(input_ids, attention_mask=attention_mask)
        loss = F.cross_entropy(logits.astype("float32"), labels)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.clear_grad()
    lr_scheduler.step()
    skipped = scaler.is_enable() and bool(scaler._found_inf)
    return float(loss), skipped


def update_best(state, dev_results, select_on, output_dir):
    accuracy = {lang: result["accuracy"] for lang, result in dev_results.items()}
    score = average_accuracy(accuracy) if select_on == "avg" else accuracy["en"]
    state.dev_history.append({"step": state.global_step, "avg": average_accuracy(accuracy), "en": accuracy["en"]})
    if score > state.best_score:
        state.best_score, state.best_step, state.best_dev = score, state.global_step, dev_results
        state.best_checkpoint = checkpoint_path(output_dir, state.global_step)
        logger.info("new best dev score (%s) %.2f at step %d", select_on, 100 * score, state.global_step)


def save_checkpoint(state, args, model, tokenizer, optimizer, scaler, rank, world_size):
    """Save `checkpoint-<step>` from rank 0, with every rank's random state; returns its path."""
    directory = checkpoint_path(args.output_dir, state.global_step)
    rng_states = [capture_rng_state()]
    if world_size > 1:
        rng_states = []
        paddle.distributed.all_gather_object(rng_states, capture_rng_state())
    if rank == 0:
        write_checkpoint(directory, model, tokenizer, optimizer, scaler, state, args, rng_states)
        if args.save_total_limit:
            prune_checkpoints(args.output_dir, args.save_total_limit, protected=state.best_checkpoint)
        logger.info("saved %s", directory)
    if world_size > 1:
        paddle.distributed.barrier()
    return directory


def restore_weights(model, checkpoint_dir, rank, world_size):
    """Load the selected checkpoint's weights on rank 0 (the only one that wrote it) and
    broadcast them, so that no shared file system is needed across machines."""
    if rank == 0:
        model.set_state_dict(paddle.load(os.path.join(checkpoint_dir, WEIGHTS_FILE)))
    if world_size > 1:
        for parameter in model.parameters():
            paddle.distributed.broadcast(parameter, src=0)


def report_results(args, model_config, state, dev_results, test_results, runtime_seconds):
    """Print the test table; write results.json, results.md (beside the paper) and results.png."""
    model_name = os.path.basename(os.path.normpath(args.model_name_or_path))
    test_accuracy = {lang: result["accuracy"] for lang, result in test_results.items()}
    dev_accuracy = {lang: result["accuracy"] for lang, result in dev_results.items()}
    log_evaluation("test", state.global_step, test_results)
    title = f"XNLI test accuracy (%), {args.task_type}, selected on dev {args.select_on}"
    print(f"{title}:\n{format_results_table({model_name: test_accuracy})}", flush=True)

    reference = paper_reference(model_config.num_hidden_layers, model_config.hidden_size, args.task_type)
    reference_rows = {f"{reference[0]} (paper)": reference[1]} if reference else {}
    with open(os.path.join(args.output_dir, RESULTS_MARKDOWN_FILE), "w", encoding="utf-8") as file:
        file.write(f"# {title}\n\n{format_results_table({model_name: test_accuracy, **reference_rows})}\n\n"
                   f"Dev accuracy (%) of the same checkpoint:\n\n{format_results_table({model_name: dev_accuracy})}\n")
    plot_results(os.path.join(args.output_dir, RESULTS_PLOT_FILE), f"{model_name}: {title}", test_accuracy, reference)

    write_json_atomically(os.path.join(args.output_dir, RESULTS_FILE), {
        "model": args.model_name_or_path,
        "task_type": args.task_type,
        "select_on": args.select_on,
        "checkpoint": state.best_checkpoint or args.model_name_or_path,
        "global_step": state.global_step,
        "runtime_seconds": runtime_seconds,
        "dev_accuracy": {**dev_accuracy, "avg": average_accuracy(dev_accuracy)},
        "test_accuracy": {**test_accuracy, "avg": average_accuracy(test_accuracy)},
        "dev_loss": {lang: result["loss"] for lang, result in dev_results.items()},
        "test_loss": {lang: result["loss"] for lang, result in test_results.items()},
        "dev_history": state.dev_history,
        "args": vars(args),
    })


def run_command_line():
    """`main()` with the exit codes of the README: 2 for bad input, 128 + signal when stopped by
    a signal, 1 when training fails; the message is one line, the traceback only with --debug."""
    try:
        main()
    except (InputError, TrainingStopped, TrainingFailed) as error:
        if "--debug" in sys.argv:
            traceback.print_exc()
        print(f"{os.path.basename(sys.argv[0])}: error: {error}", file=sys.stderr)
        sys.exit(2 if isinstance(error, InputError) else getattr(error, "exit_code", 1))


if __name__ == "__main__":
    run_command_line()
