"""Fixtures: a tiny random ERNIE-M with its own sentencepiece tokenizer, and tiny synthetic XNLI
corpora in the original release layout (see ernie_m_xnli/data/synthetic.py), built offline in a temporary folder."""

import atexit
import contextlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
from collections import Counter
from typing import NamedTuple

import numpy as np
import pytest

warnings.filterwarnings("ignore", message="No ccache found")
warnings.filterwarnings("ignore", message="Setuptools is replacing distutils")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from ernie_m_xnli.data.synthetic import build_tiny_ernie_m, corpus_text, write_xnli_corpus  # noqa: E402
from utils import use_mkl_fast_path_on_amd  # noqa: E402

XNLI_DIR = os.environ.get("XNLI_DIR")
# In-process runs (run_main) set these in this process (MKL's path on an AMD CPU, the CPU threads); the
# scripts the tests start get them as the user's shell had them.
SET_BY_RUNS = ("MKL_DEBUG_CPU_TYPE", "OMP_NUM_THREADS")
USER_VALUES = {name: os.environ.get(name) for name in SET_BY_RUNS}
MKL_VARIABLE_OF_USER = USER_VALUES["MKL_DEBUG_CPU_TYPE"]
# The tests' own process computes on the MKL path every run takes (MKL picks it at its first call, which
# may come before any in-process run's set_up): in-process and script runs then round alike.
use_mkl_fast_path_on_amd(True)
# The scripts' tokenized-feature cache goes to a fresh folder, not the user's ~/.cache, gone with the tests.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="ernie-m-xnli-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)


# A Python with torch and transformers, for the checks against them (never needed by the suite itself).
TRANSFORMERS_PYTHON = os.environ.get("TRANSFORMERS_PYTHON", sys.executable)


def has_peer_packages(python):
    check = "import importlib.util as u; raise SystemExit(not all(map(u.find_spec, ('torch', 'transformers'))))"
    return subprocess.run([python, "-c", check], capture_output=True).returncode == 0


# Tiny random checkpoints in Hugging Face's layout, one per family (tests/fixtures/make_hf_fixtures.py).
FAMILY_FIXTURES = ("ernie_m", "bert", "xlm-roberta", "deberta-v2")
# A family fixture's model with its tokenizer saved by transformers in another layout.
TOKENIZER_LAYOUT_FIXTURES = (
    "xlm-roberta-tokenizer-json-only",  # a `tokenizers` Unigram via XLMRobertaTokenizerFast, no sentencepiece model
    "deberta-v2-fast",  # DebertaV2TokenizerFast: spm.model and tokenizer.json
    "bert-pretrained-tokenizer-fast",  # a `tokenizers` WordPiece as PreTrainedTokenizerFast: tokenizer.json only
    "xlm-roberta-special-tokens-as-objects",  # tokenizer_config.json as older transformers wrote it
)


def fixture_dir(model_type):
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "hf", model_type)


@pytest.fixture(scope="session")
def xnli_dir(tmp_path_factory):
    return write_xnli_corpus(tmp_path_factory.mktemp("xnli"))


@pytest.fixture(scope="session")
def varied_xnli_dir(tmp_path_factory):
    """Premises of 1 to 30 words: batches whose inputs differ in length as real XNLI's do (packing merges them)."""
    return write_xnli_corpus(tmp_path_factory.mktemp("varied-xnli"), premise_words=(1, 30))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, xnli_dir):
    text_file = tmp_path_factory.mktemp("text") / "corpus.txt"
    text_file.write_text(corpus_text(xnli_dir), encoding="utf-8")
    return build_tiny_ernie_m(str(tmp_path_factory.mktemp("tiny-ernie-m")), str(text_file))


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from paddlenlp.transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def flags(**options):
    """Command-line arguments from keywords, in order: flags(max_steps=40, eval_only=True, data_dir=None)
    is ["--max_steps", "40", "--eval_only"] (True stands for a bare flag, None for no flag)."""
    arguments = []
    for name, value in options.items():
        if value is not None:
            arguments += [f"--{name}"] if value is True else [f"--{name}", str(value)]
    return arguments


def script_command(*args, script="run_classifier.py", launcher=(), **options):
    """The command that runs a repo script with `args` and then `options` as flags."""
    return [sys.executable, *launcher, os.path.join(REPO_ROOT, script), *map(str, args), *flags(**options)]


def run_script(*args, script="run_classifier.py", launcher=(), timeout=300, env=None, **options):
    """Run a repo script as a user would, with `env` added to the environment; returns the
    CompletedProcess (stdout, stderr as text)."""
    command = script_command(*args, script=script, launcher=launcher, **options)
    environment = {**user_environment(), **(env or {})}
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env=environment)


def user_environment():
    environment = {name: value for name, value in os.environ.items() if name not in SET_BY_RUNS}
    return {**environment, **{name: value for name, value in USER_VALUES.items() if value is not None}}


def cpu_run(model_dir, data_dir, output_dir, task_type="cross-lingual-transfer", **options):
    """The keyword arguments of run_script for a run of run_classifier.py on the CPU. Its float32
    products are MKL's unless `options` say otherwise: runs compared bit for bit compute alike
    whatever --cpu_matmul auto would measure on a busy machine."""
    return dict(
        task_type=task_type,
        model_name_or_path=model_dir,
        data_dir=data_dir,
        output_dir=output_dir,
        device="cpu",
        **{"cpu_matmul": "mkl", **options},
    )


def read_results(output_dir):
    with open(os.path.join(output_dir, "results.json"), encoding="utf-8") as file:
        return json.load(file)


class CompletedRun(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def run_main(*args, **options):
    """run_classifier.main in this process (no seconds of imports), for short runs whose outcome
    is what matters; returns a CompletedRun, like run_script's. The log handler is made inside
    main, so it writes to the captured stderr."""
    from run_classifier import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            main([*map(str, args), *flags(**options)])
            code = 0
        except SystemExit as exit_info:
            code = exit_info.code
    return CompletedRun(code, stdout.getvalue(), stderr.getvalue())


def cpu_device_line(threads):
    """The log line about the CPU that a script started by run_script writes with the default flags."""
    from utils import use_mkl_fast_path_on_amd

    mkl_path = use_mkl_fast_path_on_amd(True, environ=user_environment())
    return f"device cpu: {threads} thread(s) per process, denormal numbers flushed to zero" + (
        f", {mkl_path}\n" if mkl_path else "\n"
    )


def last_line(text):
    return text.strip().splitlines()[-1]


def png_size(path):
    """(width, height) of a PNG file, checking its signature."""
    with open(path, "rb") as file:
        header = file.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def first_rows(source, target, rows_per_language, english_rows=None):
    """Copy the header and the first rows of each language of an XNLI file (read by path, written to a
    temporary folder: the data never enters the repository); `english_rows` of English where given."""
    lines = open(source, encoding="utf-8", newline="").read().rstrip("\n").split("\n")  # not splitlines(): U+2028
    language_column = lines[0].split("\t").index("language") if "language" in lines[0].split("\t") else None
    kept, counts = [lines[0]], Counter()
    for line in lines[1:]:
        language = line.split("\t")[language_column] if language_column is not None else None
        if counts[language] < (english_rows if language == "en" and english_rows else rows_per_language):
            kept.append(line)
            counts[language] += 1
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "w", encoding="utf-8") as file:
        file.write("\n".join(kept) + "\n")


def rank_pids(launcher_pid):
    """{rank: pid} of the workers paddle.distributed.launch started."""
    pids = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            environment = open(f"/proc/{name}/environ", "rb").read().split(b"\0")
            parent = int(open(f"/proc/{name}/status").read().split("PPid:")[1].split()[0])
        except OSError:
            continue
        rank = [entry.split(b"=", 1)[1] for entry in environment if entry.startswith(b"PADDLE_TRAINER_ID=")]
        if parent == launcher_pid and rank:
            pids[int(rank[0])] = int(name)
    return pids


def product_operands(transpose_a, transpose_b):
    """float32 operands of a batched [2, 3, 24, 40] x [2, 3, 40, 16] product, each stored transposed
    where asked (as a product reads it with transpose_a or transpose_b)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 3, 40, 24) if transpose_a else (2, 3, 24, 40)).astype(np.float32)
    b = rng.standard_normal((2, 3, 16, 40) if transpose_b else (2, 3, 40, 16)).astype(np.float32)
    return a, b


def as_multiplied(array, transposed):
    """An operand as the product multiplies it."""
    return array.swapaxes(-1, -2) if transposed else array
