"""Lightning attention: reference (naive.py) and Triton kernels (chunk.py prefill, fused_recurrent.py decode)."""
