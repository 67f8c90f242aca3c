"""A synthetic XNLI-format corpus and a tiny random ERNIE-M, made offline.

Used by the sanity run (`sanity_check.py`) and the tests. The corpus is generated here, not taken
from XNLI: its "languages" are made-up words, and the label is decided by one cue word in the
hypothesis, so a working setup learns it in seconds. Its numbers say nothing about ERNIE-M.
"""

import os
import random

from utils import XNLI_LANGUAGES

# The real dev/test files carry these columns; the reader must pick its columns by name.
EVAL_HEADER = (
    "language gold_label sentence1_binary_parse sentence2_binary_parse sentence1_parse sentence2_parse "
    "sentence1 sentence2 promptID pairID genre label1 label2 label3 label4 label5 "
    "sentence1_tokenized sentence2_tokenized match"
).split()
TRAIN_HEADER = ["premise", "hypo", "label"]

# The synthetic task: the hypothesis holds exactly one cue word, and the cue decides the label.
CUES = {"entailment": "yes", "neutral": "maybe", "contradiction": "no"}
PREMISE_WORDS = (4, 10)
SYLLABLES = "ka lo mi ne su ta ri po ve du ga li".split()


def language_words(lang):
    """Filler words that look different in every language, so transfer must come from the cues."""
    rng = random.Random(lang)
    return [lang[0] + "".join(rng.choice(SYLLABLES) for _ in range(2)) for _ in range(12)]


def synthetic_pair(rng, lang, label, premise_words=PREMISE_WORDS):
    words = language_words(lang)
    premise = " ".join(rng.choice(words) for _ in range(rng.randint(*premise_words)))
    hypothesis = [rng.choice(words) for _ in range(rng.randint(2, 5))]
    hypothesis.insert(rng.randint(0, len(hypothesis)), CUES[label])
    return premise + ".", " ".join(hypothesis) + "."


def write_tsv(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as file:
        for row in [header, *rows]:
            file.write("\t".join(row) + "\n")


def write_xnli_corpus(
    root, num_train=240, num_eval=24, seed=0, shuffle_train_labels=False, premise_words=PREMISE_WORDS
):
    """An XNLI-layout corpus of the synthetic task: 15 training files, dev and test for 15 languages.

    Labels are balanced; `shuffle_train_labels` breaks the cue-label link in training only;
    premises have between `premise_words` words (inclusive).
    """
    rng = random.Random(seed)
    labels = list(CUES)
    for lang in XNLI_LANGUAGES:
        rows = []
        for index in range(num_train):
            label = labels[index % 3]
            premise, hypothesis = synthetic_pair(rng, lang, label, premise_words)
            rows.append([premise, hypothesis, "contradictory" if label == "contradiction" else label])
        if shuffle_train_labels:
            shuffled = [row[2] for row in rows]
            rng.shuffle(shuffled)
            rows = [[premise, hypothesis, label] for (premise, hypothesis, _), label in zip(rows, shuffled)]
        write_tsv(os.path.join(root, "XNLI-MT-1.0", "multinli", f"multinli.train.{lang}.tsv"), TRAIN_HEADER, rows)
    for split in ("dev", "test"):
        rows = []
        for lang in XNLI_LANGUAGES:
            for index in range(num_eval):
                label = labels[index % 3]
                premise, hypothesis = synthetic_pair(rng, lang, label, premise_words)
                row = dict.fromkeys(EVAL_HEADER, "x")
                row.update(
                    language=lang,
                    gold_label=label,
                    sentence1=premise,
                    sentence2=hypothesis,
                    pairID=str(index),
                    match="True",
                )
                rows.append([row[column] for column in EVAL_HEADER])
        write_tsv(os.path.join(root, "XNLI-1.0", f"xnli.{split}.tsv"), EVAL_HEADER, rows)
    return str(root)


def build_tokenizer(directory, text_file, vocab_size=120):
    """An ErnieMTokenizer saved in `directory`, its sentencepiece model trained on `text_file`.
    The vocabulary is laid out like the real one ([CLS] [PAD] [SEP] [UNK], the pieces, [MASK]
    last), so [PAD] is id 1, as in the pretrained models. Returns the vocabulary size."""
    import sentencepiece as spm
    from paddlenlp.transformers import ErnieMTokenizer
    from paddlenlp.utils.log import logger as paddlenlp_logger

    paddlenlp_logger.set_level("WARNING")  # save_pretrained logs every file it writes
    os.makedirs(directory, exist_ok=True)
    model_prefix = os.path.join(directory, "spm")
    spm.SentencePieceTrainer.train(
        input=text_file,
        model_prefix=model_prefix,
        vocab_size=vocab_size,
        model_type="bpe",
        character_coverage=1.0,
        unk_id=0,
        bos_id=-1,
        eos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    processor = spm.SentencePieceProcessor(model_file=model_prefix + ".model")
    pieces = [processor.id_to_piece(index) for index in range(1, processor.get_piece_size())]
    vocab = ["[CLS]", "[PAD]", "[SEP]", "[UNK]", *pieces, "[MASK]"]
    vocab_file = os.path.join(directory, "vocab.source.txt")
    with open(vocab_file, "w", encoding="utf-8") as file:
        file.write("\n".join(vocab) + "\n")
    ErnieMTokenizer(vocab_file, model_prefix + ".model").save_pretrained(directory)
    for leftover in (vocab_file, model_prefix + ".model", model_prefix + ".vocab"):
        os.remove(leftover)
    return len(vocab)


def build_tiny_ernie_m(directory, text_file, vocab_size=120, max_position_embeddings=514, embedding_rows=None):
    """A 2-layer random ErnieM (hidden 32) with a tokenizer from `build_tokenizer`; the model has
    one embedding row per token unless `embedding_rows` says otherwise."""
    import paddle
    from paddlenlp.transformers import ErnieMConfig, ErnieMModel

    num_tokens = build_tokenizer(directory, text_file, vocab_size)
    config = ErnieMConfig(
        vocab_size=embedding_rows or num_tokens,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    paddle.seed(0)
    ErnieMModel(config).save_pretrained(directory)
    return directory


def corpus_text(xnli_dir, rows_per_language=60):
    """Premise and hypothesis lines from the training files, to train a tokenizer on."""
    lines = []
    for lang in XNLI_LANGUAGES:
        path = os.path.join(xnli_dir, "XNLI-MT-1.0", "multinli", f"multinli.train.{lang}.tsv")
        with open(path, encoding="utf-8") as file:
            rows = file.read().splitlines()[1 : rows_per_language + 1]
        lines.extend(" ".join(row.split("\t")[:2]) for row in rows)
    return "\n".join(lines)
