"""`lame bench <verb>`: speed (``speed``), encode throughput (``encode``), serving (``serve``) and
quality over seeds (``quality``), each a module here with a ``run_*`` function and a report."""
