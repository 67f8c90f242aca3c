"""Fixtures: a tiny random ERNIE-M with its own sentencepiece tokenizer, and tiny synthetic XNLI
corpora in the original release layout (see synthetic.py), built offline in a temporary folder."""

import os
import subprocess
import sys
import tempfile
import warnings

import pytest

warnings.filterwarnings("ignore", message="No ccache found")
warnings.filterwarnings("ignore", message="Setuptools is replacing distutils")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from synthetic import build_tiny_ernie_m, corpus_text, write_xnli_corpus  # noqa: E402

XNLI_DIR = os.environ.get("XNLI_DIR")
# The scripts' tokenized-feature cache goes to a fresh folder, not the user's ~/.cache.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="ernie-m-xnli-test-cache-")


@pytest.fixture(scope="session")
def xnli_dir(tmp_path_factory):
    return write_xnli_corpus(tmp_path_factory.mktemp("xnli"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, xnli_dir):
    text_file = tmp_path_factory.mktemp("text") / "corpus.txt"
    text_file.write_text(corpus_text(xnli_dir), encoding="utf-8")
    return build_tiny_ernie_m(str(tmp_path_factory.mktemp("tiny-ernie-m")), str(text_file))


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from paddlenlp.transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def run_script(*args, script="run_classifier.py", launcher=(), timeout=300):
    """Run a repo script as a user would; returns the CompletedProcess (stdout, stderr as text)."""
    command = [sys.executable, *launcher, os.path.join(REPO_ROOT, script), *map(str, args)]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
