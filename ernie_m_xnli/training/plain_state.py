"""Checkpoint files as data, never code: loading them never unpickles.

Tensors and arrays go to `.npz` files read with `allow_pickle=False`, everything else (numbers,
strings, nested dicts) to JSON; random-number states are JSON; model weights are safetensors
(PaddleNLP's `save_pretrained(..., safe_serialization=True)`). A manifest, written last, names every
file with its size and SHA-256, so that a torn or altered checkpoint is found before it is used.
"""

import json
import os
import random

import numpy as np
import paddle
from paddle.base.core import GeneratorState
from safetensors.numpy import load_file

from utils import file_digest, write_json_atomically, write_npz

MANIFEST_FILE = "manifest.json"
SAFE_WEIGHTS_FILE = "model.safetensors"


def save_state_dict(path_stem, state):
    """An optimizer's or loss scaler's state dict as `<stem>.npz` (its tensors) and `<stem>.json`."""
    arrays, plain = {}, {}
    for key, value in state.items():
        if isinstance(value, (paddle.Tensor, np.ndarray)):
            arrays[key] = np.asarray(value)
        else:
            plain[key] = value
    write_npz(path_stem + ".npz", arrays)
    write_json_atomically(path_stem + ".json", plain)


def load_state_dict(path_stem):
    with np.load(path_stem + ".npz", allow_pickle=False) as arrays:
        state = {key: paddle.to_tensor(arrays[key]) for key in arrays.files}
    with open(path_stem + ".json", encoding="utf-8") as file:
        state.update(json.load(file))
    return state


def capture_rng_state():
    """This process's random-number generators (dropout draws from Paddle's), as plain data."""
    version, python_state, gaussian = random.getstate()
    name, keys, position, has_gaussian, cached_gaussian = np.random.get_state()
    return {
        "python": [version, list(python_state), gaussian],
        "numpy": [name, keys.tolist(), int(position), int(has_gaussian), float(cached_gaussian)],
        "paddle": [list(state.__getstate__()) for state in paddle.get_rng_state()],
    }


def restore_rng_state(rng_state):
    version, python_state, gaussian = rng_state["python"]
    random.setstate((version, tuple(python_state), gaussian))
    name, keys, position, has_gaussian, cached_gaussian = rng_state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gaussian, cached_gaussian))
    paddle.set_rng_state([generator_state(saved) for saved in rng_state["paddle"]])


def generator_state(saved):
    """A Paddle GeneratorState from the tuple its own pickling support gives and takes."""
    state = GeneratorState.__new__(GeneratorState)
    state.__setstate__(tuple(saved))
    return state


def load_weights_file(directory):
    """{parameter name: array} of a directory's safetensors weights."""
    return load_file(os.path.join(directory, SAFE_WEIGHTS_FILE))


def write_manifest(directory):
    """Name every file of `directory` with its size and SHA-256; written last."""
    files = {
        name: {
            "size": os.path.getsize(os.path.join(directory, name)),
            "sha256": file_digest(os.path.join(directory, name)),
        }
        for name in sorted(os.listdir(directory))
        if os.path.isfile(os.path.join(directory, name)) and name != MANIFEST_FILE
    }
    write_json_atomically(os.path.join(directory, MANIFEST_FILE), {"files": files})


def manifest_problem(directory):
    """What is wrong with `directory` against its manifest ("file: what"), or None; a directory
    without a manifest (a plain save_pretrained directory, a PaddleNLP download) has none."""
    manifest_path = os.path.join(directory, MANIFEST_FILE)
    if not os.path.isfile(manifest_path):
        return None
    try:
        with open(manifest_path, encoding="utf-8") as file:
            files = json.load(file)["files"]
    except (ValueError, KeyError) as error:
        return f"{manifest_path}: unreadable ({error})"
    for name, expected in files.items():
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            return f"{path}: missing"
        if os.path.getsize(path) != expected["size"]:
            return f"{path}: {os.path.getsize(path)} bytes, the manifest says {expected['size']}"
        if file_digest(path) != expected["sha256"]:
            return f"{path}: its SHA-256 differs from the manifest's (altered or damaged)"
    return None
