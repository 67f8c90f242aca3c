"""bfloat16 matrix products on the CPU through the oneDNN library inside the Paddle wheel.

Paddle 3.3.1's dynamic graph has no CPU bfloat16 matmul (`paddle.matmul` on bfloat16 tensors raises
"The kernel with key (CPU, Undefined(AnyLayout), bfloat16) of kernel matmul is not registered", and
`paddle.amp.auto_cast(dtype="bfloat16")` leaves CPU matmuls in float32). The wheel carries oneDNN
(`paddle/libs/libdnnl.so.3`) but not its headers (`dnnl.hpp` there includes `oneapi/dnnl/...`, which
the wheel lacks), so a custom operator cannot be compiled against it; its C API is called here
through ctypes instead: nothing is built, and a machine without a compiler runs it too.

oneDNN's f32 matmul with the bf16 "fpmath mode" computes in float32 on a CPU with AVX512-BF16 but no
AMX (measured on an AMD EPYC: brg_matmul:avx512_core, float32's results), so the inputs are cast to
bfloat16 first and the matmul is bf16 x bf16 -> f32 (brg_matmul:avx512_core_bf16, or its AMX kernel),
float32 accumulation, as PyTorch's CPU autocast computes.
"""

import ctypes
import functools
import math
import os
from collections import OrderedDict

import paddle

# The oneDNN 3.x C API's values used here (oneapi/dnnl/dnnl_common_types.h, dnnl_types.h).
_CPU_ENGINE = 1
_IN_ORDER_STREAM = 1
_DATA_TYPES = {paddle.bfloat16: 2, paddle.float32: 3}
_MAX_DIMS = 12
_ARG_SRC, _ARG_DST, _ARG_WEIGHTS = 1, 17, 33
_QUERY_IMPLEMENTATION_NAME = 8
_Dims = ctypes.c_int64 * _MAX_DIMS


class _ExecutionArgument(ctypes.Structure):
    _fields_ = [("argument", ctypes.c_int), ("memory", ctypes.c_void_p)]


class OneDnnError(RuntimeError):
    pass


def library_path():
    return os.path.join(os.path.dirname(paddle.__file__), "libs", "libdnnl.so.3")


@functools.cache
def library():
    """The Paddle wheel's oneDNN: an OSError where the wheel has none (not an x86-64 wheel), a
    OneDnnError where its major version is not the one whose C API values this module holds."""
    lib = ctypes.CDLL(library_path())
    lib.dnnl_version.restype = ctypes.POINTER(ctypes.c_int * 3)
    major = lib.dnnl_version().contents[0]
    if major != 3:
        raise OneDnnError(f"{library_path()} is oneDNN {major}.x; this suite calls oneDNN 3.x's C API")
    return lib


def version():
    return ".".join(str(number) for number in library().dnnl_version().contents)


def _check(status, call):
    if status != 0:
        raise OneDnnError(f"oneDNN {call} failed with status {status}")


def _handle(create, *arguments):
    handle = ctypes.c_void_p()
    _check(getattr(library(), create)(ctypes.byref(handle), *arguments), create)
    return handle


@functools.cache
def _engine_and_stream():
    engine = _handle("dnnl_engine_create", _CPU_ENGINE, ctypes.c_size_t(0))
    return engine, _handle("dnnl_stream_create", engine, ctypes.c_uint(_IN_ORDER_STREAM))


def _memory_descriptor(dims, strides, dtype):
    return _handle("dnnl_memory_desc_create_with_strides", len(dims), _Dims(*dims), dtype, _Dims(*strides))


def _operand_layout(tensor, transposed):
    """(dims, strides) of `tensor` as a product reads it: its last two dimensions swapped where `transposed`."""
    dims, strides = list(tensor.shape), list(tensor.strides)
    if transposed:
        dims[-2:], strides[-2:] = dims[:-3:-1], strides[:-3:-1]
    return tuple(dims), tuple(strides)


def _is_permuted_dense(shape, strides):
    """Whether a view of `shape` and `strides` covers one dense block: a transpose of a dense array."""
    expected = 1
    for size, stride in sorted(zip(shape, strides), key=lambda dim: (dim[1], dim[0])):
        if size > 1 and stride != expected:
            return False
        expected *= size
    return True


def _empty(shape, dtype, like=None):
    """An empty tensor of `shape`, laid out in memory as `like` is where `like` is a transpose of a dense
    array of that shape (a gradient in its input's layout: no strided copy between attention's heads and
    tokens), else dense."""
    transposed = like is not None and list(like.shape) == list(shape) and not like.is_contiguous()
    if not (transposed and _is_permuted_dense(like.shape, like.strides)):
        return paddle.empty(shape, dtype=dtype)
    return paddle.as_strided(paddle.empty([math.prod(shape)], dtype=dtype), shape, like.strides)


class Primitive:
    """A oneDNN primitive for one shape, whose arguments are memories over the data of Paddle tensors
    given at each call, in the order of `arguments` (oneDNN's argument ids)."""

    def __init__(self, create_descriptor, descriptors, arguments):
        lib = library()
        engine, _ = _engine_and_stream()
        try:
            primitive_descriptor = _handle(create_descriptor[0], *create_descriptor[1:])
            name = ctypes.c_char_p()
            query = lib.dnnl_primitive_desc_query(
                primitive_descriptor, _QUERY_IMPLEMENTATION_NAME, 0, ctypes.byref(name)
            )
            _check(query, "dnnl_primitive_desc_query")
            self.implementation = name.value.decode()
            self.primitive = _handle("dnnl_primitive_create", primitive_descriptor)
            lib.dnnl_primitive_desc_destroy(primitive_descriptor)
            self.memories = [_handle("dnnl_memory_create", descriptor, engine, None) for descriptor in descriptors]
        finally:
            for descriptor in descriptors:
                lib.dnnl_memory_desc_destroy(descriptor)
        self.arguments = (_ExecutionArgument * len(arguments))(
            *(_ExecutionArgument(argument, memory) for argument, memory in zip(arguments, self.memories))
        )

    def __call__(self, *tensors):
        lib = library()
        _, stream = _engine_and_stream()
        for memory, tensor in zip(self.memories, tensors):
            _check(lib.dnnl_memory_set_data_handle(memory, ctypes.c_void_p(tensor.data_ptr())), "set_data_handle")
        _check(lib.dnnl_primitive_execute(self.primitive, stream, len(self.memories), self.arguments), "execute")
        _check(lib.dnnl_stream_wait(stream), "dnnl_stream_wait")

    def destroy(self):
        lib = library()
        for memory in self.memories:
            lib.dnnl_memory_destroy(memory)
        lib.dnnl_primitive_destroy(self.primitive)


def matmul_primitive(a_layout, b_layout, out_layout, input_dtype):
    """oneDNN's [..., m, k] x [..., k, n] -> [..., m, n] product of `input_dtype` inputs (bfloat16 or
    float32) into float32, each operand and the result given as (dims, strides) in elements."""
    engine, _ = _engine_and_stream()
    inputs, f32 = _DATA_TYPES[input_dtype], _DATA_TYPES[paddle.float32]
    descriptors = (
        _memory_descriptor(*a_layout, inputs),
        _memory_descriptor(*b_layout, inputs),
        _memory_descriptor(*out_layout, f32),
    )
    create = ("dnnl_matmul_primitive_desc_create", engine, descriptors[0], descriptors[1], None, descriptors[2], None)
    return Primitive(create, descriptors, (_ARG_SRC, _ARG_WEIGHTS, _ARG_DST))


def conversion_primitive(size):
    """oneDNN's float32 -> bfloat16 conversion of `size` numbers (rounded to nearest even; on all
    threads, where Paddle's cast runs on one)."""
    engine, _ = _engine_and_stream()
    descriptors = tuple(
        _memory_descriptor((size,), (1,), _DATA_TYPES[dtype]) for dtype in (paddle.float32, paddle.bfloat16)
    )
    create = ("dnnl_reorder_primitive_desc_create", descriptors[0], engine, descriptors[1], engine, None)
    return Primitive(create, descriptors, (_ARG_SRC, _ARG_DST))


class PrimitiveCache:
    """The primitives of the shapes seen last (a packed batch's token count varies from step to step;
    each new shape costs oneDNN a kernel to generate)."""

    def __init__(self, capacity=512):
        self.capacity, self.primitives = capacity, OrderedDict()

    def get(self, make, *shape):
        key = (make, *shape)
        primitive = self.primitives.pop(key, None) or make(*shape)
        self.primitives[key] = primitive
        if len(self.primitives) > self.capacity:
            self.primitives.popitem(last=False)[1].destroy()
        return primitive


_primitives = PrimitiveCache()


def to_bfloat16(tensor):
    """A bfloat16 copy of a float32 tensor (rounded to nearest even), laid out in memory as the tensor is
    where that is a transpose of a dense array (else dense); bfloat16 tensors as they are."""
    if tensor.dtype == paddle.bfloat16:
        return tensor
    if not _is_permuted_dense(tensor.shape, tensor.strides):
        tensor = tensor.contiguous()
    converted = _empty(tensor.shape, paddle.bfloat16, like=tensor)
    if tensor.size:  # the same layout: the conversion of one block of memory
        _primitives.get(conversion_primitive, tensor.size)(tensor, converted)
    return converted


def bfloat16_matmul(a, b, transpose_a=False, transpose_b=False, like=None):
    """a @ b in float32 with bfloat16 inputs: a [..., m, k] (or [..., k, m] with `transpose_a`) and b
    [..., k, n] (or [..., n, k]) of the same leading dimensions, or b a matrix; float32 or bfloat16 inputs
    of any strides whose last two dimensions are rows or columns. The result is laid out as `like` is,
    where `like` is a transposed view of the result's shape (else dense)."""
    return _matmul(to_bfloat16(a), to_bfloat16(b), transpose_a, transpose_b, like)


def float32_matmul(a, b, transpose_a=False, transpose_b=False, like=None):
    """bfloat16_matmul's product of float32 inputs in float32: oneDNN's kernels, where Paddle's
    dynamic graph calls MKL's."""
    return _matmul(a, b, transpose_a, transpose_b, like)


def _matmul(a, b, transpose_a, transpose_b, like=None):
    if b.ndim == 2 and a.ndim > 2 and not transpose_a:
        leading = a.shape[:-1]
        return _matmul(a.reshape([-1, a.shape[-1]]), b, False, transpose_b).reshape([*leading, -1])
    if a.shape[:-2] != b.shape[:-2]:
        raise ValueError(f"oneDNN matmul: leading dimensions differ: {a.shape} and {b.shape}")
    a_layout, b_layout = _operand_layout(a, transpose_a), _operand_layout(b, transpose_b)
    if a_layout[0][-1] != b_layout[0][-2]:
        raise ValueError(f"oneDNN matmul: shapes {a.shape} and {b.shape} do not multiply")
    if 1 not in a_layout[1][-2:] or 1 not in b_layout[1][-2:]:  # neither rows nor columns: copied dense
        return _matmul(a.contiguous(), b.contiguous(), transpose_a, transpose_b, like)
    out = _empty([*a.shape[:-2], a_layout[0][-2], b_layout[0][-1]], paddle.float32, like)
    if out.size:
        out_layout = (tuple(out.shape), tuple(out.strides))
        _primitives.get(matmul_primitive, a_layout, b_layout, out_layout, a.dtype)(a, b, out)
    return out


def implementation_name(transpose_a=False, transpose_b=False, input_dtype=paddle.bfloat16):
    """The oneDNN kernel a product of `input_dtype` inputs runs on this CPU, e.g. "brg_matmul:avx512_core_bf16"."""
    a_layout = ((64, 64), (1, 64) if transpose_a else (64, 1))
    b_layout = ((64, 64), (1, 64) if transpose_b else (64, 1))
    return _primitives.get(matmul_primitive, a_layout, b_layout, ((64, 64), (64, 1)), input_dtype).implementation


def set_threads(num_threads):
    """oneDNN's threads (OpenMP's of the calling thread; Paddle sets only its own pool's)."""
    ctypes.CDLL("libgomp.so.1").omp_set_num_threads(num_threads)
