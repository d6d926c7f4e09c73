"""Settings dataclasses as command-line options (lame.cli_options): declared once, defaults kept."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import pytest

from lame.cli_options import add_options, from_options, option


@dataclass(frozen=True)
class Settings:
    batch_size: int = field(default=32, metadata=option("items per batch"))
    wait_ms: float = field(default=0.5, metadata=option("how long to wait"))
    api_key: str | None = field(default=None, metadata=option("the key"))
    hosts: tuple[str, ...] = field(default=(), metadata=option("a host (repeatable)", flag="--host", repeat=True))
    sizes: tuple[int, ...] = field(default=(1, 32), metadata=option("batch sizes"))
    mode: str = field(default="fast", metadata=option("how", choices=("fast", "exact")))
    quick: bool = field(default=False, metadata=option("small counts"))
    plots: bool = field(default=True, metadata=option("write the figures"))
    internal: int = 7  # no option metadata: not on the command line


def parser(**kwargs) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="x")
    add_options(p, Settings, **kwargs)
    return p


def test_every_option_takes_its_type_and_unset_options_keep_the_dataclass_default():
    args = parser().parse_args(["--batch-size", "4", "--host", "a", "--host", "b", "--sizes", "1", "8",
                                "--mode", "exact", "--quick", "--no-plots", "--wait-ms", "2"])
    assert from_options(Settings, args) == Settings(4, 2.0, None, ("a", "b"), (1, 8), "exact", True, False)
    assert from_options(Settings, parser().parse_args([])) == Settings()
    # a verb's own defaults fill what the command line left out, never what it gave
    assert from_options(Settings, parser().parse_args([]), batch_size=3).batch_size == 3
    assert from_options(Settings, parser().parse_args(["--batch-size", "5"]), batch_size=3).batch_size == 5


def test_help_shows_defaults_and_fields_without_metadata_stay_off_the_command_line():
    text = parser().format_help()
    assert "--batch-size N" in text and "items per batch (default: 32)" in text
    assert "(default: 1 32)" in text and "--plots, --no-plots" in text and "--internal" not in text
    assert "the key\n" in text  # no default shown for None


def test_bad_values_and_skipped_fields_are_refused_by_argparse(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["--mode", "slow"])
    assert "invalid choice: 'slow'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser(skip=("mode",)).parse_args(["--mode", "fast"])
    with pytest.raises(SystemExit):
        parser().parse_args(["--batch-size", "many"])
