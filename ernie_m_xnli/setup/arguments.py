"""The command line of run_classifier.py: its arguments, their defaults and their checks.

Nothing here imports Paddle, so that `--help` and a mistyped argument answer at once.
"""

import argparse
import difflib
import os
import sys

from ernie_m_xnli.setup.recipes import RecipeError, apply_paper_recipe
from utils import (
    AMP_DTYPES,
    CPU_MATMUL_CHOICES,
    DEFAULT_COLLECTIVE_TIMEOUT,
    NUM_SPECIAL_TOKENS,
    XNLI_LANGUAGES,
    cpu_mixed_precision_refusal,
    launched_world_size,
    not_a_file,
    seed_number,
    str2bool,
)

# The name errors start with, however the script is started (python -m ..., main() in a test).
PROGRAM = "run_classifier.py"
TASK_TYPES = ("cross-lingual-transfer", "translate-train-all")
TRAIN_LANGUAGES = {"cross-lingual-transfer": ("en",), "translate-train-all": XNLI_LANGUAGES}
PRETRAINED_MODELS = ("ernie-m-base", "ernie-m-large")
# ErnieM adds 2 to position ids: the pretrained models' 514 position embeddings hold 512 tokens.
MAX_POSITIONS = 512


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the run-book's layout and shows every default once: none for a required argument,
    nor where the default is None (the help text says what then happens)."""

    def _get_help_string(self, action):
        if action.required or action.default is None:
            return action.help
        return super()._get_help_string(action)


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, `prog: error: message`, exit code 2, where argparse
    prints its whole usage first (--help still does); a mistyped flag is answered with the nearest ones."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}{self.nearest_flags(message)}\n")

    def nearest_flags(self, message):
        if not message.startswith("unrecognized arguments:"):
            return ""
        flags = [flag for action in self._actions for flag in action.option_strings]
        typed = [word.split("=")[0] for word in message.split(":", 1)[1].split() if word.startswith("--")]
        nearest = [match for word in typed for match in difflib.get_close_matches(word, flags, n=1)]
        return f" (did you mean {' or '.join(nearest)}?)" if nearest else ""


def build_parser(description=None):
    """run_classifier.py's parser; `description` heads --help."""
    # No abbreviated flags: the recipe must know exactly which arguments were given.
    parser = OneLineErrorParser(
        prog=PROGRAM, description=description, formatter_class=HelpFormatter, allow_abbrev=False
    )
    add_run_arguments(parser.add_argument_group("what to run"))
    add_data_arguments(parser.add_argument_group("data"))
    add_training_arguments(parser.add_argument_group("training (upstream's names and defaults)"))
    add_checkpoint_arguments(parser.add_argument_group("evaluation, checkpoints and resuming"))
    add_machine_arguments(parser.add_argument_group("device"))
    add_reporting_arguments(parser.add_argument_group("logs"))
    return parser


def parse_args(argv=None, description=None):
    """The checked arguments of `argv` (default: sys.argv); `description` heads --help."""
    parser = build_parser(description)
    args = parser.parse_args(argv)
    problem = find_invalid_model(args) or find_invalid_argument(args)
    if problem:
        parser.error(problem)
    explicit = {word[2:].split("=")[0] for word in (sys.argv[1:] if argv is None else argv) if word.startswith("--")}
    args.resolved_recipe = None
    if args.recipe == "paper":
        try:
            args.resolved_recipe = apply_paper_recipe(args, explicit, launched_world_size())
        except RecipeError as error:
            parser.error(str(error))
    if args.eval_steps is None:
        args.eval_steps = args.save_steps
    if args.train_languages is None:
        args.train_languages = list(TRAIN_LANGUAGES[args.task_type])
    if args.eval_backend is None:
        args.eval_backend = "inference" if args.device == "cpu" else "dynamic"
    problem = find_invalid_argument(args)
    if not problem and args.device == "cpu" and args.use_amp:
        problem = cpu_mixed_precision_refusal(args.amp_dtype)
    if problem:
        parser.error(problem)
    return args


def add_boolean(group, name, default, help):
    """A true/false argument that may also stand alone (`--use_amp` means `--use_amp true`)."""
    group.add_argument(name, type=str2bool, nargs="?", const=True, default=default, help=help)


def add_run_arguments(group):
    add = group.add_argument
    add("--task_type", required=True, choices=TASK_TYPES, help="The XNLI setting.")
    models = " or ".join(PRETRAINED_MODELS)
    add(
        "--model_name_or_path",
        required=True,
        help=f"{models} (or another name PaddleNLP resolves), a directory saved with save_pretrained, a Hugging Face "
        "directory (ERNIE-M, BERT, XLM-RoBERTa or DeBERTa-v2: config.json, model.safetensors, tokenizer files) or a "
        "Hugging Face hub id (downloaded into --cache_dir where there is network).",
    )
    add(
        "--tokenizer_name_or_path",
        help="Take the tokenizer from this directory or name instead of --model_name_or_path's.",
    )
    add("--output_dir", required=True, help="Where checkpoints and results.json are written.")
    add("--eval_only", action="store_true", help="Evaluate --model_name_or_path on dev and test; no training.")
    add(
        "--predict_file",
        help="Write predictions.tsv for this file's pairs (premise<TAB>hypothesis rows, or an XNLI file) with "
        "--model_name_or_path; no training or evaluation.",
    )
    add("--export_model_dir", help="Also save the (selected) model as a static graph for Paddle Inference here.")
    add(
        "--export_hf_dir",
        help="Also save the (selected) model in Hugging Face transformers' layout here (config.json, "
        "model.safetensors, tokenizer files).",
    )
    add(
        "--allow_untrained_classifier",
        action="store_true",
        help="Let --eval_only and --predict_file use a model whose classifier was never fine-tuned (chance level).",
    )


def add_data_arguments(group):
    add = group.add_argument
    add("--data_dir", help="Local XNLI in the release layout (XNLI-1.0/, XNLI-MT-1.0/). Default: download it.")
    cache_home = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
    add(
        "--cache_dir",
        default=os.path.join(cache_home, "ernie_m_xnli"),
        help="Where tokenized splits and converted Hugging Face weights are kept between runs; '' turns the cache off.",
    )
    add(
        "--preprocessing_num_workers",
        type=int,
        default=0,
        help="Processes that tokenize; 0: the CPU cores available (all of them on a machine whose other ranks "
        "wait for the cache).",
    )
    add(
        "--train_languages",
        nargs="+",
        choices=XNLI_LANGUAGES,
        metavar="LANG",
        help="With translate-train-all, train on these languages' XNLI-MT files only (e.g. the ones at hand). "
        "Default: en for cross-lingual-transfer, all 15 for translate-train-all.",
    )
    add(
        "--eval_pairs_per_language",
        type=int,
        default=0,
        help="Evaluate dev and test on the first this many pairs of each language (cheap experiments; said in the "
        "log, results.json and the table's title); 0: all of them.",
    )
    add("--max_seq_length", type=int, default=256, help="Maximum tokens per input, special tokens included.")
    add(
        "--memory_length",
        type=int,
        default=0,
        help="Premise tokens shared by consecutive windows of a pair longer than max_seq_length; 0 truncates.",
    )
    add("--batch_size", type=int, default=16, help="Training batch size per card.")
    add(
        "--gradient_accumulation_steps",
        type=int,
        default=1,
        help="Micro-batches of --batch_size per optimizer step: the update of one batch this many times larger.",
    )
    add("--eval_batch_size", type=int, default=64, help="Evaluation batch size per card.")
    add_boolean(
        group,
        "--group_by_length",
        default=False,
        help="Batch training inputs of similar length together, in random batch order (true/false): less padding, "
        "but other batches than upstream's.",
    )
    add_boolean(
        group,
        "--packing",
        default=True,
        help="Pack each training batch's inputs into as few rows as fit, each input masked from the others "
        "(true/false): the same batches and results as padded ones up to float rounding, without computing padding.",
    )


def add_training_arguments(group):
    add = group.add_argument
    add("--learning_rate", type=float, default=5e-5, help="Peak learning rate of the top layer.")
    add("--num_train_epochs", type=float, default=5, help="Training epochs.")
    add("--max_steps", type=int, default=-1, help="Training steps; > 0 overrides --num_train_epochs.")
    add("--warmup_proportion", type=float, default=0.1, help="Fraction of training steps of linear warmup.")
    add("--warmup_steps", type=int, default=0, help="Warmup steps; > 0 overrides --warmup_proportion.")
    add("--layerwise_decay", type=float, default=0.8, help="Learning-rate ratio between successive layers.")
    add("--weight_decay", type=float, default=0.0, help="AdamW weight decay (not on biases and norms).")
    add("--adam_epsilon", type=float, default=1e-8, help="AdamW epsilon.")
    add("--dropout", type=float, default=0.1, help="Dropout before the classifier.")
    add("--max_grad_norm", type=float, default=0.0, help="Clip gradients to this global norm; 0: no clipping.")
    add("--seed", type=seed_number, default=42, help="Random seed.")
    add(
        "--recipe",
        choices=("paper",),
        help="Fill every training setting not given from the ERNIE-M authors' fine-tuning scripts for this model "
        "size and task type (README: Recipes); the global batch is reached with the processes and accumulation.",
    )


def add_checkpoint_arguments(group):
    add = group.add_argument
    add("--save_steps", type=int, default=10000, help="Save a resumable checkpoint every this many steps.")
    add(
        "--eval_steps",
        type=int,
        help="Evaluate dev every this many steps, keeping the weights that score best. Default: --save_steps.",
    )
    add(
        "--select_on",
        choices=("avg", "en"),
        default="avg",
        help="The reported model: the best on average dev accuracy, or on English dev only (strict zero-shot); "
        "results.json holds the test accuracy of both.",
    )
    add("--save_total_limit", type=int, help="Keep only the newest this many checkpoints. Default: all.")
    add(
        "--resume_from_checkpoint",
        help="Continue a run exactly from a checkpoint directory, or 'latest' in --output_dir.",
    )
    add("--overwrite_output_dir", action="store_true", help="Replace a run already in --output_dir.")


def add_machine_arguments(group):
    add = group.add_argument
    add("--device", choices=("gpu", "xpu", "cpu"), default="gpu", help="Device to train on.")
    add(
        "--eval_backend",
        choices=("dynamic", "inference"),
        default=None,
        help="Evaluate and predict with the dynamic graph, or through Paddle Inference on the CPU (oneDNN; the "
        "current weights exported as a static graph at each evaluation; several times faster there). "
        "Default: inference with --device cpu, dynamic otherwise.",
    )
    add_boolean(group, "--use_amp", default=False, help="Mixed precision (true/false).")
    add(
        "--amp_dtype",
        choices=AMP_DTYPES,
        default=None,
        help="The 16-bit type of --use_amp: float16 (with loss scaling; the default on a GPU) or bfloat16 (on a "
        "GPU that has it, and on a CPU with AVX512-BF16 or AMX: the encoder's products through oneDNN).",
    )
    add("--scale_loss", type=float, default=2**15, help="Initial loss scaling of mixed precision.")
    add(
        "--cpu_threads",
        type=int,
        default=0,
        help="Threads of each process's CPU kernels with --device cpu; 0: the available cores, shared by the "
        "processes on this machine.",
    )
    add(
        "--cpu_matmul",
        choices=CPU_MATMUL_CHOICES,
        default="auto",
        help="The library of float32 matrix products with --device cpu: Paddle's MKL, the oneDNN inside the Paddle "
        "wheel (AVX-512 where MKL's fastest path on an AMD CPU is AVX2), or auto: the faster of the two on the "
        "encoder's shapes, measured once per CPU model and thread count and kept in --cache_dir.",
    )
    add(
        "--collective_timeout",
        type=float,
        default=DEFAULT_COLLECTIVE_TIMEOUT,
        help="Seconds a process of a multi-process run waits for the others at a collective (an evaluation's sum, "
        "a checkpoint, a step's end) before every process stops in one line naming the slow one.",
    )
    add_boolean(
        group,
        "--flush_denormals",
        default=True,
        help="With --device cpu, compute float32 values below 1.2e-38 as zero (true/false): padded batches make "
        "such denormal numbers, on which CPUs run training steps several times slower.",
    )
    add_boolean(
        group,
        "--mkl_fast_path_on_amd",
        default=True,
        help="On an AMD CPU, set MKL_DEBUG_CPU_TYPE=5 (unless it is set) so that Paddle's MKL takes its AVX2 path "
        "(true/false): its default path there multiplies matrices at less than half the speed.",
    )


def add_reporting_arguments(group):
    add = group.add_argument
    add("--logging_steps", type=int, default=100, help="Log every this many steps.")
    add("--disable_tqdm", action="store_true", help="No progress bars (they only show on a terminal anyway).")
    add_boolean(
        group,
        "--visualdl",
        default=None,
        help="Write VisualDL logs to output_dir/visualdl (true/false). Default: when VisualDL is installed.",
    )
    add("--debug", action="store_true", help="Show the Python traceback of input errors.")


def find_invalid_argument(args):
    """A one-line description of the first invalid argument, or None."""
    predict_file_problem = args.predict_file and not_a_file(args.predict_file)
    checks = [
        (args.batch_size >= 1, f"--batch_size must be at least 1, got {args.batch_size}"),
        (
            args.gradient_accumulation_steps >= 1,
            f"--gradient_accumulation_steps must be at least 1, got {args.gradient_accumulation_steps}",
        ),
        (args.max_grad_norm >= 0, f"--max_grad_norm must be non-negative, got {args.max_grad_norm}"),
        (args.eval_batch_size >= 1, f"--eval_batch_size must be at least 1, got {args.eval_batch_size}"),
        (args.learning_rate > 0, f"--learning_rate must be positive, got {args.learning_rate}"),
        (0 < args.layerwise_decay <= 1, f"--layerwise_decay must be in (0, 1], got {args.layerwise_decay}"),
        (0 <= args.dropout < 1, f"--dropout must be in [0, 1), got {args.dropout}"),
        (args.weight_decay >= 0, f"--weight_decay must be non-negative, got {args.weight_decay}"),
        (args.adam_epsilon > 0, f"--adam_epsilon must be positive, got {args.adam_epsilon}"),
        (0 <= args.warmup_proportion <= 1, f"--warmup_proportion must be in [0, 1], got {args.warmup_proportion}"),
        (args.warmup_steps >= 0, f"--warmup_steps must be non-negative, got {args.warmup_steps}"),
        (
            args.max_steps > 0 or args.num_train_epochs > 0,
            f"--num_train_epochs must be positive (or set --max_steps), got {args.num_train_epochs}",
        ),
        (args.logging_steps >= 1, f"--logging_steps must be at least 1, got {args.logging_steps}"),
        (args.save_steps >= 1, f"--save_steps must be at least 1, got {args.save_steps}"),
        (args.eval_steps is None or args.eval_steps >= 1, f"--eval_steps must be at least 1, got {args.eval_steps}"),
        (
            NUM_SPECIAL_TOKENS + 2 <= args.max_seq_length <= MAX_POSITIONS,
            f"--max_seq_length must be between {NUM_SPECIAL_TOKENS + 2} and {MAX_POSITIONS} "
            f"(ERNIE-M's position embeddings), got {args.max_seq_length}",
        ),
        (
            0 <= args.memory_length < args.max_seq_length - NUM_SPECIAL_TOKENS,
            f"--memory_length must be at least 0 and below max_seq_length - {NUM_SPECIAL_TOKENS} "
            f"(the premise tokens one window holds), got {args.memory_length}",
        ),
        (
            args.preprocessing_num_workers >= 0,
            f"--preprocessing_num_workers must be non-negative, got {args.preprocessing_num_workers}",
        ),
        (
            args.eval_pairs_per_language >= 0,
            f"--eval_pairs_per_language must be non-negative (0: all pairs), got {args.eval_pairs_per_language}",
        ),
        (
            args.train_languages is None
            or args.task_type == "translate-train-all"
            or list(args.train_languages) == ["en"],
            "--train_languages goes with --task_type translate-train-all (cross-lingual-transfer trains on en)",
        ),
        (args.cpu_threads >= 0, f"--cpu_threads must be non-negative, got {args.cpu_threads}"),
        (args.collective_timeout > 0, f"--collective_timeout must be positive, got {args.collective_timeout}"),
        (
            args.eval_backend != "inference" or args.device == "cpu",
            f"--eval_backend inference runs on the CPU only (oneDNN), so it goes with --device cpu, not "
            f"--device {args.device}: use --eval_backend dynamic",
        ),
        (args.scale_loss > 0, f"--scale_loss must be positive, got {args.scale_loss}"),
        (
            args.amp_dtype is None or args.use_amp,
            f"--amp_dtype {args.amp_dtype} is the type of --use_amp: add --use_amp (or leave --amp_dtype out)",
        ),
        (
            args.save_total_limit is None or args.save_total_limit >= 1,
            f"--save_total_limit must be at least 1, got {args.save_total_limit}",
        ),
        (
            not ((args.eval_only or args.predict_file) and args.resume_from_checkpoint),
            "--resume_from_checkpoint goes with training, not --eval_only or --predict_file",
        ),
        (not predict_file_problem, f"--predict_file {args.predict_file}: {predict_file_problem}"),
        (args.data_dir is None or os.path.isdir(args.data_dir), f"--data_dir {args.data_dir}: no such directory"),
        *(
            (not os.path.isfile(path), f"--{name} {path} is a file, expected a directory")
            for name in ("output_dir", "tokenizer_name_or_path", "cache_dir")
            if (path := getattr(args, name))
        ),
        *(
            (not problem, f"--{name} {path} {problem}")
            for name in ("export_model_dir", "export_hf_dir")
            if (path := getattr(args, name)) and (problem := unwritable_directory(path))
        ),
    ]
    return next((message for valid, message in checks if not valid), None)


def unwritable_directory(path):
    """Why `path` cannot be a directory to write into (checked before a run that writes there at its end),
    or None: it is a file, or the nearest folder above it that exists cannot take it."""
    if os.path.isfile(path):
        return "is a file, expected a directory"
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"cannot be created: {existing} is a file"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot be written: {existing} is not writable"
    return None


def looks_like_a_path(name):
    """Whether a name can only be a path: a hub id is `name` or `org/name`."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


def find_invalid_model(args):
    """A name (PaddleNLP's, or a hub id) is resolved when the model loads; a directory must hold a config."""
    path = args.model_name_or_path
    if not os.path.isdir(path) and looks_like_a_path(path):
        return (
            f"--model_name_or_path {path}: no such directory (a name is PaddleNLP's, e.g. ernie-m-base, or a "
            "Hugging Face hub id, e.g. FacebookAI/xlm-roberta-base)"
        )
    if not os.path.isdir(path):
        if args.eval_only or args.predict_file:
            mode = "--eval_only" if args.eval_only else "--predict_file"
            return f"{mode} needs a fine-tuned checkpoint directory, not the pretrained model name {path}"
        return None
    if not os.path.isfile(os.path.join(path, "config.json")):
        return f"--model_name_or_path {path}: no config.json (expected a directory saved with save_pretrained)"
    return None


def arguments_markdown():
    """docs/arguments.md: every argument of run_classifier.py by group, its default and its help, as
    --help gives them (tests/test_docs.py fails when the file is stale)."""
    parser = build_parser()
    lines = [
        "# Arguments of run_classifier.py",
        "",
        "Generated from the parser by `python -m ernie_m_xnli.setup.arguments > docs/arguments.md`; "
        "`python run_classifier.py --help` says the same.",
    ]
    for group in parser._action_groups:
        actions = [action for action in group._group_actions if action.option_strings and action.dest != "help"]
        if not actions:
            continue
        lines += [
            "",
            f"## {group.title[0].upper()}{group.title[1:]}",
            "",
            "| argument | default | meaning |",
            "| --- | --- | --- |",
        ]
        for action in actions:
            default = documented_default(action)
            if action.choices:
                default += f" (one of {', '.join(f'`{choice}`' for choice in action.choices)})"
            meaning = " ".join(action.help.split()).replace("|", "\\|")
            lines.append(f"| `{action.option_strings[0]}` | {default} | {meaning} |")
    return "\n".join(lines) + "\n"


def documented_default(action):
    """An argument's default as docs/arguments.md shows it, the same on every machine."""
    if action.dest == "cache_dir":
        return "`~/.cache/ernie_m_xnli` (`$XDG_CACHE_HOME/ernie_m_xnli` where that is set)"
    if action.required:
        return "required"
    if action.default is None:
        return "none"
    if isinstance(action.default, bool):
        return "off" if action.nargs == 0 else f"`{str(action.default).lower()}`"
    return f"`{action.default}`"


if __name__ == "__main__":
    print(arguments_markdown(), end="")
