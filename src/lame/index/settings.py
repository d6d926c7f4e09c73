"""`lame index build`'s options, declared once (their fields are the command's flags, :mod:`lame.cli_options`).

Kept apart from the backends so that ``lame --help`` lists them without importing FAISS or pymilvus.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..cli_options import option
from ..errors import InvalidInput

KINDS = ("flat", "ivf", "hnsw")
BACKENDS = ("faiss", "milvus")
DEFAULT_COLLECTION = "lame"
TOKEN_ENV = "LAME_MILVUS_TOKEN"  # a Milvus server's token ("user:password" or an API key); never a flag


@dataclass(frozen=True)
class IndexBuildSettings:
    """How `lame index build` indexes a `lame encode` folder: with FAISS into a folder, or into a Milvus collection."""

    backend: str = field(default="faiss", metadata=option(
        "faiss: index shards in a folder (--output); milvus: a Milvus collection (--uri)", choices=BACKENDS))
    output: str | None = field(default=None, metadata=option("--backend faiss: the index folder", metavar="DIR"))
    uri: str | None = field(default=None, metadata=option(
        "--backend milvus: a local .db file (Milvus Lite, embedded) or http(s)://host:19530 (a Milvus server or "
        f"cluster; its token from ${TOKEN_ENV}, never a flag)", metavar="URI"))
    collection: str | None = field(default=None, metadata=option(
        f"--backend milvus: the collection (default: {DEFAULT_COLLECTION}; also URI#NAME)", metavar="NAME"))
    kind: str = field(default="flat", metadata=option(
        "flat: exact inner product; ivf: inverted lists; hnsw: graph", choices=KINDS))
    nlist: int | None = field(default=None, metadata=option("IVF lists (default: about 4 sqrt(n))"))
    m: int = field(default=32, metadata=option("HNSW links per node"))
    ef_construction: int = field(default=80, metadata=option("HNSW candidates kept while linking a node"))
    shard_size: int | None = field(default=None, metadata=option(
        "--backend faiss: vectors per index shard (default: one shard)"))
    batch_size: int = field(default=1000, metadata=option(
        "--backend milvus: vectors per insert (the unit a killed build resumes from)"))
    overwrite: bool = field(default=False, metadata=option(
        "--backend milvus: drop an existing collection that holds another build, instead of refusing"))
    max_batches: int | None = field(default=None, metadata=option(
        "--backend milvus: stop after this many new batches (run the same command again to go on)"))

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise InvalidInput(f"unknown index backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        if self.kind not in KINDS:
            raise InvalidInput(f"unknown index kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        for name in ("nlist", "m", "ef_construction", "shard_size", "batch_size", "max_batches"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidInput(f"{name.replace('_', '-')} must be >= 1, got {value}")

    def check_backend(self) -> None:
        """Refuses options of the other backend that were given (one line naming them), and a missing
        destination. ``--batch-size`` has a default, so FAISS cannot tell it was given and ignores it."""
        if self.backend == "faiss":
            if self.output is None:
                raise InvalidInput("--backend faiss needs --output DIR (the index folder)")
            wrong = [f for f, v in (("--uri", self.uri), ("--collection", self.collection),
                                    ("--overwrite", self.overwrite), ("--max-batches", self.max_batches)) if v]
        else:
            if self.uri is None:
                raise InvalidInput("--backend milvus needs --uri URI (a local .db file, or http(s)://host:19530)")
            wrong = [f for f, v in (("--output", self.output), ("--shard-size", self.shard_size)) if v]
        if wrong:
            raise InvalidInput(f"{', '.join(wrong)} {'does' if len(wrong) == 1 else 'do'} not apply to "
                               f"--backend {self.backend}")
