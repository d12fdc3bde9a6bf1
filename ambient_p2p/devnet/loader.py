"""Deploying an SBF program with the upgradeable BPF loader (``BPFLoaderUpgradeab1e11...``,
spec/svm.md "Loaders and feature set"): the transactions ``solana program deploy`` sends, built
with solders. The loader's instructions are its bincode ``UpgradeableLoaderInstruction``
(agave ``loader-v3-interface``): ``InitializeBuffer`` (0), ``Write {offset u32, bytes}`` (1),
``DeployWithMaxDataLen {max_data_len u64}`` (2); account layouts: a buffer is a 37-byte
header (tag 1, ``Some(authority)``) then the ELF, a program account is 36 bytes (tag 2,
programdata address), a programdata account a 45-byte header (tag 3, slot, ``Some(authority)``)
then the ELF."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from ..core.crypto import Keypair, decode_address
from ..core.svm import BPF_LOADER_UPGRADEABLE_ID, SYSTEM_PROGRAM_ID, rent_exempt_minimum
from . import spl

BUFFER_HEADER_BYTES = 37
PROGRAM_ACCOUNT_BYTES = 36
PROGRAMDATA_HEADER_BYTES = 45
#: ELF bytes per Write instruction: fits one 1232-byte packet with its signatures and keys
WRITE_CHUNK_BYTES = 900
SYSVAR_RENT_ID = decode_address("SysvarRent111111111111111111111111111111111")
SYSVAR_CLOCK_ID = decode_address("SysvarC1ock11111111111111111111111111111111")
_CREATE_ACCOUNT = 0


def programdata_address(program: bytes) -> bytes:
    from solders.pubkey import Pubkey

    pda, _bump = Pubkey.find_program_address([program], Pubkey(BPF_LOADER_UPGRADEABLE_ID))
    return bytes(pda)


def _create(payer: bytes, new: bytes, space: int) -> object:
    return spl._ix(SYSTEM_PROGRAM_ID, [(payer, True, True), (new, True, True)],
                   struct.pack("<IQQ", _CREATE_ACCOUNT, rent_exempt_minimum(space), space) + BPF_LOADER_UPGRADEABLE_ID)


def deploy_transactions(payer: Keypair, program: Keypair, buffer: Keypair, elf: bytes,
                        blockhash: bytes) -> list[list[bytes]]:
    """The transactions deploying ``elf`` at ``program``'s address with ``payer`` as upgrade
    authority, in stages: each stage's transactions may land in any order, a stage only after
    the previous one landed (create and initialize the buffer; write the ELF in chunks;
    create the program account and deploy)."""
    if not elf.startswith(b"\x7fELF"):
        raise ValueError("not an ELF file")
    buf = buffer.pubkey
    stage1 = [spl.tx(payer, [_create(payer.pubkey, buf, BUFFER_HEADER_BYTES + len(elf)),
                             spl._ix(BPF_LOADER_UPGRADEABLE_ID, [(buf, False, True), (payer.pubkey, False, False)],
                                     struct.pack("<I", 0))], blockhash, [buffer])]
    stage2 = []
    for off in range(0, len(elf), WRITE_CHUNK_BYTES):
        chunk = elf[off: off + WRITE_CHUNK_BYTES]
        data = struct.pack("<IIQ", 1, off, len(chunk)) + chunk
        stage2.append(spl.tx(payer, [spl._ix(BPF_LOADER_UPGRADEABLE_ID, [(buf, False, True), (payer.pubkey, True, False)],
                                             data)], blockhash))
    pd = programdata_address(program.pubkey)
    deploy = spl._ix(BPF_LOADER_UPGRADEABLE_ID,
                     [(payer.pubkey, True, True), (pd, False, True), (program.pubkey, False, True), (buf, False, True),
                      (SYSVAR_RENT_ID, False, False), (SYSVAR_CLOCK_ID, False, False), (SYSTEM_PROGRAM_ID, False, False),
                      (payer.pubkey, True, False)],
                     struct.pack("<IQ", 2, len(elf)))
    stage3 = [spl.tx(payer, [_create(payer.pubkey, program.pubkey, PROGRAM_ACCOUNT_BYTES), deploy], blockhash,
                     [program])]
    return [stage1, stage2, stage3]


def invoke(payer: Keypair, program: bytes, data: bytes, blockhash: bytes,
           accounts: Sequence[tuple[bytes, bool, bool]] = ()) -> bytes:
    """A transaction calling ``program`` once with ``data``."""
    return spl.tx(payer, [spl._ix(program, list(accounts), data)], blockhash)
