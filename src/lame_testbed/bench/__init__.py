"""`lame bench <verb>`: speed, encode, padding, train, memory, serve and quality, each a module here with
a ``run_*`` function and a report; their options are declared in :mod:`.settings`, and
:mod:`lame_testbed.commands` makes them verbs."""
