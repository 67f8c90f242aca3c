"""A model's tokenizer, from a name PaddleNLP resolves or from a directory in any layout transformers
or PaddleNLP writes: the family's slow files (vocab.txt, sentencepiece models), a `tokenizers`
tokenizer.json alone, or both; `tokenizer_class` naming a slow class, its `...Fast` twin or
`PreTrainedTokenizerFast`; special tokens written as strings or as objects.

Where the slow files are there, PaddleNLP's slow class of the family reads them (its ids equal
transformers' for BERT, XLM-R and DeBERTa-v2, tested; ERNIE-M's is the original); otherwise the
`tokenizers` library reads tokenizer.json, as transformers does.
"""

import contextlib
import os

from paddlenlp import transformers
from paddlenlp.transformers import AutoTokenizer
from paddlenlp.transformers.tokenizer_utils_fast import PretrainedTokenizerFast

from ernie_m_xnli.models.families import family_of
from ernie_m_xnli.models.loading import download_error
from utils import InputError, error_reason, read_json, write_json_atomically

FAST_TOKENIZER_FILE = "tokenizer.json"
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class JsonTokenizer(PretrainedTokenizerFast):
    """A `tokenizers` tokenizer.json as a PaddleNLP tokenizer. PaddleNLP has no fast class for BERT,
    XLM-R or DeBERTa-v2, and its generic one adds no special tokens to ids it is given: the pair
    layout (`[CLS] A [SEP] B [SEP]`, `<s> A </s></s> B </s>`, ...) is read from the file's own
    post-processor, on a pair it encodes once."""

    def __init__(self, *args, hub_tokenizer_class="PreTrainedTokenizerFast", **kwargs):
        super().__init__(*args, **kwargs)
        self.hub_tokenizer_class = hub_tokenizer_class  # what tokenizer_config.json named: kept when saved
        self.tokenizer_file = kwargs.get("tokenizer_file")
        self.single_layout = self._special_tokens_around("a")
        self.pair_layout = self._special_tokens_around("a", "b")

    def _special_tokens_around(self, *texts):
        """[before the first text, after it, (after the second)]: the special token ids the post-processor adds."""
        encoding = self._tokenizer.encode(*texts, add_special_tokens=True)
        parts, current = [[]], None
        # (a tokenizer.json may pad to a fixed length, as all-MiniLM-L6-v2's does: padding is no part of the layout)
        for token_id, sequence, real in zip(encoding.ids, encoding.sequence_ids, encoding.attention_mask):
            if not real:
                continue
            if sequence is None:
                parts[-1].append(token_id)
            elif sequence != current:
                current = sequence
                parts.append([])
        return parts

    def save_pretrained(self, save_directory, *args, **kwargs):
        """PaddleNLP's files, with the class the source named, which transformers and this loader know."""
        saved = super().save_pretrained(save_directory, *args, **kwargs)
        path = os.path.join(save_directory, "tokenizer_config.json")
        write_json_atomically(path, {**read_json(path), "tokenizer_class": self.hub_tokenizer_class})
        return saved

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        if token_ids_1 is None:
            before, after = self.single_layout
            return before + list(token_ids_0) + after
        before, between, after = self.pair_layout
        return before + list(token_ids_0) + between + list(token_ids_1) + after


def load_tokenizer(name_or_dir, argument="--model_name_or_path"):
    """The tokenizer of a name PaddleNLP resolves or of a model directory; `argument` names where it came from."""
    if not os.path.isdir(name_or_dir):
        try:
            return AutoTokenizer.from_pretrained(name_or_dir)
        except OSError as error:
            raise download_error(name_or_dir, error) from None
    settings = read_json(os.path.join(name_or_dir, "tokenizer_config.json")) or {}
    special_tokens = special_token_strings(
        {**(read_json(os.path.join(name_or_dir, "special_tokens_map.json")) or {}), **settings}
    )
    class_name = tokenizer_class_name(name_or_dir, settings, argument)
    slow_class = slow_tokenizer_class(class_name)
    slow_files = slow_class and [os.path.join(name_or_dir, f) for f in slow_class.resource_files_names.values()]
    if slow_files and all(os.path.isfile(path) for path in slow_files):
        with reading_tokenizer_files(argument, slow_files):
            return slow_class.from_pretrained(name_or_dir, **special_tokens)
    fast_file = os.path.join(name_or_dir, FAST_TOKENIZER_FILE)
    if os.path.isfile(fast_file):
        hub_class = class_name or "PreTrainedTokenizerFast"
        with reading_tokenizer_files(argument, [fast_file]):
            return JsonTokenizer(tokenizer_file=fast_file, hub_tokenizer_class=hub_class, **special_tokens)
    expected = " and ".join(os.path.basename(path) for path in slow_files or [])
    elsewhere = ", or pass --tokenizer_name_or_path" if argument == "--model_name_or_path" else ""
    raise InputError(
        f"{argument} {name_or_dir}: no tokenizer files (expected {FAST_TOKENIZER_FILE}"
        + (f", or {expected}" if expected else "")
        + f"); save the tokenizer there with save_pretrained{elsewhere}"
    )


@contextlib.contextmanager
def reading_tokenizer_files(argument, paths):
    """One line naming the files where they cannot be read: PaddleNLP, sentencepiece and tokenizers
    answer a file cut short, empty or not UTF-8 with anything from an AssertionError to a TypeError."""
    try:
        yield
    except Exception as error:
        files = ", ".join(paths)
        raise InputError(
            f"{argument}: cannot read the tokenizer in {files} ({type(error).__name__}: {error_reason(error)}): "
            "is a file cut short, empty or not UTF-8? Save the tokenizer there again with save_pretrained"
        ) from error


def tokenizer_class_name(directory, settings, argument):
    """The tokenizer class a directory names: tokenizer_config.json's, config.json's, or its family's; None
    where it names none and has no config.json."""
    config = read_json(os.path.join(directory, "config.json"))
    class_name = settings.get("tokenizer_class") or (config or {}).get("tokenizer_class")
    if class_name is None and config is not None:
        class_name = family_of(config.get("model_type"), f"{argument} {directory}").tokenizer_class
    return class_name


def slow_tokenizer_class(class_name):
    """PaddleNLP's slow tokenizer class of a tokenizer class name (a `...Fast` name read as its slow
    twin); None for `PreTrainedTokenizerFast` and names PaddleNLP does not know."""
    if class_name is None or class_name in ("PreTrainedTokenizerFast", "PretrainedTokenizerFast"):
        return None
    return getattr(transformers, class_name.removesuffix("Fast"), None)


def special_token_strings(settings):
    """The special tokens of a tokenizer_config.json as strings: transformers writes them as strings,
    or (older versions) as objects {"content": ..., "__type": "AddedToken"}, which PaddleNLP refuses."""
    tokens = {}
    for name in SPECIAL_TOKENS:
        value = settings.get(name)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            tokens[name] = value
    return tokens


def num_token_ids(tokenizer):
    """How many embedding rows the tokenizer's ids need. Not len(tokenizer): PaddleNLP counts the
    special tokens that a tokenizer_config.json of transformers' lists twice."""
    return max(tokenizer.get_vocab().values()) + 1


def pair_has_token_types(tokenizer):
    """Whether the tokenizer gives a pair's second text another token type (BERT's do, XLM-R's give none)."""
    encoded = tokenizer("a", "b")
    return any(encoded.get("token_type_ids") or ())
