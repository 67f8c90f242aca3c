"""The machine a run uses: the device, the process group, CPU threads, the log and progress bars."""

import logging
import sys

import paddle
from paddlenlp.utils.log import logger as paddlenlp_logger
from tqdm import tqdm

from ernie_m_xnli.setup import distributed
from utils import (
    InputError,
    available_cpu_cores,
    cpu_cores_per_process,
    flush_denormals,
    set_cpu_threads,
    set_seed,
    threads_per_process,
    use_mkl_fast_path_on_amd,
)

# The project's loggers (the package's modules log under its name); everything else logs warnings only.
PROJECT_LOGGERS = ("run_classifier", "ernie_m_xnli")

logger = logging.getLogger(__name__)


def set_up(args):
    """Device, process group, log, CPU threads and seeds of a run."""
    set_up_device(args.device, args.collective_timeout)
    configure_logging()
    if args.device == "cpu":
        configure_cpu(args.cpu_threads, args.flush_denormals, args.mkl_fast_path_on_amd)
    set_seed(args.seed, distributed.rank())


def set_up_device(device, collective_timeout):
    """Select the device and, under `paddle.distributed.launch`, join the process group, whose ranks
    wait up to `collective_timeout` seconds for each other at a collective."""
    if device == "gpu" and not paddle.is_compiled_with_cuda():
        raise InputError(
            "--device gpu: this PaddlePaddle build has no CUDA support (install paddlepaddle-gpu, see README) "
            "or pass --device cpu"
        )
    if device == "xpu" and not paddle.is_compiled_with_xpu():
        raise InputError("--device xpu: this PaddlePaddle build has no XPU support, or pass --device cpu")
    if device == "gpu" and paddle.device.cuda.device_count() == 0:
        raise InputError("--device gpu: no GPU is visible (check CUDA_VISIBLE_DEVICES and the driver)")
    paddle.set_device(device)
    distributed.join(collective_timeout)


def configure_logging():
    """One log format; rank 0 reports, the other ranks only warn."""
    rank_tag = f"[rank {distributed.rank()}] " if distributed.world_size() > 1 else ""
    logging.basicConfig(
        format=f"%(asctime)s {rank_tag}%(levelname)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S", force=True
    )
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if distributed.is_main() else logging.WARNING)
    paddlenlp_logger.set_level("WARNING" if distributed.is_main() else "ERROR")
    logging.getLogger("run_classifier").info("command: %s", " ".join(sys.argv))


def configure_cpu(cpu_threads, flush_denormal_numbers, mkl_fast_path_on_amd):
    """Paddle runs one CPU thread per process unless told otherwise, and its MKL runs slowly on AMD
    CPUs unless told otherwise."""
    num_threads = threads_per_process(cpu_threads)
    # Before the thread pools start and MKL's first call: their threads and dispatch inherit the settings.
    flushed = flush_denormal_numbers and flush_denormals()
    mkl_path = use_mkl_fast_path_on_amd(mkl_fast_path_on_amd)
    set_cpu_threads(num_threads)
    logger.info(
        "device cpu: %d thread(s) per process, denormal numbers %s%s",
        num_threads,
        "flushed to zero" if flushed else "kept",
        f", {mkl_path}" if mkl_path else "",
    )
    if flush_denormal_numbers and not flushed:
        logger.warning("--flush_denormals: not supported on this platform (only Linux on x86-64 or aarch64)")
    warn_if_more_threads_than_cores(num_threads)


def warn_if_more_threads_than_cores(num_threads):
    """Threads beyond a process's share of the cores wait on each other (docs/recipes.md)."""
    cores, machine_cores = cpu_cores_per_process(), available_cpu_cores()
    if num_threads > cores:
        shared = f" (the machine's {machine_cores} shared by its processes)" if cores < machine_cores else ""
        logger.warning(
            "--cpu_threads %d: more threads than this process's %d CPU core(s)%s; the threads beyond the cores "
            "wait on each other and slow every product (0, the default, takes the cores)",
            num_threads,
            cores,
            shared,
        )


def progress_bar(disabled, iterable=None, **options):
    """A tqdm bar on rank 0 at a terminal only (log lines are written above it); elsewhere a silent one."""
    return tqdm(
        iterable, disable=disabled or not distributed.is_main() or not sys.stderr.isatty(), leave=False, **options
    )
