"""Small helpers shared by the XNLI scripts: constants, argument parsing, seeding, files."""

import argparse
import ctypes
import ctypes.util
import hashlib
import json
import os
import platform
import random
import re
import struct
import sys
import tempfile
import time
import zipfile
from contextlib import contextmanager

import numpy as np

# The order of the ERNIE-M paper's tables; every table and JSON file uses it.
XNLI_LANGUAGES = ("en", "fr", "es", "de", "el", "bg", "ru", "tr", "ar", "vi", "th", "zh", "hi", "sw", "ur")

# The label ids of PaddleNLP's and Hugging Face's XNLI loaders.
LABELS = ("entailment", "neutral", "contradiction")

# ERNIE-M's pair layout `[CLS] A [SEP] [SEP] B [SEP]`.
NUM_SPECIAL_TOKENS = 4

# The 16-bit types of mixed precision (--amp_dtype).
AMP_DTYPES = ("float16", "bfloat16")
# The libraries a CPU run's float32 products can come from (models/matmul_path.py); auto measures them.
CPU_MATMUL_CHOICES = ("auto", "mkl", "onednn")
# The rows of the products that measure a library (a packed batch of 16 x 64 tokens): the suite's
# --cpu_matmul auto and the benchmark's encoder-shape rates of either framework.
PRODUCT_MEASUREMENT_TOKENS = 1024
# Seconds a rank waits for the others at a collective: 30 minutes, as PyTorch's process groups do.
DEFAULT_COLLECTIVE_TIMEOUT = 1800.0


class InputError(Exception):
    """Bad input from the user (an argument, a file, the machine): reported in one line, exit code 2."""


_TRUE_WORDS = ("true", "t", "yes", "y", "1", "on")
_FALSE_WORDS = ("false", "f", "no", "n", "0", "off")


def str2bool(value):
    """Parse a command-line boolean the way upstream's `distutils.util.strtobool` did."""
    if isinstance(value, bool):
        return value
    word = value.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(
        f"expected one of {', '.join(_TRUE_WORDS)} or {', '.join(_FALSE_WORDS)} (any case), got {value!r}"
    )


def seed_number(value):
    """Parse --seed: numpy takes seeds below 2**32, and a run adds the epoch (data order) and the rank
    (dropout) to it, so below 2**31."""
    try:
        seed = int(value)
    except ValueError:
        seed = None
    if seed is None or not 0 <= seed < 2**31:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 2147483647, got {value!r}")
    return seed


def available_cpu_cores():
    """The CPU cores this process may run on: its affinity, capped by a cgroup (container) CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as file:
            quota, period = file.read().split()
        if quota != "max":
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return cores


def launched_world_size():
    """The number of processes `paddle.distributed.launch` started for this run (1 without it),
    known without importing Paddle."""
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


def cpu_cores_per_process():
    """This process's share of the CPU cores, with the other ranks `paddle.distributed.launch`
    started on this machine."""
    return max(1, available_cpu_cores() // int(os.environ.get("PADDLE_LOCAL_SIZE", "1")))


def seconds_of(function, *arguments):
    """How long `function(*arguments)` took, in seconds."""
    started = time.perf_counter()
    function(*arguments)
    return time.perf_counter() - started


def threads_per_process(cpu_threads=0):
    """`--cpu_threads`, or (0) this process's share of the CPU cores."""
    return cpu_threads or cpu_cores_per_process()


def set_cpu_threads(num_threads):
    """Let Paddle's CPU kernels and oneDNN use `num_threads` threads; Paddle sets 1 at import unless
    OMP_NUM_THREADS was set before."""
    import paddle

    os.environ["OMP_NUM_THREADS"] = str(num_threads)
    paddle.base.core.set_num_threads(num_threads)
    # oneDNN (bfloat16 products) runs on OpenMP's threads, which Paddle's setting leaves alone.
    omp = ctypes.util.find_library("gomp")
    if omp:
        ctypes.CDLL(omp).omp_set_num_threads(num_threads)


# Where glibc's fenv_t keeps the SSE control register (x86-64) or the FPCR (aarch64), and the bits
# that flush denormal results and inputs to zero.
_FLUSH_DENORMAL_BITS = {"x86_64": (28, 0x8040), "aarch64": (0, 1 << 24)}


def flush_denormals():
    """Make this thread, and the threads it starts later, treat float32 values below 1.2e-38 as
    zero. CPUs compute on such denormal numbers many times slower, and training on padded batches
    makes them. Returns False where this is not supported (only Linux on x86-64 or aarch64 is)."""
    offset_and_bits = _FLUSH_DENORMAL_BITS.get(platform.machine())
    libm_name = ctypes.util.find_library("m")
    if not (sys.platform.startswith("linux") and offset_and_bits and libm_name):
        return False
    offset, bits = offset_and_bits
    libm = ctypes.CDLL(libm_name)
    environment = ctypes.create_string_buffer(64)
    if libm.fegetenv(environment) != 0:
        return False
    struct.pack_into("<I", environment, offset, struct.unpack_from("<I", environment.raw, offset)[0] | bits)
    return libm.fesetenv(environment) == 0


def cpu_info_field(name):
    """A field of the first CPU in /proc/cpuinfo ("vendor_id", "model name", "flags"), or "" where it
    cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            return next((line.split(":", 1)[1].strip() for line in file if line.split(":")[0].strip() == name), "")
    except OSError:
        return ""


def cpu_flags():
    """The first CPU's feature flags as /proc/cpuinfo names them ("avx512_bf16", "amx_bf16", ...)."""
    return cpu_info_field("flags").split()


# The ONEDNN_MAX_CPU_ISA values (oneDNN's dnnl_cpu_isa_t names) that leave oneDNN its bfloat16 products.
ONEDNN_BFLOAT16_LIMITS = (
    "AVX512_CORE_BF16",
    "AVX10_1_512",
    "AVX512_CORE_FP16",
    "AVX10_1_512_AMX",
    "AVX512_CORE_AMX",
    "AVX10_1_512_AMX_FP16",
    "AVX512_CORE_AMX_FP16",
)


def onednn_isa_limit():
    """The instruction sets a user allowed oneDNN (ONEDNN_MAX_CPU_ISA, or DNNL_MAX_CPU_ISA, its older
    name), upper-cased; "" when it may use all the CPU has."""
    limit = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    return "" if limit == "ALL" else limit


def has_bfloat16_instructions(flags=None):
    """Whether oneDNN's bfloat16 kernels run here: the CPU has AVX512-BF16 (every AMX CPU has it) and
    no ONEDNN_MAX_CPU_ISA keeps oneDNN below it."""
    flags = cpu_flags() if flags is None else flags
    limit = onednn_isa_limit()
    return "avx512_bf16" in flags and (not limit or limit in ONEDNN_BFLOAT16_LIMITS)


# The instruction sets that decide what a CPU run computes in and how fast: /proc/cpuinfo's flag, the usual name.
INSTRUCTION_SETS = (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX"))


def cpu_instruction_sets(flags=None):
    """The usual names of INSTRUCTION_SETS this CPU has (`flags`: /proc/cpuinfo's, by default)."""
    flags = cpu_flags() if flags is None else flags
    return [name for flag, name in INSTRUCTION_SETS if flag in flags]


def describe_cpu(flags=None):
    """The CPU's model and instruction sets, as every reported figure names them:
    "AMD EPYC family 25 model 1 (AVX2)"."""
    sets = ", ".join(cpu_instruction_sets(flags)) or "no AVX2"
    limit = onednn_isa_limit()
    limited = f"; oneDNN limited to ONEDNN_MAX_CPU_ISA={limit}" if limit else ""
    return f"{cpu_model() or 'this CPU'} ({sets}{limited})"


def cpu_model():
    """The CPU's model name with its family and model numbers, which tell apart the kinds that a
    virtual machine's bare "AMD EPYC" hides ("AMD EPYC family 26 model 2"); "" where unknown."""
    name = cpu_info_field("model name") or platform.processor()
    family, model = cpu_info_field("cpu family"), cpu_info_field("model")
    return f"{name} family {family} model {model}" if name and family and model else name


def cpu_mixed_precision_refusal(amp_dtype, flags=None):
    """Why `--use_amp [--amp_dtype amp_dtype]` cannot run on this CPU, in one line; None where it can
    (bfloat16 on a CPU with AVX512-BF16). Paddle-free, so that it answers before Paddle is imported."""
    given = "--use_amp" if amp_dtype is None else f"--use_amp --amp_dtype {amp_dtype}"
    flags = cpu_flags() if flags is None else flags
    if "avx512_bf16" not in flags:
        return (
            f"{given} on cpu: {describe_cpu(flags)} has neither AVX512-BF16 nor AMX, the instructions of bfloat16 "
            "products, so float32 is the only precision a CPU run computes in here: run without --use_amp"
        )
    if not has_bfloat16_instructions(flags):
        return (
            f"{given} on cpu: {describe_cpu(flags)} keeps oneDNN from its bfloat16 products: unset "
            "ONEDNN_MAX_CPU_ISA (or give it AVX512_CORE_BF16 or above), or run without --use_amp"
        )
    if amp_dtype != AMP_DTYPES[1]:
        return (
            f"{given} on cpu: mixed precision on a CPU is bfloat16 (Paddle has no float16 matrix products on a "
            f"CPU), which {describe_cpu(flags)} computes: pass --amp_dtype bfloat16"
        )
    return None


def cpu_vendor():
    """The CPU's vendor as Linux names it ("AuthenticAMD", "GenuineIntel"), or ""."""
    return cpu_info_field("vendor_id")


def machine_description(gpu_name=None, **versions):
    """Where a run ran, for results.json: the CPU's model, its bfloat16 units and any limit set on
    oneDNN's, the GPU's name (or None), Python's and the given libraries' versions and the suite's commit."""
    flags = cpu_flags()
    return {
        "cpu": cpu_model() or "unknown",
        "amx": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "onednn_max_cpu_isa": onednn_isa_limit() or None,
        "gpu": gpu_name,
        "versions": {"python": platform.python_version(), **versions, "suite": suite_commit()},
    }


# `git archive` (and with it a forge's "download" of a commit) writes the commit into this file; in a
# checkout it holds the placeholder.
ARCHIVE_COMMIT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ernie_m_xnli", "archive_commit.txt")


def suite_commit():
    """The suite's git commit: in a checkout git's ("+changes" where its files differ from it), in files
    unpacked from `git archive` the one it wrote ("+archive": changes since are not seen), "unknown"
    otherwise."""
    import subprocess

    archived = archive_commit()
    if archived:
        return archived + "+archive"
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(
            ["git", "-C", here, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10
        )
        changed = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if commit.returncode != 0:
        return "unknown"
    return commit.stdout.strip() + ("+changes" if changed.stdout.strip() else "")


def archive_commit():
    """The commit ARCHIVE_COMMIT_FILE names (12 digits), or None where it holds the placeholder or is gone."""
    try:
        with open(ARCHIVE_COMMIT_FILE, encoding="utf-8") as file:
            text = file.read().strip()
    except OSError:
        return None
    return text[:12] if len(text) >= 12 and all(c in "0123456789abcdef" for c in text) else None


MKL_CPU_TYPE_VARIABLE = "MKL_DEBUG_CPU_TYPE"


def use_mkl_fast_path_on_amd(enabled, vendor=None, environ=os.environ):
    """On an AMD CPU, send the MKL that Paddle links to its AVX2 code path (MKL_DEBUG_CPU_TYPE=5)
    unless the variable is set already. That MKL predates the variable's removal and dispatches AMD
    CPUs to a generic path: float32 matmul 78 GFLOP/s on 2 threads of an AMD EPYC, 173 with it.
    MKL reads the variable at its first call, so this runs before Paddle computes anything; child
    processes inherit it. Returns the words for the log ("" on other CPUs)."""
    if (cpu_vendor() if vendor is None else vendor) != "AuthenticAMD":
        return ""
    if MKL_CPU_TYPE_VARIABLE in environ:
        return f"{MKL_CPU_TYPE_VARIABLE}={environ[MKL_CPU_TYPE_VARIABLE]} as set in the environment"
    if not enabled:
        return "MKL's slow default path on this AMD CPU (--mkl_fast_path_on_amd false)"
    environ[MKL_CPU_TYPE_VARIABLE] = "5"
    return f"MKL's AVX2 path on this AMD CPU ({MKL_CPU_TYPE_VARIABLE}=5)"


def error_reason(error, limit=240):
    """An exception's message for a one-line error: the first sentences of its first line that fit in
    `limit` characters (at least one, whole), or its type's name."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    sentences = re.split(r"(?<=[.!?])\s+", text.splitlines()[0].strip())
    kept = sentences[:1]
    for sentence in sentences[1:]:
        if len(" ".join([*kept, sentence])) > limit:
            break
        kept.append(sentence)
    return " ".join(kept).rstrip(".")


def set_seed(seed, rank=0):
    """Seed data order identically on every rank, but dropout differently per rank."""
    import paddle

    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed + rank)


def average_accuracy(accuracy_by_language):
    """Mean accuracy over the 15 XNLI languages."""
    return float(np.mean([accuracy_by_language[lang] for lang in XNLI_LANGUAGES]))


def file_digest(path):
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def new_file_mode():
    """The mode the user's umask gives a newly created file (0o644 under umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def give_new_file_mode(path):
    """Temporary files are created private (0o600); a file renamed from one gets the usual mode instead."""
    os.chmod(path, new_file_mode())


@contextmanager
def written_then_renamed(path):
    """Yields a temporary path beside `path` (its extension kept) to write; it replaces `path` once the
    block completes, so a reader never sees half a file, even if the writer dies, and a failed block
    leaves no temporary file behind."""
    directory, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".partial-{os.getpid()}-{name}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


@contextmanager
def writing_into(output_dir):
    """Creates `output_dir` for the block to write its files into; an OSError (a file of that name, no
    permission, a full disk) becomes one InputError naming --output_dir and the file."""
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as error:
        raise InputError(f"--output_dir {output_dir}: cannot create it ({error.strerror})") from None
    try:
        yield
    except OSError as error:
        raise InputError(
            f"--output_dir {output_dir}: cannot write {error.filename or 'its files'} ({error.strerror or error})"
        ) from None


@contextmanager
def replaced_whole(directory):
    """Yields a new folder beside `directory` to fill; once the block completes it replaces `directory`
    (an earlier version included), and if the block fails it is removed: a reader finds the old folder
    or the new one, never half of one."""
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=parent) as work:
        new = os.path.join(work, "new")
        os.makedirs(new)
        yield new
        if os.path.isdir(directory):
            os.rename(directory, os.path.join(work, "old"))
        os.rename(new, directory)


def check_export_dir(flag, directory, is_earlier_export):
    """An export goes into a new or empty directory, or replaces an earlier export whole (see
    replaced_whole): anything else there is refused, before training, so that no result waits on it."""
    if os.path.isdir(directory) and os.listdir(directory) and not is_earlier_export(directory):
        raise InputError(
            f"{flag} {directory}: not empty and not an earlier export of this suite; name a new or empty directory"
        )


def write_npz(path, arrays):
    """`arrays` ({name: array}) as an .npz file that np.load reads. np.savez leaves its zip file open
    when a write fails (a full disk), and its later closing, after the file's, prints "Exception ignored
    ... seek of closed file": this one is closed on every path."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def not_a_file(path):
    """Why `path` cannot be read as a file, or None."""
    if os.path.isdir(path):
        return "a directory, not a file"
    return None if os.path.isfile(path) else "no such file"


def read_json(path):
    """A JSON file as Python data, or None where there is none; InputError naming it where it is not JSON."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not JSON ({error})") from None


def write_json_atomically(path, data):
    """Write JSON so that a reader never sees a half-written file, even if the writer dies."""
    with written_then_renamed(path) as temporary, open(temporary, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=2, ensure_ascii=False)
        file.write("\n")
