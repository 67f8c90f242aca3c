"""The XNLI release files: reading and checking them, and finding or downloading them.

The files are read in the original release layout:

    DIR/XNLI-1.0/xnli.{dev,test}.tsv
    DIR/XNLI-MT-1.0/multinli/multinli.train.<lang>.tsv

or PaddleNLP's download cache, where each release folder is nested twice
(`$PPNLP_HOME/datasets/XNLI/XNLI-1.0/XNLI-1.0/...`).
"""

import os
from typing import NamedTuple

from utils import LABELS, XNLI_LANGUAGES, InputError, error_reason

LABEL_IDS = {label: index for index, label in enumerate(LABELS)}
# The label of a pair to predict whose gold label is unknown.
NO_LABEL = -1
# XNLI-MT spells one label differently from XNLI.
LABEL_IDS["contradictory"] = LABEL_IDS["contradiction"]

# Columns are found by header name; the release files carry more columns than these.
PREMISE_COLUMNS = ("sentence1", "premise")
HYPOTHESIS_COLUMNS = ("sentence2", "hypo", "hypothesis")
LABEL_COLUMNS = ("gold_label", "label")


class XnliDataError(InputError):
    """A missing or malformed XNLI file; the message names the file (and line)."""


class Pair(NamedTuple):
    premise: str
    hypothesis: str
    label: int


# Pairs per language in XNLI-1.0's dev and test files.
XNLI_EVAL_PAIRS = {"dev": 2490, "test": 5010}
# The share of malformed rows (a wrong number of fields) a training file may have: the released
# XNLI-MT files have a few; more means a wrong file.
MAX_MALFORMED_FRACTION = 0.01


class XnliFile(NamedTuple):
    pairs_by_language: dict
    num_skipped: int  # rows skipped for an empty field, or (training files) a wrong number of fields
    malformed_lines: dict = {}  # {path: line numbers of the rows with a wrong number of fields}


def _find_column(header, names, path, required=True):
    for name in names:
        if name in header:
            return header.index(name)
    if required:
        raise XnliDataError(f"{path}:1: header has no {' or '.join(names)} column (found: {', '.join(header)})")
    return None


def _tsv_rows(path):
    """(line number, fields) of each line. Quotes are plain text (like `csv.QUOTE_NONE`: XNLI has
    unbalanced `"`); a UTF-8 BOM and CRLF line ends are accepted."""
    with open(path, "rb") as file:
        for line_number, raw_line in enumerate(file, start=1):
            try:
                line = raw_line.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise XnliDataError(
                    f"{path}:{line_number}: invalid UTF-8 ({error.reason} at byte {error.start})"
                ) from None
            yield line_number, (line.lstrip("\ufeff") if line_number == 1 else line).split("\t")


def read_xnli_tsv(path, labelled=True, skip_malformed=False):
    """Read one XNLI TSV into `Pair`s grouped by language ("language" column, else None).

    Columns are found by header name. Rows with an empty premise or hypothesis (or label, when
    `labelled`) are skipped and counted; so are rows with a wrong number of fields if
    `skip_malformed`, unless they are more than MAX_MALFORMED_FRACTION of the rows. Any other bad
    row is an error naming file and line. Without `labelled`, the label column may be missing or
    empty: the label is then NO_LABEL.
    """
    rows = _tsv_rows(path)
    _, header = next(rows, (1, [""]))
    if header == [""]:
        raise XnliDataError(f"{path}: the file is empty (expected a header line)")
    premise_column, hypothesis_column = (
        _find_column(header, names, path) for names in (PREMISE_COLUMNS, HYPOTHESIS_COLUMNS)
    )
    label_column = _find_column(header, LABEL_COLUMNS, path, required=labelled)
    language_column = _find_column(header, ("language",), path, required=False)
    pairs_by_language, num_skipped, malformed, num_rows = {}, 0, [], 0
    for line_number, fields in rows:
        num_rows += 1
        if fields == [""]:
            num_skipped += 1
            continue
        if len(fields) != len(header):
            message = f"{path}:{line_number}: expected {len(header)} tab-separated fields, found {len(fields)}"
            if not skip_malformed:
                raise XnliDataError(message)
            malformed.append((line_number, message))
            num_skipped += 1
            continue
        label = fields[label_column] if label_column is not None else ""
        if not (fields[premise_column] and fields[hypothesis_column] and (label or not labelled)):
            num_skipped += 1
            continue
        if label and label not in LABEL_IDS:
            raise XnliDataError(f"{path}:{line_number}: unknown label {label!r} (expected one of {', '.join(LABELS)})")
        language = fields[language_column] if language_column is not None else None
        pair = Pair(fields[premise_column], fields[hypothesis_column], LABEL_IDS[label] if label else NO_LABEL)
        pairs_by_language.setdefault(language, []).append(pair)
    if len(malformed) > MAX_MALFORMED_FRACTION * num_rows:
        raise XnliDataError(
            f"{malformed[0][1]}; {len(malformed)} of its {num_rows} rows have a wrong number of fields (more than "
            f"{MAX_MALFORMED_FRACTION:.0%}): not an XNLI file of this layout"
        )
    return XnliFile(pairs_by_language, num_skipped, {path: [line for line, _ in malformed]} if malformed else {})


def read_prediction_file(path):
    """(pairs, each pair's language or None, rows skipped) of a file to predict, in file order (an XNLI
    file's languages grouped): an XNLI file (columns by header name, labels optional), or
    `premise<TAB>hypothesis` rows without a header. A file without a pair is refused."""
    pairs, languages, num_skipped = _prediction_rows(path)
    if not pairs:
        skipped = f"each of its {num_skipped} row(s) has an empty field" if num_skipped else "it holds no row of pairs"
        raise XnliDataError(f"{path}: no pair to predict ({skipped}; expected premise<TAB>hypothesis rows)")
    return pairs, languages, num_skipped


def _prediction_rows(path):
    _, first_fields = next(_tsv_rows(path), (1, [""]))
    if any(name in first_fields for name in PREMISE_COLUMNS):
        xnli_file = read_xnli_tsv(path, labelled=False)
        by_language = xnli_file.pairs_by_language.items()
        pairs = [pair for _, pairs in by_language for pair in pairs]
        return pairs, [lang for lang, pairs in by_language for _ in pairs], xnli_file.num_skipped
    pairs, num_skipped = [], 0
    for line_number, fields in _tsv_rows(path):
        if len(fields) != 2 and fields != [""]:
            raise XnliDataError(f"{path}:{line_number}: expected premise<TAB>hypothesis, found {len(fields)} field(s)")
        if not all(fields) or fields == [""]:
            num_skipped += 1
            continue
        pairs.append(Pair(fields[0], fields[1], NO_LABEL))
    return pairs, [None] * len(pairs), num_skipped


def _release_folder(data_dir, release):
    nested = os.path.join(data_dir, release, release)
    return nested if os.path.isdir(nested) else os.path.join(data_dir, release)


def xnli_file_paths(data_dir, train_languages):
    """The dev, test and training files under `data_dir`; names every missing one."""
    eval_folder = _release_folder(data_dir, "XNLI-1.0")
    train_folder = os.path.join(_release_folder(data_dir, "XNLI-MT-1.0"), "multinli")
    paths = {split: os.path.join(eval_folder, f"xnli.{split}.tsv") for split in ("dev", "test")}
    paths["train"] = {lang: os.path.join(train_folder, f"multinli.train.{lang}.tsv") for lang in train_languages}
    missing = [path for path in [paths["dev"], paths["test"], *paths["train"].values()] if not os.path.isfile(path)]
    if missing:
        at_hand = [lang for lang, path in paths["train"].items() if path not in missing]
        hint = ""
        if at_hand and len(at_hand) < len(paths["train"]):
            hint = f" (to train on the languages at hand: --train_languages {' '.join(at_hand)})"
        raise XnliDataError(f"{data_dir}: missing XNLI file(s): {', '.join(missing)}{hint}")
    return paths


def download_xnli(with_train=True):
    """Download XNLI-1.0 (and XNLI-MT-1.0) through PaddleNLP; returns the folder they land in."""
    from paddlenlp.datasets import load_dataset
    from paddlenlp.utils.env import DATA_HOME

    # `lazy=True` fetches and checks the archives (rank by rank, as PaddleNLP coordinates it)
    # without reading them: our own reader does that, once.
    try:
        load_dataset("xnli", "en", splits=("train", "dev", "test") if with_train else ("dev", "test"), lazy=True)
    except (OSError, RuntimeError) as error:
        raise XnliDataError(
            f"XNLI could not be downloaded ({error_reason(error)}). Without network, pass --data_dir with "
            "XNLI-1.0/xnli.{dev,test}.tsv and XNLI-MT-1.0/multinli/multinli.train.<lang>.tsv (README: Data)"
        ) from None
    return os.path.join(DATA_HOME, "XNLI")


def read_eval_split(path):
    """Dev or test pairs for each of the 15 languages, read strictly: a malformed row is an error."""
    xnli_file = read_xnli_tsv(path)
    missing = [lang for lang in XNLI_LANGUAGES if lang not in xnli_file.pairs_by_language]
    if missing:
        raise XnliDataError(f"{path}: no rows for language(s) {', '.join(missing)}")
    return XnliFile({lang: xnli_file.pairs_by_language[lang] for lang in XNLI_LANGUAGES}, xnli_file.num_skipped)


def unexpected_pair_counts(split, xnli_file):
    """{language: pairs} of the languages whose count differs from XNLI-1.0's for `split`."""
    expected = XNLI_EVAL_PAIRS[split]
    return {lang: len(pairs) for lang, pairs in xnli_file.pairs_by_language.items() if len(pairs) != expected}


def read_train_split(paths_by_language):
    """Training pairs of each given language (one for cross-lingual transfer, 15 otherwise); the
    few malformed rows of the released XNLI-MT files are skipped and reported."""
    pairs_by_language, num_skipped, malformed_lines = {}, 0, {}
    for lang, path in paths_by_language.items():
        xnli_file = read_xnli_tsv(path, skip_malformed=True)
        pairs_by_language[lang] = [pair for pairs in xnli_file.pairs_by_language.values() for pair in pairs]
        num_skipped += xnli_file.num_skipped
        malformed_lines.update(xnli_file.malformed_lines)
    return XnliFile(pairs_by_language, num_skipped, malformed_lines)
