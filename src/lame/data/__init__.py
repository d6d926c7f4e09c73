from .featurize import Features, Featurizer, ImageLayout, collate
from .items import Item, ItemError, ItemLike, load_image, to_item
from .video import Video, load_video

__all__ = ["Features", "Featurizer", "ImageLayout", "Item", "ItemError", "ItemLike", "Video", "collate",
           "load_image", "load_video", "to_item"]
