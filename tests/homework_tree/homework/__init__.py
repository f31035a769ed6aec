from .rft import load as load_rft
from .sft import load as load_sft

__all__ = ["load_sft", "load_rft"]
