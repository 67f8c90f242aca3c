"""The fine-tuning settings that transformers' peer (hf_finetune_peer.py) and the fidelity check
(fidelity.py) both take, with the same names, meanings and defaults as run_classifier.py's README
runs. No Paddle and no torch: each side imports it."""

import math
import os

from ernie_m_xnli.data.xnli_files import XnliDataError, xnli_file_paths
from utils import seed_number


def add_fine_tuning_settings(parser, eval_pairs_per_language):
    """Add the shared flags to `parser`; `eval_pairs_per_language` is its default (0: all pairs)."""
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=5e-5)
    parser.add_argument("--warmup_proportion", type=float, default=0.1)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument(
        "--eval_pairs_per_language",
        type=int,
        default=eval_pairs_per_language,
        help="Evaluate dev and test on the first this many pairs of each language; 0: all of them.",
    )
    parser.add_argument("--seed", type=seed_number, default=42, help="The classifier's start and the batch order.")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each process.")


def warmup_steps(warmup_proportion, num_training_steps):
    """The suite's warmup for a proportion: PaddleNLP's LinearDecayWithWarmup rounds down, transformers'
    Trainer up. 469 steps x 0.1 is 46 steps in one and 47 in the other: a 2% larger learning rate in
    every warmup step, and the two harnesses' losses part from the third step on."""
    return int(math.floor(warmup_proportion * num_training_steps))


def refuse_unusable_paths(parser, args, train_languages):
    """A one-line error for an --model_dir without config.json, an --xnli_dir without the files read or an
    --output_dir that is a file."""
    if os.path.isfile(args.output_dir):
        parser.error(f"--output_dir {args.output_dir}: a file, not a directory")
    if not os.path.isfile(os.path.join(args.model_dir, "config.json")):
        parser.error(f"--model_dir {args.model_dir}: no config.json (expected a Hugging Face checkpoint directory)")
    try:
        xnli_file_paths(args.xnli_dir, train_languages)
    except XnliDataError as error:
        parser.error(f"--xnli_dir {error}")
