from .featurize import Features, Featurizer, ImageLayout, collate
from .items import Item, ItemError, ItemLike, load_image, to_item

__all__ = ["Features", "Featurizer", "ImageLayout", "Item", "ItemError", "ItemLike", "collate", "load_image",
           "to_item"]
