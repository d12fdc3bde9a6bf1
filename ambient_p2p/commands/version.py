"""`version`: what this node is built from."""

from __future__ import annotations

import argparse
import importlib.metadata
import platform

from .. import __version__

_COMPONENTS = ("cbor2", "pynacl", "numpy", "torch", "transformers", "rocksdict", "solders", "libp2p", "trio")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("version", help="print version information", description="Print the node's version and its key components' versions.")
    p.set_defaults(func=_version)


def _version(args: argparse.Namespace) -> int:
    print(f"ambient-p2p {__version__}")
    print(f"python {platform.python_version()} ({platform.machine()})")
    for name in _COMPONENTS:
        try:
            print(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            print(f"{name} (not installed)")
    return 0
