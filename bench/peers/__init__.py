"""Reference implementations in other frameworks, run with their own virtualenv (not the
project's): airbench94_torch, airbench94.py's recipe in PyTorch on the CPU."""
