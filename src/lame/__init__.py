"""LaME: latent-reasoning multimodal embeddings in one forward pass.

``import lame`` is light (no torch, no transformers): the public names below are imported on first
use (PEP 562), so ``from lame import LaMEModel`` loads the model code and ``lame --help`` does not.
"""

TYPE_CHECKING = False  # what typing.TYPE_CHECKING is at run time, without importing typing (mypy, pyright)

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "ItemError": "lame.data.items",
    "LaMEConfig": "lame.config",
    "LaMEModel": "lame.modeling",
    "build_tiny_model": "lame.modeling",
}

__all__ = ["ItemError", "LaMEConfig", "LaMEModel", "__version__", "build_tiny_model"]

if TYPE_CHECKING:
    from .config import LaMEConfig
    from .data.items import ItemError
    from .modeling import LaMEModel, build_tiny_model


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
