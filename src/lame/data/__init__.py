from .featurize import Features, Featurizer, collate
from .items import Item, ItemError, ItemLike, load_image, to_item

__all__ = ["Features", "Featurizer", "Item", "ItemError", "ItemLike", "collate", "load_image", "to_item"]
