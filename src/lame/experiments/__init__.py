"""Experiments built on the library: the offline digits benchmark, the quickstart and `lame bench`.

Nothing in the library (``lame.modeling``, ``lame.data``, ``lame.training``, ``lame.eval``,
``lame.embed``, ``lame.index``, ``lame.serve``) imports from here; experiments use the library's
public API like any user would.
"""
