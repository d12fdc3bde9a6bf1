"""Protocol-wide constants that several layers use: one definition each, units in the
name, the reason next to it. Constants that belong to one concern live in that concern's
module (e.g. ``core/shred.py`` header sizes, ``core/crypto.py`` ``SIGNATURE_BYTES`` and
``ZERO_SIGNATURE``); everything else imports from there instead of repeating a literal.
"""

from __future__ import annotations

#: A Solana packet's data: IPv6's minimum MTU (1280) minus the IPv6 (40) and UDP (8)
#: headers (agave ``solana_packet::PACKET_DATA_SIZE``). It bounds one shred packet, one
#: transaction and one vote transaction, and so every message field that holds one.
PACKET_DATA_BYTES = 1232

#: Shred header ``version`` written and expected by every node (spec/shred.md). Agave derives
#: it from the genesis hash and hard forks; Ambient has neither hard forks nor a second chain
#: sharing a port yet, so it is a constant.
SHRED_VERSION = 1

#: Transactions per PoH entry when a leader records a slot (agave batches up to 64; small
#: keeps each entry well inside a tick). spec/node.md.
TXS_PER_ENTRY = 8

__all__ = ["PACKET_DATA_BYTES", "SHRED_VERSION", "TXS_PER_ENTRY"]
