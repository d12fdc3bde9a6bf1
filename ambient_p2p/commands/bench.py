"""``ambient-p2p bench NAME``: the CLI of the benchmark package :mod:`ambient_p2p.bench`
(each figure printed next to a reference measured in the same run). This module only
registers the group; every benchmark module there exposes ``add_parser(sub)``."""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    from ..bench import BENCH_MODULES

    grp = subparsers.add_parser("bench", help="benchmarks that back the figures in spec/, each next to an in-run reference")
    grp.set_defaults(_parser=grp)
    sub = grp.add_subparsers(dest="bench_command", metavar="NAME")
    for mod in BENCH_MODULES:
        mod.add_parser(sub)
