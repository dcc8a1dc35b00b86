"""InfLLM-V2 sparse attention: reference (naive.py), key compression, block selection and block-sparse attention."""
