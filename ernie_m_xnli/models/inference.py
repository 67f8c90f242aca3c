"""The model as a static graph for Paddle Inference: exported, traced once per run, and run by a
predictor on the CPU with oneDNN."""

import errno
import logging
import os
import warnings

import paddle
from paddle import inference

from ernie_m_xnli.models.dropout import no_dropout_outside_training
from utils import check_export_dir, replaced_whole

logger = logging.getLogger(__name__)


EXPORT_PREFIX = "inference"


def export_inference_model(classifier, tokenizer, directory):
    """Save the classifier as a static graph for Paddle Inference (`inference.json`, `inference.pdiparams`),
    with the tokenizer beside it: int64 inputs (data.batching.padded_inputs' arrays), each [batch, length]
    of any size (infer_static.py shows how to feed them). The export is whole or not there at all, and
    replaces an earlier one whole."""
    check_export_dir("--export_model_dir", directory, is_inference_export)
    with replaced_whole(directory) as new:
        tokenizer.save_pretrained(new)
        save_static_graph(classifier, os.path.join(new, EXPORT_PREFIX))
        check_loads_back(os.path.join(new, EXPORT_PREFIX))
    logger.info("exported the model for Paddle Inference to %s", directory)


def is_inference_export(directory):
    """Whether `directory` holds an earlier --export_model_dir export."""
    return all(os.path.isfile(os.path.join(directory, EXPORT_PREFIX + suffix)) for suffix in (".json", ".pdiparams"))


def check_loads_back(path_prefix):
    """Paddle writes a static graph's weights short on a full disk without an error (the last file an
    export writes): a predictor loads them back, or the export counts as not written."""
    try:
        create_predictor(path_prefix, 1)
    except RuntimeError:
        raise OSError(errno.ENOSPC, "the weights were written short") from None


def static_forward(classifier):
    """The classifier's forward pass over padded batches as a static-graph function (traced at its
    first save), leaving `classifier.forward` itself dynamic."""
    input_spec = [
        paddle.static.InputSpec(shape=[None, None], dtype="int64", name=name) for name in classifier.input_names
    ]
    return paddle.jit.to_static(classifier.forward, input_spec=input_spec, full_graph=True)


def save_static_graph(classifier, path_prefix, forward=None):
    """`<prefix>.json` and `<prefix>.pdiparams`: the classifier's current weights as a static graph.
    Saves that pass the same `forward` (a `static_forward(classifier)`) trace the graph once and then
    only write the weights: 0.015 s instead of 0.5 s for the tests' tiny model."""
    was_training = classifier.training
    classifier.eval()
    with warnings.catch_warnings(), no_dropout_outside_training():  # traced at the first save: no dropout ops
        # That loading the files gives a layer computing what the function does.
        warnings.filterwarnings("ignore", message="What you save is a function")
        paddle.jit.save(forward or static_forward(classifier), path_prefix)
    classifier.train(was_training)


def create_predictor(path_prefix, num_threads, bfloat16=False):
    """A Paddle Inference predictor of a saved static graph, on the CPU with oneDNN; in `bfloat16`, its
    oneDNN passes compute the operators that have bfloat16 kernels (matmuls among them) in bfloat16."""
    config = inference.Config(path_prefix + ".json", path_prefix + ".pdiparams")
    config.disable_glog_info()
    config.enable_mkldnn()
    if bfloat16:
        config.enable_mkldnn_bfloat16()
    config.set_cpu_math_library_num_threads(num_threads)
    return inference.create_predictor(config)


def predictor_logits(predictor, inputs):
    """The logits [batch, 3] of a padded batch's inputs (name: array); the graph takes those it uses."""
    for name in predictor.get_input_names():
        handle = predictor.get_input_handle(name)
        handle.reshape(inputs[name].shape)
        handle.copy_from_cpu(inputs[name])
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
