"""CPU execution: the cores each process uses, denormal numbers flushed to zero, MKL's path on AMD CPUs."""

import importlib.metadata
import os
import subprocess
import sys
import tempfile

import numpy as np

import utils
from ernie_m_xnli.setup import runtime

from conftest import REPO_ROOT


def test_processes_on_one_machine_share_its_cores(monkeypatch):
    monkeypatch.setattr(utils, "available_cpu_cores", lambda: 16)
    monkeypatch.delenv("PADDLE_LOCAL_SIZE", raising=False)
    assert utils.cpu_cores_per_process() == 16
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "4")
    assert utils.cpu_cores_per_process() == 4
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "32")
    assert utils.cpu_cores_per_process() == 1


def test_flushing_denormals_computes_them_as_zero_in_this_and_later_threads():
    # In a child process: the setting would otherwise stay with the test process.
    program = """
import threading
import numpy as np
from utils import flush_denormals
tiny = np.array([1e-38], dtype=np.float32)
before = float(tiny[0] / np.float32(100))
assert flush_denormals()
after = []
thread = threading.Thread(target=lambda: after.append(float(tiny[0] / np.float32(100))))
thread.start(); thread.join()
print(before > 0, float(tiny[0] / np.float32(100)) == 0, after == [0.0])
"""
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True"]


def test_mkl_takes_its_avx2_path_on_amd_cpus_unless_told_otherwise():
    environ = {}
    assert utils.use_mkl_fast_path_on_amd(True, "AuthenticAMD", environ) == (
        "MKL's AVX2 path on this AMD CPU (MKL_DEBUG_CPU_TYPE=5)"
    )
    assert environ == {"MKL_DEBUG_CPU_TYPE": "5"}
    environ = {}
    assert utils.use_mkl_fast_path_on_amd(False, "AuthenticAMD", environ).startswith("MKL's slow default path")
    assert environ == {}
    environ = {"MKL_DEBUG_CPU_TYPE": "2"}
    assert utils.use_mkl_fast_path_on_amd(True, "AuthenticAMD", environ) == (
        "MKL_DEBUG_CPU_TYPE=2 as set in the environment"
    )
    assert environ == {"MKL_DEBUG_CPU_TYPE": "2"}
    environ = {}
    assert utils.use_mkl_fast_path_on_amd(True, "GenuineIntel", environ) == ""
    assert environ == {}


def test_mkl_fast_path_computes_what_the_default_path_does_within_float_rounding():
    # A training step's logits and gradients, each path in its own process: MKL reads the
    # variable once, at its first call.
    program = """
import sys
import numpy as np
import paddle
from paddlenlp.transformers import ErnieMConfig, ErnieMForSequenceClassification
paddle.seed(0)
config = ErnieMConfig(vocab_size=500, hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3)
model = ErnieMForSequenceClassification(config)
input_ids = paddle.to_tensor(np.random.RandomState(0).randint(5, 500, size=(8, 96)))
logits = model(input_ids, attention_mask=paddle.ones_like(input_ids))
logits.sum().backward()
gradient = model.ernie_m.encoder.layers[0].linear1.weight.grad
np.savez(sys.argv[1], logits=logits.numpy(), gradient=gradient.numpy())
"""
    outputs = {}
    with tempfile.TemporaryDirectory() as folder:
        for variable in ("", "5"):
            environment = {key: value for key, value in os.environ.items() if key != "MKL_DEBUG_CPU_TYPE"}
            environment.update({"MKL_DEBUG_CPU_TYPE": variable} if variable else {})
            path = os.path.join(folder, f"path{variable or 'default'}.npz")
            command = [sys.executable, "-c", program, path]
            result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=environment)
            assert result.returncode == 0, result.stderr[-2000:]
            outputs[variable] = np.load(path)
    np.testing.assert_allclose(outputs["5"]["logits"], outputs[""]["logits"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs["5"]["gradient"], outputs[""]["gradient"], rtol=1e-3, atol=1e-5)


def test_paddlenlp_loads_without_the_sub_packages_the_suite_never_uses():
    """paddlenlp's __init__ imports every sub-package (1.4 s of each start): the suite's scripts skip it."""
    code = (
        "import sys, run_classifier; from paddlenlp.transformers import ErnieMModel; import paddlenlp; "
        "print(paddlenlp.__version__, 'paddlenlp.taskflow' in sys.modules, 'sklearn' in sys.modules)"
    )
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == [importlib.metadata.version("paddlenlp"), "False", "False"]


def test_more_threads_than_cores_is_a_warning_naming_both(monkeypatch, caplog):
    for module in (utils, runtime):
        monkeypatch.setattr(module, "available_cpu_cores", lambda: 4)
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "2")  # two processes on the machine: 2 cores each
    caplog.set_level("WARNING", logger="ernie_m_xnli")
    try:
        runtime.configure_cpu(2, False, False)
        assert not caplog.records
        runtime.configure_cpu(3, False, False)
    finally:
        monkeypatch.undo()
        utils.set_cpu_threads(utils.threads_per_process())
    assert caplog.messages == [
        "--cpu_threads 3: more threads than this process's 2 CPU core(s) (the machine's 4 shared by its processes); "
        "the threads beyond the cores wait on each other and slow every product (0, the default, takes the cores)"
    ]
