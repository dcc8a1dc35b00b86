"""The MiniCPM-SALA family in PyTorch: config, network, inference state, weights, tokenizer, generation."""

from .config import ModelConfig, RopeScaling, SparseConfig
from .errors import ConfigError, ModelError
from .generate import Generation, GenerationConfig, generate
from .load import load_model, load_tokenizer
from .model import CausalLM
from .sources import DEFAULT_MODEL, default_cache_dir
from .tokenizer import Tokenizer

__all__ = [
    "CausalLM",
    "ConfigError",
    "DEFAULT_MODEL",
    "Generation",
    "GenerationConfig",
    "ModelConfig",
    "ModelError",
    "RopeScaling",
    "SparseConfig",
    "Tokenizer",
    "default_cache_dir",
    "generate",
    "load_model",
    "load_tokenizer",
]
