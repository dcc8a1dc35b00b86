"""Without a GPU, kernel tests run the Triton kernels on the CPU through Triton's interpreter.

The variable must be set before any kernel module is imported (the kernels import Triton lazily).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
