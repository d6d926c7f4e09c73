"""Data: the item schema, featurisation and batches, videos, chat messages, corpus records, conversion."""

from .._lazy import lazy_exports

_EXPORTS = {
    "Features": "featurize", "Featurizer": "featurize", "ImageLayout": "featurize", "collate": "featurize",
    "Item": "items", "ItemError": "items", "ItemLike": "items", "to_item": "items",
    "load_image": "images", "Video": "video", "load_video": "video",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
