"""archc: a compiler for transformer architecture descriptions (.arch files)."""
from .api import ArchError, Model, load

__version__ = "0.1.0"
__all__ = ["ArchError", "Model", "load", "__version__"]
