"""XNLI data: release files, splits, tokenized windows and their cache, batches and packing."""
