"""The layers that run_classifier.py and the tools are built from, lowest first:

    setup       the run's arguments, recipes, machine (device, threads, log) and process group
    data        XNLI release files, splits, tokenizing into windows, feature cache, batches, packing
    models      loading the model and tokenizer, packed forward pass, static graph and Paddle Inference
    evaluation  the Evaluator and its typed results, results files and tables
    training    the Trainer, optimizer and schedule, checkpoints, run control (logs, stops, exit codes)

A module imports from its own layer or lower ones, and from the top-level `utils`; never from a
higher layer or a script (tests/test_layers.py checks it).
"""

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
