"""The run's setup: arguments and recipes (no Paddle), the machine and the process group."""
