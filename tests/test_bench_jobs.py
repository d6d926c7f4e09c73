"""The benchmarks' worker-process runner: every job runs, each logs to its own file, a failure is named
and does not stop the others."""

import sys

from lame_testbed.bench.jobs import run_jobs


def test_jobs_run_with_their_threads_log_apart_and_failures_are_named(tmp_path):
    script = "import os, sys; print('threads', os.environ['OMP_NUM_THREADS'], sys.argv[1]); sys.exit(int(sys.argv[2]))"
    jobs = [(f"job{i}", [sys.executable, "-c", script, f"job{i}", str(code)]) for i, code in enumerate((0, 3, 0))]
    failed = run_jobs(jobs, tmp_path, parallel=2, threads=2, poll_seconds=0.05)
    assert failed == ["job1 (exit code 3)"]
    for i in range(3):  # the one that failed did not keep the third from running
        assert (tmp_path / f"job{i}.log").read_text().split() == ["threads", "2", f"job{i}"]
