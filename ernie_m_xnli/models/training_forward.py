"""The context of training's forward pass: the precision's products and, on a CPU, two of Paddle's
kernels replaced where a bfloat16 ernie-m-base step spent most beside its products (the token
embeddings' gradient, models/embedding_gradient.py; dropout, models/dropout.py)."""

from contextlib import contextmanager

from ernie_m_xnli.models.dropout import cpu_dropout
from ernie_m_xnli.models.embedding_gradient import KeptEmbeddingGradient


class TrainingForward:
    """`with training_forward():` around a forward pass of `model` whose backward follows it."""

    def __init__(self, precision, model, word_embeddings):
        self.precision, self.model = precision, model
        self.embedding_gradient = KeptEmbeddingGradient(word_embeddings, precision.device)

    @contextmanager
    def __call__(self):
        with self.precision.training_forward(self.model), self.embedding_gradient.recording():
            with cpu_dropout(self.precision.device):
                yield
