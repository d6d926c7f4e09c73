"""The files a saved LaME folder carries for sentence-transformers, written without importing it.

``modules.json`` names one module, :class:`lame.integrations.sentence_transformers.LaMEModule`, saved
in the folder's root (the LaME layout itself); ``config_sentence_transformers.json`` declares the
model type, cosine similarity, empty ``query``/``document`` prompts and that ``lame`` must be
installed (sentence-transformers checks ``requirements`` before it loads any module).
"""

from __future__ import annotations

import json
from pathlib import Path

MODULE_TYPE = "lame.integrations.sentence_transformers.LaMEModule"
MODULES_FILE = "modules.json"
CONFIG_FILE = "config_sentence_transformers.json"


def write_sentence_transformers_files(directory: str | Path) -> None:
    import torch
    import transformers

    from .. import __version__

    directory = Path(directory)
    modules = [{"idx": 0, "name": "0", "path": "", "type": MODULE_TYPE}]
    config = {
        "model_type": "SentenceTransformer",
        "__version__": {"lame": __version__, "transformers": transformers.__version__, "pytorch": torch.__version__},
        "requirements": {"lame": {"specifier": f">={__version__}",
                                  "reason": f"the model's module class is {MODULE_TYPE}"}},
        "prompts": {"query": "", "document": ""},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    }
    (directory / MODULES_FILE).write_text(json.dumps(modules, indent=2) + "\n")
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
