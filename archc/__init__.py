"""archc: a compiler for transformer architecture descriptions (.arch files)."""
import os as _os

# Installed, the pipeline's stages live inside this package (archc.dsl, archc.compiler,
# archc.runtime). In a source checkout they are sibling folders of this one; searching
# the checkout as a fallback lets `python -m archc` work from there whatever is installed.
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_checkout, "dsl", "grammar.lark")):
    __path__.append(_checkout)

from .api import ArchError, Model, load  # noqa: E402

__version__ = "0.1.0"
__all__ = ["ArchError", "Model", "load", "__version__"]
