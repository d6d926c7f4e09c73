"""Embed a JSONL corpus into float32 shards (resumable, data-parallel) and read them back."""

from .corpus import CorpusRecord, ShardSpan, plan_shards, read_span
from .encode import encode_corpus
from .shards import EmbeddingShards, ShardFiles

__all__ = ["CorpusRecord", "EmbeddingShards", "ShardFiles", "ShardSpan", "encode_corpus", "plan_shards", "read_span"]
