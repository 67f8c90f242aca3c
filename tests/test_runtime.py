"""CPU execution: the cores each process uses, and denormal numbers flushed to zero."""

import subprocess
import sys

import utils

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
