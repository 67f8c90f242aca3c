"""The token embeddings' gradient on a CPU, written into one table kept for the whole training.

Paddle's embedding backward allocates a fresh dense gradient each step (250,002 x 768 floats, 768 MB for
ERNIE-M), zero-fills it and adds the step's rows. On a CPU a block that large comes from the system each
time and is faulted in page by page: 0.29 s of a 2.2 s bfloat16 ernie-m-base step on a 2-core AMD EPYC
(family 26), where zeroing a kept table takes 0.02 s. The rows added are Paddle's, in Paddle's order
(index_add over the same ids, the padding index skipped alike): the gradient is bit-identical.

The table is the parameter's gradient between backward and the optimizer's step (autograd keeps the
tensor a first backward hands over), and the gradients' release drops only a view of it. A backward that
adds to a gradient still held (a micro-batch after the first) gets a fresh table, as Paddle's would.
"""

from contextlib import contextmanager

import paddle
import paddle.nn.functional as F
from paddle.autograd import PyLayer


class _Lookup(PyLayer):
    @staticmethod
    def forward(ctx, ids, weight, kept):
        ctx.save_for_backward(ids)
        ctx.kept = kept
        return F.embedding(ids, weight, padding_idx=kept.layer._padding_idx)

    @staticmethod
    def backward(ctx, output_gradient):
        (ids,) = ctx.saved_tensor()
        return None, ctx.kept.gradient(ids, output_gradient)


class KeptEmbeddingGradient:
    """`layer`'s (an nn.Embedding's) gradient, inside `recording()`, in a table kept between steps where
    `device` is a CPU and the layer a plain lookup; Paddle's own elsewhere (a GPU's allocator keeps freed
    blocks; there it is unmeasured)."""

    def __init__(self, layer, device):
        plain = not (layer._sparse or layer._max_norm or layer._scale_grad_by_freq or layer.weight.stop_gradient)
        self.layer = layer if device == "cpu" and plain else None
        self.table = None

    @contextmanager
    def recording(self):
        """Inside it, the layer's lookups record a backward that writes into the kept table."""
        if self.layer is None:
            yield
            return
        self.layer.forward = lambda ids: _Lookup.apply(ids, self.layer.weight, self)
        try:
            yield
        finally:
            del self.layer.forward

    def gradient(self, ids, output_gradient):
        weight = self.layer.weight
        if weight.grad is not None and weight.grad._is_initialized():
            table = paddle.zeros(weight.shape, weight.dtype)  # autograd adds it to the gradient held
        elif self.table is None:
            table = self.table = paddle.zeros(weight.shape, weight.dtype)
        else:
            table = self.table
            table.zero_()  # every row: under DataParallel the other ranks' rows are in it too
        ids, rows = ids.reshape([-1]), output_gradient.reshape([-1, weight.shape[1]])
        padding = _kernel_padding_index(self.layer._padding_idx, weight.shape[0])
        if padding is not None:
            kept = paddle.nonzero(ids != padding).reshape([-1])
            ids, rows = ids[kept], rows[kept]
        table.index_add_(ids, 0, rows)
        # A new tensor over the table's memory: releasing the gradient releases this view, not the table.
        return table.reshape([-1]).reshape(weight.shape)


def _kernel_padding_index(padding_idx, num_rows):
    """The row F.embedding neither looks up nor trains (a negative index counts from the end)."""
    if padding_idx is None:
        return None
    return padding_idx if padding_idx >= 0 else num_rows + padding_idx
