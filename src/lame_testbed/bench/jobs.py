"""Benchmark runs in worker processes, a few at a time, each writing its own log."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def run_jobs(jobs: list[tuple[str, list[str]]], log_folder: Path, parallel: int, threads: int,
             poll_seconds: float = 0.5) -> list[str]:
    """Runs each ``(label, command)`` in its own process, ``parallel`` at a time, with ``threads`` torch
    (OpenMP/MKL) threads each and its output in ``log_folder/<label>.log``; returns the failed jobs as
    ``"<label> (exit code N)"``. A failed job does not stop the others: what finished is kept."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false"}
    running: list[tuple[subprocess.Popen, str]] = []
    failed: list[str] = []
    for label, command in jobs:
        while len(running) >= max(1, parallel):
            running = _reap(running, failed, poll_seconds)
        with open(log_folder / f"{label}.log", "w") as log:  # the child holds its own descriptor
            running.append((subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), label))
    while running:
        running = _reap(running, failed, poll_seconds)
    return failed


def _reap(running: list[tuple[subprocess.Popen, str]], failed: list[str], poll_seconds: float):
    time.sleep(poll_seconds)
    still = []
    for process, label in running:
        code = process.poll()
        if code is None:
            still.append((process, label))
        elif code != 0:
            failed.append(f"{label} (exit code {code})")
    return still
