"""The encoder's matrix products on a CPU: Linear layers whose bias gradient is a matrix product and,
where oneDNN computes the products (in bfloat16 under mixed precision, in float32 where
models/matmul_path.py chose it), Linear layers and attention products computed by oneDNN.

Paddle's CPU kernels sum a [tokens, features] gradient over its rows in one thread: 38 ms for the
2048 x 3072 gradient of an ernie-m-base feed-forward layer on 2 cores of this project's AMD EPYC,
where the same sum as a product with a row of ones takes 1.8 ms (MKL, both cores). The bias adds'
gradients were 8.8% of a packed base training step. In float32 the products are Paddle's own; only
the bias gradient differs, by float rounding.

bfloat16 is what PyTorch's CPU autocast computes: the inputs of every Linear layer and attention
product (forward, and both products of its backward) are rounded to bfloat16, accumulated and
returned in float32; weights, their gradients, the optimizer and every other operation stay float32.
Paddle's own auto_cast leaves CPU products in float32 (models/onednn.py says why).
"""

import sys
from collections import namedtuple
from contextlib import contextmanager
from functools import partial

import paddle
from paddle.autograd import PyLayer

from ernie_m_xnli.models import onednn

_paddle_matmul = paddle.matmul
# The module nn.MultiHeadAttention calls `tensor.matmul` from (`paddle.tensor` is a function in Paddle 3).
_TENSOR_MODULE = sys.modules["paddle.tensor"]


def _float32_matmul(a, b, transpose_a=False, transpose_b=False):
    return _paddle_matmul(a, b, transpose_x=transpose_a, transpose_y=transpose_b)


# How a precision multiplies: `operand` is what a product keeps of an input for the backward pass.
Products = namedtuple("Products", "operand matmul")
FLOAT32 = Products(lambda tensor: tensor, _float32_matmul)
ONEDNN_FLOAT32 = Products(lambda tensor: tensor, onednn.float32_matmul)
BFLOAT16 = Products(onednn.to_bfloat16, onednn.bfloat16_matmul)


class CpuLinear(PyLayer):
    """x @ weight + bias with the products of `products`, the bias gradient a product with ones."""

    @staticmethod
    def forward(ctx, x, weight, bias, products):
        x, weight = products.operand(x), products.operand(weight)
        ctx.save_for_backward(x, weight)
        ctx.products = products
        output = products.matmul(x, weight)
        return output + bias

    @staticmethod
    def backward(ctx, output_gradient):
        x, weight = ctx.saved_tensor()
        rows = output_gradient.reshape([-1, output_gradient.shape[-1]])
        gradient_rows = ctx.products.operand(rows)  # converted once for both products
        x_gradient = ctx.products.matmul(gradient_rows, weight, False, True).reshape(x.shape)
        weight_gradient = ctx.products.matmul(x.reshape([-1, x.shape[-1]]), gradient_rows, True, False)
        bias_gradient = _paddle_matmul(paddle.ones([1, rows.shape[0]], rows.dtype), rows).reshape([-1])
        return x_gradient, weight_gradient, bias_gradient


class OneDnnMatmul(PyLayer):
    """paddle.matmul's product (either input read as transposed) by oneDNN with the inputs of
    `products` (bfloat16 or float32), float32 results."""

    @staticmethod
    def forward(ctx, a, b, transpose_a, transpose_b, products):
        a, b = products.operand(a), products.operand(b)
        ctx.save_for_backward(a, b)
        ctx.transposes, ctx.products = (transpose_a, transpose_b), products
        # A product shaped like b is laid out like it: attention's context (weights x values) comes out in
        # the values' token-major layout, which the heads' transpose back to tokens then reads in place.
        return products.matmul(a, b, transpose_a, transpose_b, like=b)

    @staticmethod
    def backward(ctx, output_gradient):
        a, b = ctx.saved_tensor()
        matmul, gradient = ctx.products.matmul, ctx.products.operand(output_gradient)
        # c = op(a) op(b): the gradients of a and b from d(c) by the four transposition cases, each laid out
        # in memory as its input was (attention's heads are a transposed view of the tokens' features).
        a_gradient, b_gradient = partial(matmul, like=a), partial(matmul, like=b)
        return {
            (False, False): lambda: (a_gradient(gradient, b, False, True), b_gradient(a, gradient, True, False)),
            (False, True): lambda: (a_gradient(gradient, b, False, False), b_gradient(gradient, a, True, False)),
            (True, False): lambda: (a_gradient(b, gradient, False, True), b_gradient(a, gradient, False, False)),
            (True, True): lambda: (a_gradient(b, gradient, True, True), b_gradient(gradient, a, True, True)),
        }[ctx.transposes]()


def _linear_forward(layer, products, x):
    return CpuLinear.apply(x, layer.weight, layer.bias, products)


def _onednn_matmul_where_float32(products):
    """paddle.matmul, by oneDNN for two float32 inputs of the same leading dimensions (attention's)."""

    def matmul(x, y, transpose_x=False, transpose_y=False, name=None):
        if x.dtype == y.dtype == paddle.float32 and x.ndim >= 2 and x.shape[:-2] == y.shape[:-2]:
            return OneDnnMatmul.apply(x, y, transpose_x, transpose_y, products)
        return _paddle_matmul(x, y, transpose_x, transpose_y, name)

    return matmul


@contextmanager
def _linears_computed_with(model, products):
    linears = [layer for layer in model.sublayers() if isinstance(layer, paddle.nn.Linear) and layer.bias is not None]
    for layer in linears:
        layer.forward = partial(_linear_forward, layer, products)
    try:
        yield
    finally:
        for layer in linears:
            del layer.forward


def bias_gradients_by_matmul(model):
    """Inside it, the forward passes of `model`'s Linear layers (those with a bias) record CpuLinear
    in float32, whose backward then runs wherever it is called. For training's forward pass only: a
    static-graph export cannot trace a PyLayer."""
    return _linears_computed_with(model, FLOAT32)


@contextmanager
def onednn_matmuls(model, products):
    """Inside it, `model`'s Linear layers (those with a bias) and its attention products (paddle.matmul,
    the paddle.tensor module's matmul, paddle.bmm on float32 inputs) are computed by oneDNN with the
    inputs of `products` (BFLOAT16 or ONEDNN_FLOAT32), for training and evaluation on a CPU. The
    PyLayers recorded do their backward wherever it is called."""
    with _linears_computed_with(model, products):
        replaced = [(paddle, "matmul"), (_TENSOR_MODULE, "matmul"), (paddle, "bmm")]
        originals = [getattr(module, name) for module, name in replaced]
        matmul = _onednn_matmul_where_float32(products)
        paddle.matmul = _TENSOR_MODULE.matmul = matmul
        paddle.bmm = lambda x, y, name=None: matmul(x, y)
        try:
            yield
        finally:
            for (module, name), original in zip(replaced, originals):
                setattr(module, name, original)
