"""The parts of benchmark.py: what every setting shares (common.py, no Paddle or PyTorch), Paddle's
settings (paddle_settings.py) and the transformers peer on PyTorch (transformers_peer.py)."""
