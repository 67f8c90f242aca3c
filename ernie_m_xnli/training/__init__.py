"""Training: the Trainer, its optimizer, checkpoints and what watches and steers a run."""
