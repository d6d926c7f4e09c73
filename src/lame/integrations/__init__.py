"""Bridges to the tools people load and compare embedders with.

* :mod:`lame.integrations.sentence_transformers`: the module class a saved LaME folder names in its
  ``modules.json``, so that ``SentenceTransformer(folder, trust_remote_code=True)`` loads it (the
  ``st`` extra);
* :mod:`lame.integrations.mteb`: a model wrapper for the ``mteb`` package (MTEB, MIEB, MMEB tasks)
  and a converter from LaME's JSONL task folders to ``mteb`` retrieval tasks (the ``mteb`` extra);
* :mod:`lame.integrations.card`: the model card's ``model-index`` results, written by ``lame eval``.

Nothing here is imported by ``import lame``.
"""
