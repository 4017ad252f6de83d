"""motlab: Mixture-of-Tokens language-model experiments on PyTorch Lightning."""

from motlab.checkpoint import load_model, save_model
from motlab.config import PRESETS, GPTConfig
from motlab.decoding import Completion, complete
from motlab.generate import generate
from motlab.model import GPT
from motlab.stats import model_stats

__version__ = "0.1.0"

__all__ = [
    "GPT",
    "Completion",
    "GPTConfig",
    "PRESETS",
    "complete",
    "generate",
    "load_model",
    "model_stats",
    "save_model",
]
