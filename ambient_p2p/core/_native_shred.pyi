"""Type stub of the optional compiled shred helpers ``_native_shred.c`` (built by scripts/setup.sh)."""

from typing import Any

from typing_extensions import Buffer

CONSTANTS: dict[str, int]

def merkle_root(payload: Buffer, proof_offset: int, proof_size: int, index: int, /) -> bytes | None: ...
def parse(packet: bytes, variants: dict[int, Any], shred_type: type[Any], /) -> Any: ...
