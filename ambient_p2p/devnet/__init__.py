"""Local test networks and what they need: deterministic test identities and users
(:mod:`.users`), local genesis presets (:mod:`.genesis`) and the multi-process localnet
(:mod:`.localnet`). Fault-injection harnesses (e.g. equivocation) live here too, never in
the production validator.

Layering: this package sits beside ``commands/`` at the top (it composes ``net/``, ``ledger/``
and ``node/``); nothing in ``core/``, ``net/``, ``ledger/`` or ``node/`` imports it.
"""
