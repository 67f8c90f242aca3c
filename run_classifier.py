"""Fine-tune and evaluate ERNIE-M on XNLI, in PaddlePaddle's dynamic graph.

One card:
    python run_classifier.py --task_type cross-lingual-transfer --model_name_or_path ernie-m-base \
        --output_dir output/base-clt --device gpu
Several cards (`--batch_size` is per card) or machines:
    python -m paddle.distributed.launch --gpus 0,1,2,3 run_classifier.py \
        --task_type translate-train-all --model_name_or_path ernie-m-large --output_dir output/large-tta
CPU smoke run on local XNLI files:
    python run_classifier.py --task_type cross-lingual-transfer --model_name_or_path ernie-m-base \
        --output_dir output/smoke --device cpu --data_dir ../shared/xnli --max_steps 20
Evaluate a fine-tuned checkpoint on dev and test:
    python run_classifier.py --eval_only --task_type cross-lingual-transfer \
        --model_name_or_path output/base-clt/checkpoint-10000 --output_dir output/base-clt-eval

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
import warnings
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np

# Paddle warns at import about a compiler cache and about AMP on CPU; neither concerns a user.
warnings.filterwarnings("ignore", message="No ccache found")
warnings.filterwarnings("ignore", message="Setuptools is replacing distutils")
warnings.filterwarnings("ignore", message="(AmpScaler|amp_guard) can only be enabled")

import paddle  # noqa: E402
import paddle.nn.functional as F  # noqa: E402
from paddlenlp.transformers import AutoTokenizer, ErnieMForSequenceClassification  # noqa: E402
from paddlenlp.utils.log import logger as paddlenlp_logger  # noqa: E402

from data import (  # noqa: E402
    NUM_SPECIAL_TOKENS,
    ShardedBatchSampler,
    average_window_logits,
    collate_training_batch,
    download_xnli,
    encode_pairs,
    eval_batches,
    pad_batch,
    read_eval_split,
    read_train_split,
    xnli_file_paths,
)
from optimization import create_optimizer  # noqa: E402
from utils import (  # noqa: E402
    LABELS,
    XNLI_LANGUAGES,
    InputError,
    average_accuracy,
    format_results_table,
    set_seed,
    str2bool,
    write_json_atomically,
)

TASK_TYPES = ("cross-lingual-transfer", "translate-train-all")
TRAIN_LANGUAGES = {"cross-lingual-transfer": ("en",), "translate-train-all": XNLI_LANGUAGES}
PRETRAINED_MODELS = ("ernie-m-base", "ernie-m-large")
# ErnieM adds 2 to position ids and has 514 position embeddings.
MAX_POSITIONS = 512

logger = logging.getLogger("run_classifier")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--task_type", required=True, choices=TASK_TYPES, help="The XNLI setting.")
    add("--model_name_or_path", required=True,
        help=f"{' or '.join(PRETRAINED_MODELS)}, or a directory saved with save_pretrained (a checkpoint).")
    add("--output_dir", required=True, help="Where checkpoints and results.json are written.")
    add("--data_dir", default=None,
        help="Local XNLI in the release layout (XNLI-1.0/, XNLI-MT-1.0/). Default: download through PaddleNLP.")
    add("--eval_only", action="store_true", help="Evaluate --model_name_or_path on dev and test; no training.")
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
    add("--weight_decay", type=float, default=0.0, help="AdamW weight decay (not on biases and norms).")
    add("--layerwise_decay", type=float, default=0.8, help="Learning-rate ratio between successive layers.")
    add("--adam_epsilon", type=float, default=1e-8, help="AdamW epsilon.")
    add("--warmup_proportion", type=float, default=0.1, help="Fraction of training steps of linear warmup.")
    add("--warmup_steps", type=int, default=0, help="Warmup steps; > 0 overrides --warmup_proportion.")
    add("--max_steps", type=int, default=-1, help="Training steps; > 0 overrides --num_train_epochs.")
    add("--select_on", choices=("avg", "en"), default="avg",
        help="Select the best checkpoint on average dev accuracy, or English dev only (strict zero-shot).")
    add("--seed", type=int, default=42, help="Random seed.")
    add("--device", choices=("gpu", "xpu", "cpu"), default="gpu", help="Device to train on.")
    add("--use_amp", type=str2bool, nargs="?", const=True, default=False, help="Mixed precision (true/false).")
    add("--scale_loss", type=float, default=2**15, help="Initial loss scaling of mixed precision.")
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
        (args.scale_loss > 0, f"--scale_loss must be positive, got {args.scale_loss}"),
        (args.data_dir is None or os.path.isdir(args.data_dir), f"--data_dir {args.data_dir}: no such directory"),
        (not os.path.isfile(args.output_dir), f"--output_dir {args.output_dir} is a file, expected a directory"),
    ]
    return next((message for valid, message in checks if not valid), None) or find_invalid_model(args)


def find_invalid_model(args):
    path = args.model_name_or_path
    if path in PRETRAINED_MODELS:
        if args.eval_only:
            return f"--eval_only needs a fine-tuned checkpoint directory, not the pretrained {path}"
        return None
    if not os.path.isdir(path):
        return f"--model_name_or_path {path}: neither {' nor '.join(PRETRAINED_MODELS)} nor a directory"
    if not os.path.isfile(os.path.join(path, "config.json")):
        return f"--model_name_or_path {path}: no config.json (expected a directory saved with save_pretrained)"
    return None


def main(argv=None):
    args = parse_args(argv)
    rank, world_size = set_up_device(args.device)
    configure_logging(rank, world_size)
    set_seed(args.seed, rank)
    if args.use_amp and args.device == "cpu":
        logger.warning("--use_amp has no effect on cpu: Paddle computes in float32 there")

    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    train_features, dev_features, test_features = prepare_features(args, tokenizer)
    model = ErnieMForSequenceClassification.from_pretrained(
        args.model_name_or_path,
        num_labels=len(LABELS),
        classifier_dropout=args.dropout,
        id2label=dict(enumerate(LABELS)),
        label2id={label: index for index, label in enumerate(LABELS)},
    )
    evaluate_split = partial(
        evaluate_languages, batch_size=args.eval_batch_size, pad_token_id=tokenizer.pad_token_id,
        use_amp=args.use_amp, rank=rank, world_size=world_size,
    )

    started = time.time()
    if args.eval_only:
        state = TrainingState()
        dev_results = evaluate_split(model, dev_features)
    else:
        state = train(args, model, tokenizer, train_features, dev_features, evaluate_split, rank, world_size)
        if state.best_step != state.global_step:
            restore_weights(model, state.best_checkpoint, rank, world_size)
        dev_results = state.best_dev
    test_results = evaluate_split(model, test_features)

    if rank == 0:
        report_results(args, state, dev_results, test_results, time.time() - started)


def set_up_device(device):
    """Select the device and, under `paddle.distributed.launch`, join the process group."""
    if device == "gpu" and not paddle.is_compiled_with_cuda():
        raise InputError("--device gpu: this PaddlePaddle build has no CUDA support "
                         "(install paddlepaddle-gpu, see README) or pass --device cpu")
    if device == "xpu" and not paddle.is_compiled_with_xpu():
        raise InputError("--device xpu: this PaddlePaddle build has no XPU support, or pass --device cpu")
    if device == "gpu" and paddle.device.cuda.device_count() == 0:
        raise InputError("--device gpu: no GPU is visible (check CUDA_VISIBLE_DEVICES and the driver)")
    paddle.set_device(device)
    world_size = paddle.distributed.get_world_size()
    if world_size > 1:
        paddle.distributed.init_parallel_env()
    return paddle.distributed.get_rank(), world_size


def configure_logging(rank, world_size):
    """One log format; rank 0 reports, the other ranks only warn."""
    rank_tag = f"[rank {rank}] " if world_size > 1 else ""
    logging.basicConfig(
        format=f"%(asctime)s {rank_tag}%(levelname)s %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        level=logging.INFO if rank == 0 else logging.WARNING,
        force=True,
    )
    paddlenlp_logger.set_level("WARNING" if rank == 0 else "ERROR")


def prepare_features(args, tokenizer):
    """Read XNLI and tokenize every split once for the whole run."""
    train_languages = () if args.eval_only else TRAIN_LANGUAGES[args.task_type]
    paths = xnli_file_paths(args.data_dir or download_xnli(with_train=bool(train_languages)), train_languages)
    encode = partial(encode_pairs, tokenizer, max_seq_length=args.max_seq_length, memory_length=args.memory_length)

    train_features = None
    if not args.eval_only:
        train_file = read_train_split(paths["train"])
        train_features = encode([pair for pairs in train_file.pairs_by_language.values() for pair in pairs])
        log_split("train", len(train_languages), [train_features], train_file.num_skipped)
    eval_features = []
    for split in ("dev", "test"):
        eval_file = read_eval_split(paths[split])
        features = {lang: encode(pairs) for lang, pairs in eval_file.pairs_by_language.items()}
        log_split(split, len(features), features.values(), eval_file.num_skipped)
        eval_features.append(features)
    return train_features, *eval_features


def log_split(split, num_languages, features_list, num_skipped):
    num_examples = sum(features.num_examples for features in features_list)
    num_inputs = sum(len(features) for features in features_list)
    logger.info(
        "%s: %d pairs in %d language(s) -> %d inputs; %d rows with an empty field skipped",
        split, num_examples, num_languages, num_inputs, num_skipped,
    )


@dataclass
class TrainingState:
    """What a checkpoint records of the run so far."""

    global_step: int = 0
    epoch: int = 0
    best_score: float = -1.0
    best_step: int = 0
    best_checkpoint: str = ""
    best_dev: dict = field(default_factory=dict)
    dev_history: list = field(default_factory=list)


def train(args, model, tokenizer, train_features, dev_features, evaluate_split, rank, world_size):
    """Train, evaluating dev and saving a checkpoint every `save_steps` and at the end."""
    sampler = ShardedBatchSampler(len(train_features), args.batch_size, rank, world_size, args.seed)
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
    trained_model = paddle.DataParallel(model) if world_size > 1 else model
    logger.info(
        "training %d steps: %d inputs, %d per card x %d card(s), %d steps per epoch",
        num_training_steps, len(train_features), args.batch_size, world_size, len(sampler),
    )

    state = TrainingState()
    running_loss, skipped_steps, log_started = paddle.zeros([]), 0, time.time()
    model.train()
    for epoch, (input_ids, attention_mask, labels) in batches_for_steps(train_loader, sampler, num_training_steps):
        with paddle.amp.auto_cast(enable=args.use_amp):
            logits = trained_model(input_ids, attention_mask=attention_mask)
            loss = F.cross_entropy(logits.astype("float32"), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.clear_grad()
        lr_scheduler.step()
        state.global_step, state.epoch = state.global_step + 1, epoch
        running_loss += loss.detach()
        if scaler.is_enable():
            skipped_steps += int(scaler._found_inf)  # the scaler skipped a step with inf/nan gradients

        if state.global_step % args.logging_steps == 0:
            elapsed = time.time() - log_started
            logger.info(
                "step %d/%d, epoch %d, loss %.4f, lr %.3e, %.1f examples/s%s",
                state.global_step, num_training_steps, epoch + 1, float(running_loss) / args.logging_steps,
                lr_scheduler.get_lr(), args.logging_steps * args.batch_size * world_size / elapsed,
                f", {skipped_steps} steps skipped (non-finite gradients)" if skipped_steps else "",
            )
            running_loss, log_started = paddle.zeros([]), time.time()
        if state.global_step % args.save_steps == 0 or state.global_step == num_training_steps:
            dev_results = evaluate_split(model, dev_features)
            log_evaluation("dev", state.global_step, dev_results)
            update_best(state, dev_results, args.select_on, args.output_dir)
            if rank == 0:
                save_checkpoint(state, args, model, tokenizer, optimizer, scaler)
            if world_size > 1:
                paddle.distributed.barrier()
    return state


def batches_for_steps(loader, sampler, num_steps):
    """(epoch, batch) pairs, epoch after epoch, until `num_steps` batches."""
    step, epoch = 0, 0
    while True:
        sampler.set_epoch(epoch)
        for batch in loader:
            yield epoch, batch
            step += 1
            if step == num_steps:
                return
        epoch += 1


def update_best(state, dev_results, select_on, output_dir):
    accuracy = {lang: result["accuracy"] for lang, result in dev_results.items()}
    score = average_accuracy(accuracy) if select_on == "avg" else accuracy["en"]
    state.dev_history.append({"step": state.global_step, "avg": average_accuracy(accuracy), "en": accuracy["en"]})
    if score > state.best_score:
        state.best_score, state.best_step, state.best_dev = score, state.global_step, dev_results
        state.best_checkpoint = os.path.join(output_dir, f"checkpoint-{state.global_step}")
        logger.info("new best dev score (%s) %.2f at step %d", select_on, 100 * score, state.global_step)


def save_checkpoint(state, args, model, tokenizer, optimizer, scaler):
    """Write `checkpoint-<step>` next to its final place and rename it there when complete,
    so that a crash never leaves a half-written checkpoint that looks complete."""
    final_dir = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
    partial_dir = final_dir + ".partial"
    shutil.rmtree(partial_dir, ignore_errors=True)
    model.save_pretrained(partial_dir)
    tokenizer.save_pretrained(partial_dir)
    paddle.save(optimizer.state_dict(), os.path.join(partial_dir, "optimizer.pdopt"))
    if scaler.is_enable():
        paddle.save(scaler.state_dict(), os.path.join(partial_dir, "scaler.pdparams"))
    write_json_atomically(
        os.path.join(partial_dir, "trainer_state.json"), {**asdict(state), "args": vars(args)}
    )
    shutil.rmtree(final_dir, ignore_errors=True)
    os.replace(partial_dir, final_dir)
    logger.info("saved %s", final_dir)


def restore_weights(model, checkpoint_dir, rank, world_size):
    """Load the selected checkpoint's weights on rank 0 (the only one that wrote it) and
    broadcast them, so that no shared file system is needed across machines."""
    if rank == 0:
        model.set_state_dict(paddle.load(os.path.join(checkpoint_dir, "model_state.pdparams")))
    if world_size > 1:
        for parameter in model.parameters():
            paddle.distributed.broadcast(parameter, src=0)


def evaluate_languages(model, features_by_language, batch_size, pad_token_id, use_amp, rank, world_size):
    return {
        lang: evaluate(model, features_by_language[lang], batch_size, pad_token_id, use_amp, rank, world_size)
        for lang in XNLI_LANGUAGES
    }


@paddle.no_grad()
def evaluate(model, features, batch_size, pad_token_id, use_amp, rank=0, world_size=1):
    """Loss and accuracy of one language's pairs, each pair's logits averaged over its windows.

    Each rank evaluates its own share of the pairs and the counts are summed, rather than every
    rank repeating the whole evaluation.
    """
    model.eval()
    window_logits = np.zeros((len(features), len(LABELS)), dtype=np.float32)
    for indices in eval_batches(features, batch_size, rank, world_size):
        input_ids, attention_mask = pad_batch([features.input_ids[i] for i in indices], pad_token_id)
        with paddle.amp.auto_cast(enable=use_amp):
            logits = model(paddle.to_tensor(input_ids), attention_mask=paddle.to_tensor(attention_mask))
        window_logits[indices] = logits.astype("float32").numpy()
    model.train()

    mine = np.arange(features.num_examples) % world_size == rank
    logits = average_window_logits(window_logits, features.example_ids, features.num_examples)[mine]
    labels = features.example_labels()[mine]
    losses = F.cross_entropy(paddle.to_tensor(logits), paddle.to_tensor(labels), reduction="none")
    totals = np.array([(logits.argmax(1) == labels).sum(), losses.numpy().sum(), len(labels)], dtype=np.float64)
    if world_size > 1:
        totals_tensor = paddle.to_tensor(totals)
        paddle.distributed.all_reduce(totals_tensor)
        totals = totals_tensor.numpy()
    num_correct, loss_sum, count = totals
    return {"accuracy": float(num_correct / count), "loss": float(loss_sum / count)}


def log_evaluation(split, step, results):
    accuracy = {lang: result["accuracy"] for lang, result in results.items()}
    logger.info(
        "%s accuracy at step %d: avg %.2f | %s", split, step, 100 * average_accuracy(accuracy),
        " ".join(f"{lang} {100 * accuracy[lang]:.1f}" for lang in XNLI_LANGUAGES),
    )


def report_results(args, state, dev_results, test_results, runtime_seconds):
    """Print the test table and write `results.json`."""
    model_name = os.path.basename(os.path.normpath(args.model_name_or_path))
    test_accuracy = {lang: result["accuracy"] for lang, result in test_results.items()}
    dev_accuracy = {lang: result["accuracy"] for lang, result in dev_results.items()}
    log_evaluation("test", state.global_step, test_results)
    print(f"XNLI test accuracy (%), {args.task_type}, selected on dev {args.select_on}:")
    print(format_results_table(model_name, test_accuracy), flush=True)

    os.makedirs(args.output_dir, exist_ok=True)
    write_json_atomically(os.path.join(args.output_dir, "results.json"), {
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


if __name__ == "__main__":
    try:
        main()
    except InputError as error:
        print(f"{os.path.basename(sys.argv[0])}: error: {error}", file=sys.stderr)
        sys.exit(2)
