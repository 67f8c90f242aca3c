"""What a run computes in: float32, or mixed precision (--use_amp) in --amp_dtype.

On a GPU, mixed precision is Paddle's auto_cast (float16 with loss scaling, as the paper trained, or
bfloat16 without). On a CPU it is bfloat16 only, where the CPU has AVX512-BF16 (or AMX, whose CPUs
have it too): the encoder's products through oneDNN (models/cpu_matmuls.py) in training and in the
dynamic graph, and Paddle Inference's oneDNN bfloat16 passes for a static graph. A CPU's float32
products are MKL's or oneDNN's, whichever models/matmul_path.py found faster (Paddle Inference's
are oneDNN's either way).
"""

import logging
from contextlib import nullcontext
from dataclasses import dataclass, replace

import paddle

from ernie_m_xnli.models import onednn
from ernie_m_xnli.models.cpu_matmuls import BFLOAT16 as BFLOAT16_PRODUCTS
from ernie_m_xnli.models.cpu_matmuls import ONEDNN_FLOAT32, bias_gradients_by_matmul, onednn_matmuls
from ernie_m_xnli.models.matmul_path import MKL, ONEDNN, float32_matmul_path
from utils import AMP_DTYPES, InputError, cpu_mixed_precision_refusal

FLOAT16, BFLOAT16 = AMP_DTYPES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    device: str = "cpu"
    amp_dtype: str = None  # None: float32 throughout
    float32_matmul: str = MKL  # on a CPU in float32: MKL (Paddle's own) or ONEDNN

    def __str__(self):
        return f"{self.amp_dtype} mixed precision" if self.amp_dtype else "float32"

    @property
    def scales_loss(self):
        """float16's small range needs a scaled loss; bfloat16 has float32's."""
        return self.amp_dtype == FLOAT16

    @property
    def cpu_bfloat16(self):
        return self.device == "cpu" and self.amp_dtype == BFLOAT16

    def training_forward(self, model):
        """The context of training's forward pass of `model` (its backward follows what it records)."""
        if self.device == "cpu":
            return self._onednn_products(model) or bias_gradients_by_matmul(model)
        return self._auto_cast()

    def evaluation_forward(self, model):
        """The context of a dynamic-graph forward pass without gradients."""
        if self.device == "cpu":
            return self._onednn_products(model) or nullcontext()
        return self._auto_cast()

    def _onednn_products(self, model):
        if self.cpu_bfloat16:
            return onednn_matmuls(model, BFLOAT16_PRODUCTS)
        if self.float32_matmul == ONEDNN:
            return onednn_matmuls(model, ONEDNN_FLOAT32)
        return None

    def _auto_cast(self):
        return paddle.amp.auto_cast(enable=self.amp_dtype is not None, dtype=self.amp_dtype or FLOAT16)


def run_precision(device, use_amp, amp_dtype):
    """The Precision of a run's arguments (`amp_dtype` None: the device's default), refusing in one
    line what the device cannot compute."""
    if not use_amp:
        precision = Precision(device)
    elif device == "cpu":
        precision = cpu_mixed_precision(amp_dtype)
    else:
        amp_dtype = amp_dtype or FLOAT16
        supported = paddle.amp.is_float16_supported() if amp_dtype == FLOAT16 else paddle.amp.is_bfloat16_supported()
        if not supported:
            raise InputError(f"--use_amp --amp_dtype {amp_dtype}: this {device} has no {amp_dtype} support")
        precision = Precision(device, amp_dtype)
    logger.info("computing in %s", precision)
    return precision


def with_float32_products(precision, model, cpu_matmul, num_threads, cache_dir, resumed=None):
    """`precision`, whose float32 products on a CPU are by the library --cpu_matmul names or, for
    auto, by the one the resumed run used (`resumed`) or else measured faster on `model`'s shapes on
    `num_threads` (kept in `cache_dir`)."""
    if precision.device != "cpu" or precision.amp_dtype:
        return precision
    library = float32_matmul_path(cpu_matmul, model, num_threads, cache_dir, resumed)
    return replace(precision, float32_matmul=library)


def cpu_mixed_precision(amp_dtype, flags=None):
    """bfloat16 where this CPU and Paddle's oneDNN compute it; float32, said in one line, where the
    wheel has no oneDNN library (not an x86-64 wheel)."""
    refusal = cpu_mixed_precision_refusal(amp_dtype, flags)
    if refusal:
        raise InputError(refusal)
    try:
        logger.info("bfloat16 products by oneDNN %s: %s", onednn.version(), onednn.implementation_name())
    except (OSError, onednn.OneDnnError) as error:
        logger.warning("--amp_dtype bfloat16: Paddle's oneDNN cannot be used here (%s); computing in float32", error)
        return Precision("cpu")
    return Precision("cpu", BFLOAT16)
