"""The classifier's forward pass over packed batches (data/packing.py lays them out)."""

import paddle


class PackedClassifier(paddle.nn.Layer):
    """ErnieMForSequenceClassification's forward pass over a PackedBatch: logits in batch order.

    It owns no parameters of its own, so optimizer, checkpoints and evaluation keep using the
    wrapped model; wrap this (not the model) in DataParallel to train on packed batches.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, position_ids, attention_mask, cls_index):
        ernie_m = self.model.ernie_m
        sequence_output, _ = ernie_m(input_ids, position_ids=position_ids, attention_mask=attention_mask)
        cls_states = paddle.gather(sequence_output.reshape([-1, sequence_output.shape[-1]]), cls_index)
        pooled = ernie_m.pooler(cls_states.unsqueeze(1))
        return self.model.classifier(self.model.dropout(pooled))
