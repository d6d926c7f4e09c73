"""The options of `lame data convert` (:func:`lame.data.convert.convert`), declared once, light to import."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..cli_options import option


@dataclass(frozen=True)
class ConvertOptions:
    image_root: str | None = field(default=None, metadata=option(
        "mmeb-train: the folder its image paths are relative to (default: SOURCE)"))
    video_root: str | None = field(default=None, metadata=option(
        "llavahound-*: the folder of frame folders, one per video"))
    subsets: tuple[str, ...] | None = field(default=None, metadata=option("mmeb-train: only these subsets"))
    split: str = field(default="original", metadata=option("mmeb-train: parquet split"))
    max_rows: int | None = field(default=None, metadata=option("at most this many records per output file"))
    published_caps: bool = field(default=False, metadata=option("the per-source row caps of the VLM2Vec-V2 mixture"))
    num_frames: int = field(default=8, metadata=option("llavahound-*: frames per video"))
    name: str | None = field(default=None, metadata=option("output file stem (default: the source's name in the mixture)"))
