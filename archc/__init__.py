"""archc: a compiler for transformer architecture descriptions (.arch files)."""
import os as _os

# Installed, the pipeline's stages live inside this package (archc.dsl, archc.compiler,
# archc.runtime). In a source checkout they are sibling folders of this one; searching
# the checkout as a fallback lets `python -m archc` work from there whatever is installed.
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_checkout, "dsl", "grammar.lark")):
    __path__.append(_checkout)

__version__ = "0.1.0"
__all__ = ["ArchError", "Model", "load", "__version__"]


def __getattr__(name: str):
    # the API is imported on first use, so the command line's start (and a Ctrl-C during
    # it) happens inside entry()'s error handling, not in a bare import
    if name in ("ArchError", "Model", "load"):
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'archc' has no attribute {name!r}")
