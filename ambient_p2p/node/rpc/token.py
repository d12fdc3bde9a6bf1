"""SPL Token and Token-2022 account data as agave's ``jsonParsed`` encoding shows it
(spec/rpc.md "Token accounts"; agave ``account-decoder/src/parse_token.rs`` and
``parse_token_extension.rs``, ``rpc/src/parsed_token_accounts.rs``).

The fixed base states (``Mint`` 82 bytes, ``Account`` 165 bytes, ``Multisig`` 355 bytes) are
decoded by ``solders.token.state`` (spl-token's own ``Pack::unpack``, with its checks:
initialized, valid ``COption`` tags and account state); only Token-2022's wrapping of that
base (``StateWithExtensions::unpack``: the zero padding up to 165 bytes, the account-type
byte, the TLV extension entries) is read here, because no installed package decodes it.
Pure functions over bytes: no bank, no RPC.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, cast

from ...core.crypto import decode_address, encode_address
from ...core.svm import SPL_TOKEN_2022_PROGRAM_ID, SPL_TOKEN_PROGRAM_ID

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    from solders.token.state import Mint, TokenAccount

    from ...core.svm import AccountMeta

#: jsonParsed's ``program`` name of each token program (agave ``ParsableAccount``).
TOKEN_PROGRAM_NAMES = {SPL_TOKEN_PROGRAM_ID: "spl-token", SPL_TOKEN_2022_PROGRAM_ID: "spl-token-2022"}
#: Wrapped SOL's mint: known with 9 decimals even where no account holds it (agave
#: ``get_mint_owner_and_additional_data``).
NATIVE_MINT_ID = decode_address("So11111111111111111111111111111111111111112")
NATIVE_MINT_DECIMALS = 9

MINT_BYTES = 82
ACCOUNT_BYTES = 165
MULTISIG_BYTES = 355
#: Token-2022's account-type byte, at offset 165 of a state longer than its base.
ACCOUNT_TYPE_MINT = 1
ACCOUNT_TYPE_ACCOUNT = 2
#: Offsets in a token account: mint, owner, the delegate's COption tag (u32 LE) and key.
ACCOUNT_MINT_OFFSET = 0
ACCOUNT_OWNER_OFFSET = 32
ACCOUNT_DELEGATE_TAG_OFFSET = 72
ACCOUNT_DELEGATE_OFFSET = 76
ACCOUNT_STATE_OFFSET = 108
#: A TLV entry's header: extension type u16 LE, value length u16 LE.
TLV_HEADER_BYTES = 4
#: Token-2022 ``ExtensionType`` numbers -> jsonParsed's ``extension`` names (agave ``UiExtension``,
#: serde camelCase). Types above the last are unknown: the whole list is then empty, as agave's
#: ``get_extension_types().unwrap_or_default()``.
EXTENSION_NAMES = (
    "uninitialized", "transferFeeConfig", "transferFeeAmount", "mintCloseAuthority", "confidentialTransferMint",
    "confidentialTransferAccount", "defaultAccountState", "immutableOwner", "memoTransfer", "nonTransferable",
    "interestBearingConfig", "cpiGuard", "permanentDelegate", "nonTransferableAccount", "transferHook",
    "transferHookAccount", "confidentialTransferFeeConfig", "confidentialTransferFeeAmount", "metadataPointer",
    "tokenMetadata", "groupPointer", "tokenGroup", "groupMemberPointer", "tokenGroupMember",
    "confidentialMintBurn", "scaledUiAmountConfig", "pausableConfig", "pausableAccount")
#: agave 2.2's name for an extension whose state does not decode (and, here, for the kinds not
#: decoded: confidential transfers, token metadata and groups, scaled amounts).
UNPARSEABLE_EXTENSION = "unparseableExtension"
ACCOUNT_STATES = ("uninitialized", "initialized", "frozen")


def is_token_program(owner: bytes) -> bool:
    return owner in TOKEN_PROGRAM_NAMES


def _split(data: bytes, base_len: int, account_type: int) -> tuple[bytes, bytes] | None:
    """(base state, TLV bytes) of ``data`` as spl-token-2022's ``StateWithExtensions::unpack``
    cuts it, None where it refuses: the multisig length, shorter than the base, padding that
    is not zero, a missing or different account-type byte."""
    if len(data) == MULTISIG_BYTES or len(data) < base_len:
        return None
    if len(data) == base_len:
        return data, b""
    type_at = ACCOUNT_BYTES  # the type byte follows the longest base, padded with zeros
    if len(data) <= type_at or any(data[base_len:type_at]) or data[type_at] != account_type:
        return None
    return data[:base_len], data[type_at + 1:]


#: The base states spl-token-2022's ``StateWithExtensions::unpack`` reads: solders class name ->
#: (base length, account-type byte). One reader serves both (``_unpack_state``).
_BASE_STATES = {"Mint": (MINT_BYTES, ACCOUNT_TYPE_MINT), "TokenAccount": (ACCOUNT_BYTES, ACCOUNT_TYPE_ACCOUNT)}


def _unpack_state(data: bytes, name: str) -> Any:
    """The solders ``solders.token.state.<name>`` of ``data``'s base state, None where
    ``StateWithExtensions::unpack`` refuses it (``_split``) or the base does not decode."""
    from solders.token import state

    base_len, account_type = _BASE_STATES[name]
    cut = _split(data, base_len, account_type)
    if cut is None:
        return None
    try:
        return getattr(state, name).from_bytes(cut[0])
    except ValueError:
        return None


def unpack_mint(data: bytes) -> Mint | None:
    return cast("Mint | None", _unpack_state(data, "Mint"))


def unpack_account(data: bytes) -> TokenAccount | None:
    return cast("TokenAccount | None", _unpack_state(data, "TokenAccount"))


def token_account_mint(data: bytes) -> bytes | None:
    """The mint of an initialized token account's data (agave ``get_token_account_mint``,
    spl-token-2022 ``Account::valid_account_data``), None for any other data. Also the
    ``TokenAccountState`` filter of the by-owner, by-delegate and by-mint scans."""
    if len(data) == ACCOUNT_BYTES and data[ACCOUNT_STATE_OFFSET] != 0:
        return data[:32]
    if len(data) > ACCOUNT_BYTES and len(data) != MULTISIG_BYTES and data[ACCOUNT_BYTES] == ACCOUNT_TYPE_ACCOUNT:
        return data[:32]
    return None


def decimals_of_mint_data(data: bytes) -> int | None:
    m = unpack_mint(data)
    return None if m is None else int(m.decimals)


def real_number_string_trimmed(amount: int, decimals: int) -> str:
    """agave ``real_number_string_trimmed``: the amount in whole tokens, exact, without
    trailing zeros (``"0.42"``, ``"1"``, ``"0.000000001"``)."""
    if decimals == 0:
        return str(amount)
    s = str(amount).rjust(decimals + 1, "0")
    return (s[:-decimals] + "." + s[-decimals:]).rstrip("0").rstrip(".")


def ui_token_amount(amount: int, decimals: int) -> dict[str, Any]:
    """agave ``UiTokenAmount``: ``uiAmount`` is ``amount as f64 / 10^decimals as f64`` (null
    where 10^decimals overflows a u64, as agave's ``checked_pow`` of a usize), the exact
    decimal in ``uiAmountString``. Interest-bearing and scaled-UI-amount mints are shown with
    their raw amounts (spec/rpc.md)."""
    dividend = 10 ** decimals
    return {"uiAmount": amount / float(dividend) if dividend < 2**64 else None, "decimals": decimals,
            "amount": str(amount), "uiAmountString": real_number_string_trimmed(amount, decimals)}


def _opt_key(raw: bytes) -> str | None:
    """spl-pod ``OptionalNonZeroPubkey``: 32 zero bytes are None."""
    return encode_address(raw) if any(raw) else None


def _coption(key: object) -> str | None:
    return None if key is None else encode_address(bytes(key))  # type: ignore[call-overload]


def _transfer_fee(raw: bytes) -> dict[str, int]:
    epoch, maximum, bps = struct.unpack("<QQH", raw)
    return {"epoch": epoch, "maximumFee": maximum, "transferFeeBasisPoints": bps}


def _extension_state(kind: int, v: bytes) -> dict[str, Any] | None:
    """The ``state`` of the fixed-size extensions decoded here; None: not decoded (or the
    value has the wrong length: agave's ``get_extension`` fails and says unparseable)."""
    n = len(v)
    if kind == 1 and n == 108:
        return {"transferFeeConfigAuthority": _opt_key(v[:32]), "withdrawWithheldAuthority": _opt_key(v[32:64]),
                "withheldAmount": struct.unpack_from("<Q", v, 64)[0], "olderTransferFee": _transfer_fee(v[72:90]),
                "newerTransferFee": _transfer_fee(v[90:108])}
    if kind == 2 and n == 8:
        return {"withheldAmount": struct.unpack("<Q", v)[0]}
    if kind == 3 and n == 32:
        return {"closeAuthority": _opt_key(v)}
    if kind == 6 and n == 1:
        return {"accountState": ACCOUNT_STATES[v[0]] if v[0] < 3 else ACCOUNT_STATES[0]}
    if kind == 8 and n == 1:
        return {"requireIncomingTransferMemos": v[0] != 0}
    if kind == 10 and n == 52:
        init_ts, pre_rate, last_ts, cur_rate = struct.unpack_from("<qhqh", v, 32)
        return {"rateAuthority": _opt_key(v[:32]), "initializationTimestamp": init_ts,
                "preUpdateAverageRate": pre_rate, "lastUpdateTimestamp": last_ts, "currentRate": cur_rate}
    if kind == 11 and n == 1:
        return {"lockCpi": v[0] != 0}
    if kind == 12 and n == 32:
        return {"delegate": _opt_key(v)}
    if kind == 14 and n == 64:
        return {"authority": _opt_key(v[:32]), "programId": _opt_key(v[32:])}
    if kind == 15 and n == 1:
        return {"transferring": v[0] != 0}
    if kind in (18, 20, 22) and n == 64:
        field = {18: "metadataAddress", 20: "groupAddress", 22: "memberAddress"}[kind]
        return {"authority": _opt_key(v[:32]), field: _opt_key(v[32:])}
    if kind == 26 and n == 33:
        return {"authority": _opt_key(v[:32]), "paused": v[32] != 0}
    return None


#: Extensions without state (agave's unit variants).
_STATELESS = frozenset({0, 7, 9, 13, 27})


def parse_extensions(tlv: bytes) -> list[dict[str, Any]]:
    """The TLV entries after the account-type byte, as agave lists them; malformed TLV data or
    an unknown type gives no list at all (``unwrap_or_default``), a type-0 header ends it."""
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(tlv):
        if len(tlv) < i + 2:
            return []
        kind = struct.unpack_from("<H", tlv, i)[0]
        if kind == 0:
            break
        if len(tlv) < i + TLV_HEADER_BYTES or kind >= len(EXTENSION_NAMES):
            return []
        length = struct.unpack_from("<H", tlv, i + 2)[0]
        end = i + TLV_HEADER_BYTES + length
        if end > len(tlv):
            return []
        if kind in _STATELESS:
            out.append({"extension": EXTENSION_NAMES[kind]})
        else:
            state = _extension_state(kind, tlv[i + TLV_HEADER_BYTES:end])
            out.append({"extension": UNPARSEABLE_EXTENSION} if state is None else
                       {"extension": EXTENSION_NAMES[kind], "state": state})
        i = end
    return out


def parse_token(data: bytes, mint_decimals: int | None) -> dict[str, Any] | None:
    """agave ``parse_token``: ``{"type": "account" | "mint" | "multisig", "info": ...}``, or
    None where agave's parser fails (then jsonParsed falls back to base64): a token account
    whose mint's decimals are unknown (``mint_decimals`` None), or data that is none of the
    three states. Tried in agave's order: account, mint, multisig."""
    from solders.token.state import Multisig, TokenAccountState

    acc_cut = _split(data, ACCOUNT_BYTES, ACCOUNT_TYPE_ACCOUNT)
    acc = unpack_account(data) if acc_cut is not None else None
    if acc is not None and acc_cut is not None:
        if mint_decimals is None:
            return None
        info: dict[str, Any] = {"mint": encode_address(bytes(acc.mint)), "owner": encode_address(bytes(acc.owner)),
                                "tokenAmount": ui_token_amount(acc.amount, mint_decimals)}
        if acc.delegate is not None:
            info["delegate"] = _coption(acc.delegate)
        info["state"] = ("initialized" if acc.state == TokenAccountState.Initialized else
                         "frozen" if acc.state == TokenAccountState.Frozen else "uninitialized")
        info["isNative"] = acc.is_native is not None
        if acc.is_native is not None:
            info["rentExemptReserve"] = ui_token_amount(acc.is_native, mint_decimals)
        if acc.delegate is not None:
            info["delegatedAmount"] = ui_token_amount(acc.delegated_amount, mint_decimals)
        if acc.close_authority is not None:
            info["closeAuthority"] = _coption(acc.close_authority)
        ext = parse_extensions(acc_cut[1])
        if ext:
            info["extensions"] = ext
        return {"type": "account", "info": info}
    mint_cut = _split(data, MINT_BYTES, ACCOUNT_TYPE_MINT)
    mint = unpack_mint(data) if mint_cut is not None else None
    if mint is not None and mint_cut is not None:
        info = {"mintAuthority": _coption(mint.mint_authority), "supply": str(mint.supply),
                "decimals": mint.decimals, "isInitialized": mint.is_initialized,
                "freezeAuthority": _coption(mint.freeze_authority)}
        ext = parse_extensions(mint_cut[1])
        if ext:
            info["extensions"] = ext
        return {"type": "mint", "info": info}
    if len(data) == MULTISIG_BYTES:
        try:
            ms = Multisig.from_bytes(data)
        except ValueError:
            return None
        return {"type": "multisig", "info": {
            "numRequiredSigners": ms.m, "numValidSigners": ms.n, "isInitialized": ms.is_initialized,
            "signers": [encode_address(bytes(s)) for s in ms.signers if any(bytes(s))]}}
    return None



def token_balances(metas: tuple[AccountMeta | None, ...] | None,
                   mint_decimals: Callable[[bytes], int | None]) -> list[dict[str, Any]] | None:
    """agave's ``preTokenBalances`` / ``postTokenBalances`` (``UiTransactionTokenBalance``)
    from a transaction record's key metas (core/bank.py ``TxRecord.pre_metas``): one entry
    per initialized token account a token program owns whose mint's decimals
    ``mint_decimals`` knows, in account-index order; None where the metas were not recorded
    (history read back from the blockstore)."""
    if metas is None:
        return None
    out: list[dict[str, Any]] = []
    for index, m in enumerate(metas):
        if m is None or not is_token_program(m.owner) or token_account_mint(m.data) is None:
            continue  # no token account (a mint, a multisig, uninitialized): agave skips it too
        acc = unpack_account(m.data)
        decimals = None if acc is None else mint_decimals(bytes(acc.mint))
        if acc is None or decimals is None:
            continue  # as agave where the mint is unknown
        out.append({"accountIndex": index, "mint": encode_address(bytes(acc.mint)),
                    "uiTokenAmount": ui_token_amount(int(acc.amount), decimals),
                    "owner": encode_address(bytes(acc.owner)), "programId": encode_address(m.owner)})
    return out
