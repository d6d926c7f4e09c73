"""The testbed of the LaME library: where it is measured, apart from what users import.

* :mod:`lame_testbed.digits` and :mod:`lame_testbed.families`: the offline digits benchmark (arithmetic
  levels 0-3 and task families one forward pass can learn) on scikit-learn's handwritten digits;
* :mod:`lame_testbed.digit_vlm`: the shipped reference VLM that reads those digits, its pretraining and
  its generative probe;
* :mod:`lame_testbed.quickstart`: ``lame quickstart``, the comparison every new user runs first;
* :mod:`lame_testbed.bench`: ``lame bench ...``, speed, memory, padding, training, serving and quality
  benchmarks.

The testbed uses the library's public API like any user would; the library never imports the testbed.
Its commands reach ``lame`` through the ``lame.commands`` entry point (:mod:`lame_testbed.commands`).
"""
