"""The layers that run_classifier.py and the tools are built from, lowest first:

    setup       the run's arguments, recipes, machine (device, threads, log) and process group
    data        XNLI release files, splits, tokenizing into windows, feature cache, batches, packing
    models      loading the model and tokenizer, packed forward pass, static graph and Paddle Inference
    evaluation  the Evaluator and its typed results, results files and tables
    training    the Trainer, optimizer and schedule, checkpoints, run control (logs, stops, exit codes)

A module imports from its own layer or lower ones, and from the top-level `utils`; never from a
higher layer or a script (tests/test_layers.py checks it).
"""

import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import sys
import warnings

# What Paddle prints while it loads asks nothing of a user: Python warnings about a compiler cache,
# setuptools and AMP on a CPU, and glog lines from its C++ side (one at each static-graph export).
# Every script imports this package before Paddle; --debug on the command line keeps them.
if "--debug" not in sys.argv:
    os.environ.setdefault("GLOG_minloglevel", "2")
    for message in (
        "No ccache found",
        "Setuptools is replacing distutils",
        "(AmpScaler|amp_guard) can only be enabled",
    ):
        warnings.filterwarnings("ignore", message=message)


class _PaddleNLPWithoutItsEagerImports(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Loads the paddlenlp package without running its __init__, which imports every sub-package
    (taskflow, trainer, trl, datasets with Hugging Face's and scikit-learn's imports): 1.4 s of each
    process's start on a quiet 2-core CPU, of which the suite uses `data`, `transformers` and `utils`.
    Sub-packages then import when first used; `data` first, as paddlenlp's __init__ orders them (its
    collator and `transformers` import each other), and Paddle's C++ signal handlers go as there."""

    def find_spec(self, name, path=None, target=None):
        if name != "paddlenlp":
            return None
        sys.meta_path.remove(self)
        installed = importlib.util.find_spec(name)
        if installed is None:
            return None
        spec = importlib.machinery.ModuleSpec(name, self, origin=installed.origin, is_package=True)
        spec.submodule_search_locations = installed.submodule_search_locations
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, package):
        import paddle

        package.__file__ = package.__spec__.origin
        package.__version__ = importlib.metadata.version("paddlenlp")
        importlib.import_module("paddlenlp.data")
        paddle.disable_signal_handler()


if "paddlenlp" not in sys.modules:
    sys.meta_path.insert(0, _PaddleNLPWithoutItsEagerImports())
