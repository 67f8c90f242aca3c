"""The models: loading and checking, the packed forward pass, the static graph for Paddle Inference."""
