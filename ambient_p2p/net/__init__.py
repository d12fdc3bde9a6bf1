"""Networking shell: py-libp2p host, gossipsub topics + validators, request/response
protocols and the node process that wires them (normative text: spec/network.md).

Importing this package does not import libp2p; the submodules do so lazily where needed.
"""
