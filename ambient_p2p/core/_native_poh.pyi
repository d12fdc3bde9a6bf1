"""Type stub of the optional compiled PoH hash chain ``_native_poh.c`` (built by scripts/setup.sh)."""

from typing_extensions import Buffer

def hash_n(start: Buffer, n: int, /) -> bytes: ...
