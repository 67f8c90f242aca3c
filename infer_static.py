"""Predict XNLI labels with a model exported by `run_classifier.py --export_model_dir`, through
Paddle Inference (no training code, no dynamic graph):

    python infer_static.py --model_dir output/inference --predict_file pairs.tsv
    python infer_static.py --model_dir output/inference --predict_file pairs.tsv --use_amp --amp_dtype bfloat16

`pairs.tsv` is read as `--predict_file` is (premise<TAB>hypothesis rows, or a file with XNLI's column
names); one `premise<TAB>hypothesis<TAB>label` row per pair goes to stdout (or `--output_file`).

The exported graph takes int64 inputs of shape [batch, length]: `input_ids` (for ERNIE-M `[CLS]
premise [SEP] [SEP] hypothesis [SEP]`, as the tokenizer saved beside the graph builds them),
`attention_mask` (1 for a token, 0 for padding: ERNIE-M's `[PAD]` is id 1, so the mask must be
given), `position_ids` 0..length-1 (the model adds its own offset) and, for a family with token
types (BERT), `token_type_ids` (0 up to the first separator, 1 after). Its one output is the logits,
[batch, 3], in the order of LABELS. With `--use_amp --amp_dtype bfloat16` (a CPU with AVX512-BF16),
Paddle Inference computes the operators oneDNN has in bfloat16 (the matrix products among them).
"""

import argparse
import os
import sys

from ernie_m_xnli.data.batching import padded_inputs
from ernie_m_xnli.data.encoding import encode_pairs
from ernie_m_xnli.data.xnli_files import read_prediction_file
from ernie_m_xnli.models.inference import create_predictor, predictor_logits
from ernie_m_xnli.models.precision import run_precision
from ernie_m_xnli.models.tokenizer_files import load_tokenizer
from ernie_m_xnli.setup.arguments import OneLineErrorParser
from utils import AMP_DTYPES, LABELS, InputError, available_cpu_cores, not_a_file, str2bool, written_then_renamed


def parse_args(argv=None):
    parser = OneLineErrorParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="The --export_model_dir of run_classifier.py.")
    parser.add_argument("--predict_file", required=True, help="The pairs to label.")
    parser.add_argument("--output_file", help="Where the labelled rows go. Default: stdout.")
    parser.add_argument("--max_seq_length", type=int, default=256, help="Tokens per input, as in training.")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument(
        "--use_amp", type=str2bool, nargs="?", const=True, default=False, help="Mixed precision (true/false)."
    )
    parser.add_argument("--amp_dtype", choices=AMP_DTYPES, help="On a CPU: bfloat16, where the CPU has AVX512-BF16.")
    return parser.parse_args(argv)


def exported_graph(model_dir):
    """The path prefix of the static graph `run_classifier.py --export_model_dir` saved in `model_dir`."""
    path_prefix = os.path.join(model_dir, "inference")
    missing = [path for path in (path_prefix + ".json", path_prefix + ".pdiparams") if not os.path.isfile(path)]
    if missing:
        names = " and ".join(os.path.basename(path) for path in missing)
        raise InputError(
            f"--model_dir {model_dir}: no exported graph ({names} missing); "
            "give the folder run_classifier.py --export_model_dir wrote"
        )
    return path_prefix


def main(argv=None):
    args = parse_args(argv)
    try:
        graph = exported_graph(args.model_dir)
        if problem := not_a_file(args.predict_file):
            raise InputError(f"--predict_file {args.predict_file}: {problem}")
        if args.output_file and os.path.isdir(args.output_file):
            raise InputError(f"--output_file {args.output_file}: a directory, not a file")
        precision = run_precision("cpu", args.use_amp, args.amp_dtype)
        predictor = create_predictor(graph, available_cpu_cores(), precision.cpu_bfloat16)
        tokenizer = load_tokenizer(args.model_dir, "--model_dir")
        pairs, _, _ = read_prediction_file(args.predict_file)
        write_rows(args.output_file, labelled_rows(predictor, tokenizer, pairs, args.max_seq_length, args.batch_size))
    except InputError as error:  # README's exit code of bad input
        print(f"infer_static.py: error: {error}", file=sys.stderr)
        sys.exit(2)


def labelled_rows(predictor, tokenizer, pairs, max_seq_length, batch_size):
    """premise<TAB>hypothesis<TAB>label lines, a batch of pairs labelled at a time."""
    features = encode_pairs(tokenizer, pairs, max_seq_length, memory_length=0)
    for start in range(0, len(pairs), batch_size):
        batch = features.input_ids[start : start + batch_size]
        logits = predictor_logits(predictor, padded_inputs(batch, tokenizer.pad_token_id, tokenizer.sep_token_id))
        for pair, row in zip(pairs[start : start + batch_size], logits):
            yield f"{pair.premise}\t{pair.hypothesis}\t{LABELS[int(row.argmax())]}\n"


def write_rows(output_file, rows):
    """The rows to stdout as they come, or whole to `output_file` (a reader never sees half of it)."""
    if not output_file:
        sys.stdout.writelines(rows)
        return
    try:
        with written_then_renamed(output_file) as temporary, open(temporary, "w", encoding="utf-8") as file:
            file.writelines(rows)
    except OSError as error:
        raise InputError(f"--output_file {output_file}: cannot write it ({error.strerror or error})") from None


if __name__ == "__main__":
    main()
