"""Type stub of the optional compiled shred Merkle root ``_native_shred.c`` (built by scripts/setup.sh)."""

from typing_extensions import Buffer

def merkle_root(payload: Buffer, proof_offset: int, proof_size: int, index: int, /) -> bytes | None: ...
