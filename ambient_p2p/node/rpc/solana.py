"""Solana JSON-RPC 2.0 over the node's banks (spec/rpc.md; agave ``rpc/src/rpc.rs``,
error codes and messages of ``rpc-client-api/src/custom_error.rs``).

:class:`SolanaRpc` answers one decoded JSON-RPC request object (or a batch) with the
response object; the HTTP layer (server.py) only moves bytes. Everything here runs on the
node's trio thread between awaits, so it reads the validator's banks consistently.

Commitment (spec/rpc.md "Commitment"): ``processed`` = the fork-choice best frozen bank,
``confirmed`` = the highest slot on the best fork with > 2/3 of LStake voted on it,
``finalized`` = the cluster-finalized slot (node.md rule 3). The default is ``finalized``,
as agave's.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import base58

from ...core import auction as au
from ...core import logit_pool as lp
from ...core import svm
from ...core.bank import (
    LAMPORTS_PER_SIGNATURE,
    MAX_PROCESSING_AGE,
    BlockError,
    TxRecord,
    parse_transaction,
)
from ...core.crypto import CryptoError, Keypair, decode_address, encode_address
from ...core.lstake import epoch_of
from ...core.work import Flag, WorkAccount
from ..roles import bid_json, pool_draw_json, query_json
from . import token
from .accounts import AccountView, account_view, program_accounts
from .txindex import BlockRecord, TxIndex, TxLocation

if TYPE_CHECKING:  # pragma: no cover
    from ...core.bank import Bank
    from ..validator import Validator

#: The Solana RPC API version our answers follow (``context.apiVersion``, ``getVersion``).
SOLANA_API_VERSION = "2.2.0"
#: agave's limits (rpc.rs): signatures per getSignatureStatuses, keys per
#: getMultipleAccounts, range of getBlocks, limit of getSignaturesForAddress.
MAX_SIGNATURE_STATUSES = 256
MAX_MULTIPLE_ACCOUNTS = 100
MAX_GET_BLOCKS_RANGE = 500_000
MAX_SIGNATURES_FOR_ADDRESS = 1000
#: Requests in one JSON-RPC batch (agave has no fixed limit; ours bounds the work of one body).
MAX_BATCH = 100
#: Largest airdrop of the localnet faucet (10 SOL-equivalent), lamports.
MAX_AIRDROP_LAMPORTS = 10 * 10**9
#: Largest account data (agave's MAX_PERMITTED_DATA_LENGTH, 10 MiB): Rent::minimum_balance
#: panics above it, so getMinimumBalanceForRentExemption refuses a longer data_len.
MAX_PERMITTED_DATA_LENGTH_BYTES = 10 * 1024 * 1024
#: Solana's rentEpoch for rent-exempt accounts (u64::MAX).
RENT_EPOCH_EXEMPT = 2**64 - 1

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = (
    -32700, -32600, -32601, -32602, -32603)
BLOCK_CLEANED_UP, PREFLIGHT_FAILURE, SIGNATURE_VERIFICATION_FAILURE, BLOCK_NOT_AVAILABLE = (
    -32001, -32002, -32003, -32004)
NODE_UNHEALTHY, SLOT_SKIPPED, TRANSACTION_HISTORY_NOT_AVAILABLE = -32005, -32007, -32011
UNSUPPORTED_TRANSACTION_VERSION, MIN_CONTEXT_SLOT_NOT_REACHED = -32015, -32016

#: Our bank's block-level rejects (core/bank.py BlockError.reason) as Solana TransactionError JSON
#: values (a unit variant by name; the rent check of the fee payer, account 0, with its field).
TX_ERRORS: dict[str, Any] = {
    "blockhash-not-found": "BlockhashNotFound",
    "already-processed": "AlreadyProcessed",
    "insufficient-funds-for-fee": "InsufficientFundsForFee",
    "insufficient-funds-for-rent": {"InsufficientFundsForRent": {"account_index": 0}},
    "bad-fee-payer": "InvalidAccountForFee",
    "bad-signature": "SignatureFailure",
    "unsupported-transaction": "UnsupportedVersion",
    "bad-transaction": "SanitizeFailure",
}
COMMITMENTS = {"processed": "processed", "confirmed": "confirmed", "finalized": "finalized",
               # deprecated names agave still maps (commitment_config.rs)
               "recent": "processed", "single": "confirmed", "singleGossip": "confirmed", "root": "finalized",
               "max": "finalized"}


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def json(self) -> dict[str, Any]:
        e: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            e["data"] = self.data
        return e


def invalid_params(msg: str) -> RpcError:
    return RpcError(INVALID_PARAMS, msg)


#: The SVM's error text (core/svm.py ``svm-error: <solders TransactionError>``) -> agave's JSON.
_SVM_IX_CUSTOM = re.compile(r"svm-error: InstructionError\(\((\d+), Tagged\(InstructionErrorCustom\((\d+)\)\)\)\)")
_SVM_IX_FIELDLESS = re.compile(r"svm-error: InstructionError\(\((\d+), Fieldless\((\w+)\)\)\)")
_SVM_IX_TAGGED = re.compile(r"svm-error: InstructionError\(\((\d+), Tagged\(InstructionError(\w+)\(")
_SVM_TX_FIELDLESS = re.compile(r"svm-error: Fieldless\.(\w+)")
_SVM_TX_RENT = re.compile(r"svm-error: InsufficientFundsForRent \{ account_index: (\d+) \}")


def instruction_error(reason: str) -> Any:
    """A transaction's error text (``TxResult.error``) as a Solana ``TransactionError`` JSON
    value. The SVM's errors keep agave's shape: ``{"InstructionError": [i, {"Custom": n}]}``,
    ``{"InstructionError": [i, "InvalidAccountData"]}`` (a unit variant by name; a variant with
    a payload other than ``Custom`` by name alone), a transaction-level unit variant by name
    (``"InvalidProgramForExecution"``). A native program's error (vote, auction): a transfer
    short of lamports is ``SystemError::ResultWithNegativeLamports`` (custom 1) as in agave,
    anything else ``GenericError`` (its text goes to the logs)."""
    m = _SVM_IX_CUSTOM.match(reason)
    if m:
        return {"InstructionError": [int(m[1]), {"Custom": int(m[2])}]}
    m = _SVM_IX_FIELDLESS.match(reason) or _SVM_IX_TAGGED.match(reason)
    if m:
        return {"InstructionError": [int(m[1]), m[2]]}
    m = _SVM_TX_FIELDLESS.match(reason)
    if m:
        return m[1]
    m = _SVM_TX_RENT.match(reason)
    if m:  # agave's rent-state check (spec/svm.md "Rent"): a transaction-level error with its field
        return {"InsufficientFundsForRent": {"account_index": int(m[1])}}
    return {"InstructionError": [0, {"Custom": 1} if "insufficient" in reason else "GenericError"]}


def error_message(err: Any, logs: list[str] | tuple[str, ...]) -> str:
    """agave's ``Display`` of a ``TransactionError`` as far as our record holds it: an
    instruction error is ``Error processing Instruction i: <why>``, where why is what the
    failing program's last log line says after ``failed: `` (the same ``InstructionError``
    text agave prints, ``custom program error: 0x1``); other errors by name."""
    if isinstance(err, dict) and "InstructionError" in err:
        i, e = err["InstructionError"]
        said = [ln.split(" failed: ", 1)[1] for ln in logs if ln.startswith("Program ") and " failed: " in ln]
        why = said[-1] if said else (f"custom program error: {e['Custom']:#x}" if isinstance(e, dict) else str(e))
        return f"Error processing Instruction {i}: {why}"
    if isinstance(err, dict) and "InsufficientFundsForRent" in err:  # agave's Display of it
        return (f"Transaction results in an account ({err['InsufficientFundsForRent']['account_index']}) with "
                "insufficient funds for rent")
    return str(err)


def tx_error(rec_error: str | None) -> Any:
    return None if rec_error is None else instruction_error(rec_error)


@dataclass
class RpcOptions:
    faucet: Keypair | None = None  # localnet only (commands/join.py decides)
    identity: bytes = bytes(32)
    version: str = "0"  # the node's version (getVersion's "ambient-p2p"), from the composition root


class SolanaRpc:
    """The JSON-RPC methods (``METHODS``) over a validator (see the module docstring)."""

    def __init__(self, v: Validator, index: TxIndex, opts: RpcOptions,
                 submit: Callable[[bytes], Awaitable[None]], cluster: Callable[[], list[dict[str, Any]]]) -> None:
        self.v, self.index, self.opts, self.submit, self.cluster = v, index, opts, submit, cluster
        self.requests = 0
        self.errors = 0
        #: the composed node's status (the control command's JSON), set by the RPC extension
        self.node_status: Callable[[], dict[str, Any]] | None = None

    # -- envelope ----------------------------------------------------------------------------
    async def handle_body(self, body: bytes) -> Any:
        """A raw HTTP body -> the JSON response (None: a batch of notifications only)."""
        try:
            req = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return _error_response(None, RpcError(PARSE_ERROR, "Parse error"))
        if isinstance(req, list):
            if not req:
                return _error_response(None, RpcError(INVALID_REQUEST, "Invalid request"))
            if len(req) > MAX_BATCH:
                return _error_response(None, RpcError(INVALID_REQUEST, f"Invalid request: batch over {MAX_BATCH}"))
            out = [await self.handle(r) for r in req]
            return [o for o in out if o is not None] or None
        return await self.handle(req)

    async def handle(self, req: Any) -> dict[str, Any] | None:
        self.requests += 1
        rid = req.get("id") if isinstance(req, dict) else None
        if not isinstance(rid, (str, int, float, type(None))) or isinstance(rid, bool):
            rid = None
        if not isinstance(req, dict) or req.get("jsonrpc") != "2.0" or not isinstance(req.get("method"), str):
            self.errors += 1
            return _error_response(rid, RpcError(INVALID_REQUEST, "Invalid request"))
        method = req["method"]
        params = req.get("params")
        if params is None:
            params = []
        if not isinstance(params, list):
            self.errors += 1
            return _error_response(rid, invalid_params("Invalid params: invalid type: map, expected a sequence"))
        notification = "id" not in req  # answered by nothing, not even an error (JSON-RPC 2.0)
        fn = METHODS.get(method)
        if fn is None:
            self.errors += 1
            return None if notification else _error_response(rid, RpcError(METHOD_NOT_FOUND, "Method not found"))
        try:
            result = await fn(self, params)
        except RpcError as exc:
            self.errors += 1
            return None if notification else _error_response(rid, exc)
        if notification:
            return None
        return {"jsonrpc": "2.0", "result": result, "id": rid}

    # -- banks by commitment -----------------------------------------------------------------
    def commitment_of(self, cfg: dict[str, Any], default: str = "finalized") -> str:
        c = cfg.get("commitment")
        if c is None:
            return default
        if not isinstance(c, str) or c not in COMMITMENTS:
            raise invalid_params(f"Invalid params: unknown variant `{c}`, expected one of `processed`, "
                                 "`confirmed`, `finalized`")
        return COMMITMENTS[c]

    def slot_of(self, commitment: str) -> int:
        v = self.v
        if commitment == "processed":
            return v.cons.processed_slot()
        if commitment == "confirmed":
            return v.cons.confirmed_slot()
        return v.finalized_slot()

    def bank_for(self, cfg: dict[str, Any], default: str = "finalized") -> Bank:
        commitment = self.commitment_of(cfg, default)
        if not self.v.loaded:
            raise RpcError(NODE_UNHEALTHY, "Node is unhealthy", {"numSlotsBehind": None})
        slot = self.slot_of(commitment)
        bank = self.bank_at(slot)
        if bank is None:
            raise RpcError(NODE_UNHEALTHY, "Node is unhealthy", {"numSlotsBehind": None})
        mcs = cfg.get("minContextSlot")
        if mcs is not None:
            if not isinstance(mcs, int) or isinstance(mcs, bool) or mcs < 0:
                raise invalid_params("Invalid params: minContextSlot must be a slot number")
            if bank.slot < mcs:
                raise RpcError(MIN_CONTEXT_SLOT_NOT_REACHED, "Minimum context slot has not been reached",
                               {"contextSlot": bank.slot})
        return bank

    def bank_at(self, slot: int) -> Bank | None:
        res = self.v.banks.get(slot)
        if res is not None:
            return res.bank
        b = self.index.banks.get(slot)
        if b is not None:
            return b
        lower = [s for s in self.index.banks if s <= slot]  # the closest older frozen bank we hold
        return self.index.banks[max(lower)] if lower else None

    def ctx(self, bank: Bank, value: Any) -> dict[str, Any]:
        return {"context": {"apiVersion": SOLANA_API_VERSION, "slot": bank.slot}, "value": value}

    def height(self, bank: Bank) -> int:
        h = self.index.heights.get(bank.slot)
        return h if h is not None else self.index.height_of(bank)

    def on_best_fork(self, slot: int) -> bool:
        best = self.bank_at(self.v.cons.processed_slot())
        if best is None:
            return False
        return slot == best.slot or slot in best.slot_hashes or self.v.bs.is_root(slot)

    def confirmation_status(self, slot: int) -> str:
        if slot <= self.v.finalized_slot():
            return "finalized"
        if slot <= self.v.cons.confirmed_slot():
            return "confirmed"
        return "processed"

    def find_tx(self, sig: bytes, least: str) -> TxLocation | None:
        """The transaction with first signature ``sig`` on the best fork at commitment ``least`` or higher."""
        order = {"processed": 0, "confirmed": 1, "finalized": 2}
        for loc in self.index.locations(sig):
            if self.on_best_fork(loc.block.slot) and \
                    order[self.confirmation_status(loc.block.slot)] >= order[least]:
                return loc
        return None


def _error_response(rid: Any, e: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": e.json(), "id": rid}


# -- parameter helpers ----------------------------------------------------------------------
def _arg(params: list[Any], i: int, name: str) -> Any:
    if len(params) <= i or params[i] is None:
        raise invalid_params(f"Invalid params: missing field `{name}`" if i == 0 else
                             f"Invalid params: invalid length {len(params)}, expected at least {i + 1}")
    return params[i]


def _cfg(params: list[Any], i: int) -> dict[str, Any]:
    if len(params) <= i or params[i] is None:
        return {}
    c = params[i]
    if not isinstance(c, dict):
        raise invalid_params(f"Invalid params: invalid type: {_json_type(c)}, expected a config map")
    return {k: v for k, v in c.items() if v is not None}  # an explicit null is the default


def _json_type(x: Any) -> str:
    return {bool: "boolean", int: "integer", float: "floating point", str: "string", list: "sequence",
            dict: "map"}.get(type(x), "null")


def _pubkey(x: Any) -> bytes:
    if not isinstance(x, str):
        raise invalid_params(f"Invalid params: invalid type: {_json_type(x)}, expected a string")
    try:
        return decode_address(x)
    except (CryptoError, ValueError):
        raise invalid_params("Invalid param: Invalid") from None


def _uint(x: Any, name: str) -> int:
    if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x < 2**64:
        raise invalid_params(f"Invalid params: {name} must be an unsigned 64-bit integer")
    return x


def _signature(x: Any) -> bytes:
    if not isinstance(x, str):
        raise invalid_params(f"Invalid params: invalid type: {_json_type(x)}, expected a string")
    try:
        raw = base58.b58decode(x)
    except ValueError:
        raw = b""
    if len(raw) != 64:
        raise invalid_params("Invalid param: Invalid")
    return raw


def _account_value(rpc: SolanaRpc, bank: Bank, key: bytes, encoding: str) -> dict[str, Any] | None:
    view = account_view(bank, key)
    return None if view is None else _account_json(view, encoding, bank=bank)


def mint_decimals(bank: Bank, mint: bytes) -> int | None:
    """The decimals of ``mint`` in ``bank`` (agave ``get_mint_owner_and_additional_data``:
    wrapped SOL's mint is known without an account; any account whose data unpacks as a mint
    counts, whoever owns it), None if there is none."""
    if mint == token.NATIVE_MINT_ID:
        return token.NATIVE_MINT_DECIMALS
    view = account_view(bank, mint)
    return None if view is None else token.decimals_of_mint_data(view.data)


def _parsed_data(view: AccountView, bank: Bank | None) -> dict[str, Any] | None:
    """jsonParsed's ``data`` object of ``view`` (agave ``parse_account_data``), None where no
    parser knows the account (then the data falls back to base64)."""
    raw = view.data
    if view.owner == au.AUCTION_PROGRAM_ID and raw[:1] == bytes([au.Kind.QUERY]):
        return {"program": "ambient-auction", "space": len(raw),
                "parsed": {"type": "query", "info": query_json(au.QueryAccount.unpack(raw))}}
    if bank is not None and token.is_token_program(view.owner):
        mint = token.token_account_mint(raw)
        parsed = token.parse_token(raw, mint_decimals(bank, mint) if mint is not None else None)
        if parsed is not None:
            return {"program": token.TOKEN_PROGRAM_NAMES[view.owner], "parsed": parsed, "space": len(raw)}
    return None


def _account_json(view: AccountView, encoding: str, data_slice: tuple[int, int] | None = None,
                  bank: Bank | None = None) -> dict[str, Any]:
    """An account in agave's ``UiAccount`` shape; ``bank`` (the one read) gives jsonParsed
    token accounts their mint's decimals."""
    raw = view.data
    out: dict[str, Any] = {"lamports": view.lamports, "owner": encode_address(view.owner),
                           "executable": view.executable, "rentEpoch": RENT_EPOCH_EXEMPT, "space": len(raw)}
    if data_slice is not None:
        raw = raw[data_slice[0]:data_slice[0] + data_slice[1]]
    parsed = _parsed_data(view, bank) if encoding == "jsonParsed" and data_slice is None else None
    if parsed is not None:
        out["data"] = parsed
    elif encoding == "base58":
        out["data"] = [base58.b58encode(raw).decode(), "base58"]
    else:  # base64, and jsonParsed of an account no parser knows (agave falls back to base64)
        out["data"] = [base64.b64encode(raw).decode(), "base64"]
    return out


def _encoding(cfg: dict[str, Any], default: str, allowed: tuple[str, ...]) -> str:
    enc = cfg.get("encoding", default) or default
    if enc not in allowed:
        raise invalid_params(f"Invalid params: unknown variant `{enc}`, expected one of "
                             + ", ".join(f"`{a}`" for a in allowed))
    return str(enc)


def _decode_wire(data: Any, encoding: str) -> bytes:
    if not isinstance(data, str):
        raise invalid_params(f"Invalid params: invalid type: {_json_type(data)}, expected a string")
    try:
        if encoding == "base58":
            return base58.b58decode(data)
        return base64.b64decode(data, validate=True)
    except (ValueError, binascii.Error):
        raise invalid_params(f"invalid {encoding} encoding: {data[:32]!r}") from None


def _tx_json(raw: bytes) -> tuple[Any, Any]:
    """(transaction in ``json`` encoding, version)."""
    from solders.message import MessageV0
    from solders.transaction import VersionedTransaction

    tx = VersionedTransaction.from_bytes(raw)
    msg = tx.message
    hdr = msg.header
    m: dict[str, Any] = {
        "accountKeys": [str(k) for k in msg.account_keys],
        "header": {"numRequiredSignatures": hdr.num_required_signatures,
                   "numReadonlySignedAccounts": hdr.num_readonly_signed_accounts,
                   "numReadonlyUnsignedAccounts": hdr.num_readonly_unsigned_accounts},
        "recentBlockhash": str(msg.recent_blockhash),
        "instructions": [{"programIdIndex": ix.program_id_index, "accounts": list(bytes(ix.accounts)),
                          "data": base58.b58encode(bytes(ix.data)).decode(), "stackHeight": None}
                         for ix in msg.instructions],
    }
    version: Any = "legacy"
    if isinstance(msg, MessageV0):
        m["addressTableLookups"] = []
        version = 0
    return {"signatures": [str(s) for s in tx.signatures], "message": m}, version


def _meta(t: TxRecord, mint_decimals: Callable[[bytes], int | None]) -> dict[str, Any]:
    err = tx_error(t.result.error)
    return {"err": err, "status": {"Ok": None} if err is None else {"Err": err}, "fee": t.result.fee,
            "preBalances": list(t.pre_balances), "postBalances": list(t.post_balances), "innerInstructions": [],
            # the programs' logs (SVM transactions, spec/svm.md); a native program's error as one line
            "logMessages": list(t.result.logs) or ([] if t.result.error is None else [f"Program log: {t.result.error}"]),
            "preTokenBalances": token.token_balances(t.pre_metas, mint_decimals),
            "postTokenBalances": token.token_balances(t.post_metas, mint_decimals), "rewards": [],
            "loadedAddresses": {"writable": [], "readonly": []}, "computeUnitsConsumed": t.result.compute_units}


def _mint_decimals(rpc: SolanaRpc) -> Callable[[bytes], int | None]:
    """A mint's decimals in the newest processed bank (decimals never change once a mint is
    initialized; a mint closed since is unknown), for pre/postTokenBalances."""
    bank = rpc.bank_at(rpc.slot_of("processed"))
    seen: dict[bytes, int | None] = {}

    def of(mint: bytes) -> int | None:
        if mint not in seen:
            m = None if bank is None else bank.account_meta.get(mint)
            seen[mint] = None if m is None else token.decimals_of_mint_data(m.data)
        return seen[mint]
    return of


def _encoded_tx(t: TxRecord, encoding: str, max_version: int | None,
                mint_decimals: Callable[[bytes], int | None]) -> dict[str, Any]:
    tj, version = _tx_json(t.raw)
    if version != "legacy" and max_version is None:
        raise RpcError(UNSUPPORTED_TRANSACTION_VERSION,
                       "Transaction version (0) is not supported by the requesting client. Please try the request "
                       "again with the following configuration parameter: \"maxSupportedTransactionVersion\": 0")
    if encoding == "base64":
        tx: Any = [base64.b64encode(t.raw).decode(), "base64"]
    elif encoding == "base58":
        tx = [base58.b58encode(t.raw).decode(), "base58"]
    else:
        tx = tj
    out: dict[str, Any] = {"transaction": tx, "meta": _meta(t, mint_decimals)}
    if max_version is not None:
        out["version"] = version
    return out


def _max_version(cfg: dict[str, Any]) -> int | None:
    mv = cfg.get("maxSupportedTransactionVersion")
    if mv is not None and (not isinstance(mv, int) or isinstance(mv, bool) or mv < 0):
        raise invalid_params("Invalid params: maxSupportedTransactionVersion must be a version number")
    return mv


# -- methods ---------------------------------------------------------------------------------
async def get_health(rpc: SolanaRpc, params: list[Any]) -> Any:
    if not rpc.v.loaded:
        raise RpcError(NODE_UNHEALTHY, "Node is unhealthy", {"numSlotsBehind": None})
    if rpc.v.behind():
        cur = rpc.v.slot_at(rpc.v.clock.wall_ms())
        n = max(0, cur - rpc.v.cons.processed_slot())
        raise RpcError(NODE_UNHEALTHY, f"Node is behind by {n} slots", {"numSlotsBehind": n})
    return "ok"


async def get_version(rpc: SolanaRpc, params: list[Any]) -> Any:
    return {"solana-core": SOLANA_API_VERSION, "feature-set": 0, "ambient-p2p": rpc.opts.version}


async def get_genesis_hash(rpc: SolanaRpc, params: list[Any]) -> Any:
    return base58.b58encode(rpc.v.genesis.hash()).decode()


async def get_identity(rpc: SolanaRpc, params: list[Any]) -> Any:
    return {"identity": encode_address(rpc.v.kp.pubkey)}


async def get_slot(rpc: SolanaRpc, params: list[Any]) -> Any:
    return rpc.bank_for(_cfg(params, 0)).slot


async def get_block_height(rpc: SolanaRpc, params: list[Any]) -> Any:
    return rpc.height(rpc.bank_for(_cfg(params, 0)))


async def get_transaction_count(rpc: SolanaRpc, params: list[Any]) -> Any:
    bank = rpc.bank_for(_cfg(params, 0))
    return sum(len(b.txs) for s, b in rpc.index.blocks.items() if s <= bank.slot and rpc.on_best_fork(s))


async def get_epoch_info(rpc: SolanaRpc, params: list[Any]) -> Any:
    bank = rpc.bank_for(_cfg(params, 0))
    spe = rpc.v.genesis.epoch.slots_per_epoch
    return {"absoluteSlot": bank.slot, "blockHeight": rpc.height(bank), "epoch": epoch_of(bank.slot, spe),
            "slotIndex": bank.slot % spe, "slotsInEpoch": spe,
            "transactionCount": await get_transaction_count(rpc, params)}


async def get_epoch_schedule(rpc: SolanaRpc, params: list[Any]) -> Any:
    spe = rpc.v.genesis.epoch.slots_per_epoch
    return {"slotsPerEpoch": spe, "leaderScheduleSlotOffset": spe, "warmup": False, "firstNormalEpoch": 0,
            "firstNormalSlot": 0}


async def get_balance(rpc: SolanaRpc, params: list[Any]) -> Any:
    key = _pubkey(_arg(params, 0, "pubkey"))
    bank = rpc.bank_for(_cfg(params, 1))
    return rpc.ctx(bank, bank.balance(key))


ACCOUNT_ENCODINGS = ("base64", "base58", "jsonParsed", "binary")


async def get_account_info(rpc: SolanaRpc, params: list[Any]) -> Any:
    key = _pubkey(_arg(params, 0, "pubkey"))
    cfg = _cfg(params, 1)
    enc = _encoding(cfg, "binary", ACCOUNT_ENCODINGS)
    bank = rpc.bank_for(cfg)
    return rpc.ctx(bank, _account_value(rpc, bank, key, "base58" if enc == "binary" else enc))


async def get_multiple_accounts(rpc: SolanaRpc, params: list[Any]) -> Any:
    keys = _arg(params, 0, "pubkeys")
    if not isinstance(keys, list):
        raise invalid_params(f"Invalid params: invalid type: {_json_type(keys)}, expected a sequence")
    if len(keys) > MAX_MULTIPLE_ACCOUNTS:
        raise invalid_params(f"Too many inputs provided; max {MAX_MULTIPLE_ACCOUNTS}")
    parsed = [_pubkey(k) for k in keys]
    cfg = _cfg(params, 1)
    enc = _encoding(cfg, "base64", ACCOUNT_ENCODINGS)
    bank = rpc.bank_for(cfg)
    return rpc.ctx(bank, [_account_value(rpc, bank, k, enc) for k in parsed])


#: agave rpc.rs: MAX_GET_PROGRAM_ACCOUNT_FILTERS; filter.rs: MAX_DATA_SIZE (decoded memcmp bytes),
#: MAX_DATA_BASE58_SIZE, MAX_DATA_BASE64_SIZE
MAX_PROGRAM_ACCOUNT_FILTERS = 4
MAX_MEMCMP_BYTES = 128
MAX_MEMCMP_BASE58_CHARS = 175
MAX_MEMCMP_BASE64_CHARS = 172


def _memcmp(f: Any) -> tuple[int, bytes]:
    if not isinstance(f, dict) or not isinstance(f.get("offset"), int) or isinstance(f["offset"], bool) \
            or f["offset"] < 0 or not isinstance(f.get("bytes"), str):
        raise invalid_params("Invalid params: memcmp needs an offset (usize) and bytes (a string)")
    enc = f.get("encoding") or "base58"
    text = f["bytes"]
    if enc not in ("base58", "base64"):
        raise invalid_params(f"Invalid params: unknown variant `{enc}`, expected `base58` or `base64`")
    if len(text) > (MAX_MEMCMP_BASE58_CHARS if enc == "base58" else MAX_MEMCMP_BASE64_CHARS):
        raise invalid_params(f"Invalid param: encoded binary data should be less than {MAX_MEMCMP_BYTES + 1} bytes")
    data = _decode_wire(text, enc)
    if len(data) > MAX_MEMCMP_BYTES:
        raise invalid_params(f"Invalid param: encoded binary data should be less than {MAX_MEMCMP_BYTES + 1} bytes")
    return int(f["offset"]), data


def _program_filters(raw: Any) -> list[tuple[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise invalid_params(f"Invalid params: invalid type: {_json_type(raw)}, expected a sequence")
    if len(raw) > MAX_PROGRAM_ACCOUNT_FILTERS:
        raise invalid_params(f"Too many filters provided; max {MAX_PROGRAM_ACCOUNT_FILTERS}")
    out: list[tuple[str, Any]] = []
    for f in raw:
        if not isinstance(f, dict) or len(f) != 1:
            raise invalid_params("Invalid params: a filter is one of dataSize, memcmp")
        [(kind, val)] = f.items()
        if kind == "dataSize":
            out.append(("dataSize", _uint(val, "dataSize")))
        elif kind == "memcmp":
            out.append(("memcmp", _memcmp(val)))
        else:
            raise invalid_params(f"Invalid params: unknown variant `{kind}`, expected `dataSize` or `memcmp`")
    return out


def _passes(data: bytes, filters: list[tuple[str, Any]]) -> bool:
    for kind, val in filters:
        if kind == "dataSize":
            if len(data) != val:
                return False
        else:
            off, want = val
            if data[off:off + len(want)] != want:
                return False
    return True


async def get_program_accounts(rpc: SolanaRpc, params: list[Any]) -> Any:
    """agave's getProgramAccounts: the accounts ``program`` owns at the commitment's bank,
    with ``dataSize``/``memcmp`` filters (all must match), ``dataSlice``, ``withContext``."""
    program = _pubkey(_arg(params, 0, "program_id"))
    cfg = _cfg(params, 1)
    enc = _encoding(cfg, "binary", ACCOUNT_ENCODINGS)
    filters = _program_filters(cfg.get("filters"))
    data_slice = _data_slice(cfg)
    with_ctx = cfg.get("withContext", False)
    if not isinstance(with_ctx, bool):
        raise invalid_params("Invalid params: withContext must be a boolean")
    bank = rpc.bank_for(cfg)
    out = _keyed_accounts(bank, ((k, v) for k, v in program_accounts(bank, program) if _passes(v.data, filters)),
                          enc, data_slice, token_only=token.is_token_program(program))
    return rpc.ctx(bank, out) if with_ctx else out


def _data_slice(cfg: dict[str, Any]) -> tuple[int, int] | None:
    sl = cfg.get("dataSlice")
    if sl is None:
        return None
    if not isinstance(sl, dict):
        raise invalid_params(f"Invalid params: invalid type: {_json_type(sl)}, expected a data slice")
    return _uint(sl.get("offset"), "offset"), _uint(sl.get("length"), "length")


def _keyed_accounts(bank: Bank, accounts: Iterator[tuple[bytes, AccountView]], enc: str,
                    data_slice: tuple[int, int] | None, token_only: bool) -> list[dict[str, Any]]:
    """agave's ``RpcKeyedAccount`` list. With jsonParsed over a token program's accounts,
    those that do not parse are left out (agave ``get_parsed_token_accounts``)."""
    out = []
    for k, v in accounts:
        acc = _account_json(v, "base58" if enc == "binary" else enc, data_slice, bank)
        if token_only and enc == "jsonParsed" and data_slice is None and not isinstance(acc["data"], dict):
            continue
        out.append({"pubkey": encode_address(k), "account": acc})
    return out


# -- SPL Token (spec/rpc.md "Token accounts"; agave rpc.rs get_token_*) -----------------------
#: agave rpc.rs NUM_LARGEST_ACCOUNTS
NUM_LARGEST_ACCOUNTS = 20


def _token_account(bank: Bank, key: bytes) -> tuple[Any, int]:
    """(the token account at ``key``, its mint's decimals), or agave's -32602 errors."""
    view = account_view(bank, key)
    if view is None:
        raise invalid_params("Invalid param: could not find account")
    acc = token.unpack_account(view.data) if token.is_token_program(view.owner) else None
    if acc is None:
        raise invalid_params("Invalid param: not a Token account")
    return acc, _mint_owner_and_decimals(bank, bytes(acc.mint))[1]


def _mint_owner_and_decimals(bank: Bank, mint: bytes) -> tuple[bytes, int]:
    """agave ``get_mint_owner_and_additional_data``: wrapped SOL's mint is SPL Token's with 9
    decimals; any other must exist and unpack as a mint."""
    if mint == token.NATIVE_MINT_ID:
        return svm.SPL_TOKEN_PROGRAM_ID, token.NATIVE_MINT_DECIMALS
    view = account_view(bank, mint)
    if view is None:
        raise invalid_params("Invalid param: could not find mint")
    decimals = token.decimals_of_mint_data(view.data)
    if decimals is None:
        raise invalid_params("Invalid param: Token mint could not be unpacked")
    return view.owner, decimals


async def get_token_account_balance(rpc: SolanaRpc, params: list[Any]) -> Any:
    key = _pubkey(_arg(params, 0, "pubkey"))
    bank = rpc.bank_for(_cfg(params, 1))
    acc, decimals = _token_account(bank, key)
    return rpc.ctx(bank, token.ui_token_amount(acc.amount, decimals))


async def get_token_supply(rpc: SolanaRpc, params: list[Any]) -> Any:
    key = _pubkey(_arg(params, 0, "pubkey"))
    bank = rpc.bank_for(_cfg(params, 1))
    view = account_view(bank, key)
    if view is None:
        raise invalid_params("Invalid param: could not find account")
    if not token.is_token_program(view.owner):
        raise invalid_params("Invalid param: not a Token mint")
    mint = token.unpack_mint(view.data)
    if mint is None:
        raise invalid_params("Invalid param: mint could not be unpacked")
    return rpc.ctx(bank, token.ui_token_amount(mint.supply, mint.decimals))


def _token_filter(bank: Bank, raw: Any) -> tuple[bytes, bytes | None]:
    """(token program, mint or None) of ``{"mint": M}`` or ``{"programId": P}`` (agave
    ``get_token_program_id_and_mint``)."""
    if not isinstance(raw, dict) or len(raw) != 1 or not ({"mint", "programId"} & raw.keys()):
        raise invalid_params("Invalid params: the filter is {\"mint\": PUBKEY} or {\"programId\": PUBKEY}")
    if "mint" in raw:
        mint = _pubkey(raw["mint"])
        owner, _ = _mint_owner_and_decimals(bank, mint)
        if not token.is_token_program(owner):
            raise invalid_params("Invalid param: not a Token mint")
        return owner, mint
    program = _pubkey(raw["programId"])
    if not token.is_token_program(program):
        raise invalid_params("Invalid param: unrecognized Token program id")
    return program, None


def _token_accounts_by(rpc: SolanaRpc, params: list[Any], offset: int, tag: bytes) -> Any:
    """getTokenAccountsByOwner (``tag`` empty, key at the owner offset) and ...ByDelegate
    (``tag`` the delegate's COption Some tag, key at the delegate offset): initialized token
    accounts of the filter's program (and mint), in address order."""
    key = _pubkey(_arg(params, 0, "pubkey"))
    _arg(params, 1, "filter")
    cfg = _cfg(params, 2)
    enc = _encoding(cfg, "binary", ACCOUNT_ENCODINGS)
    data_slice = _data_slice(cfg)
    bank = rpc.bank_for(cfg)
    program, mint = _token_filter(bank, params[1])
    want = tag + key
    at = offset - len(tag)

    def match(data: bytes) -> bool:
        return token.token_account_mint(data) is not None and data[at:at + len(want)] == want and \
            (mint is None or data[:32] == mint)

    rows = ((k, v) for k, v in program_accounts(bank, program) if match(v.data))
    return rpc.ctx(bank, _keyed_accounts(bank, rows, enc, data_slice, token_only=True))


async def get_token_accounts_by_owner(rpc: SolanaRpc, params: list[Any]) -> Any:
    return _token_accounts_by(rpc, params, token.ACCOUNT_OWNER_OFFSET, b"")


async def get_token_accounts_by_delegate(rpc: SolanaRpc, params: list[Any]) -> Any:
    return _token_accounts_by(rpc, params, token.ACCOUNT_DELEGATE_OFFSET, (1).to_bytes(4, "little"))


async def get_token_largest_accounts(rpc: SolanaRpc, params: list[Any]) -> Any:
    """The 20 token accounts of a mint holding the most, largest first (agave: ties by
    address, the greater first)."""
    mint = _pubkey(_arg(params, 0, "pubkey"))
    bank = rpc.bank_for(_cfg(params, 1))
    owner, decimals = _mint_owner_and_decimals(bank, mint)
    if not token.is_token_program(owner):
        raise invalid_params("Invalid param: not a Token mint")
    held = []
    for k, v in program_accounts(bank, owner):
        if token.token_account_mint(v.data) == mint:
            acc = token.unpack_account(v.data)
            held.append((acc.amount if acc is not None else 0, k))
    top = sorted(held, reverse=True)[:NUM_LARGEST_ACCOUNTS]
    return rpc.ctx(bank, [{"address": encode_address(k), **token.ui_token_amount(a, decimals)} for a, k in top])


async def get_latest_blockhash(rpc: SolanaRpc, params: list[Any]) -> Any:
    bank = rpc.bank_for(_cfg(params, 0))
    return rpc.ctx(bank, {"blockhash": base58.b58encode(bank.last_blockhash).decode(),
                          "lastValidBlockHeight": rpc.height(bank) + MAX_PROCESSING_AGE})


async def is_blockhash_valid(rpc: SolanaRpc, params: list[Any]) -> Any:
    h = _arg(params, 0, "blockhash")
    bank = rpc.bank_for(_cfg(params, 1))
    raw = _hash(h)
    return rpc.ctx(bank, raw in bank.blockhashes[-MAX_PROCESSING_AGE:])


def _hash(h: Any) -> bytes:
    if not isinstance(h, str):
        raise invalid_params(f"Invalid params: invalid type: {_json_type(h)}, expected a string")
    try:
        raw = base58.b58decode(h)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise invalid_params("Invalid param: Invalid")
    return raw


async def get_fee_for_message(rpc: SolanaRpc, params: list[Any]) -> Any:
    from solders.message import from_bytes_versioned

    data = _decode_wire(_arg(params, 0, "message"), "base64")
    bank = rpc.bank_for(_cfg(params, 1))
    try:
        msg = from_bytes_versioned(data)
    except Exception:  # noqa: BLE001 - solders raises several error types for malformed input
        raise invalid_params("invalid transaction message: failed to deserialize") from None
    if bytes(msg.recent_blockhash) not in bank.blockhashes[-MAX_PROCESSING_AGE:]:
        return rpc.ctx(bank, None)  # as agave: the fee of a message with an unknown blockhash is null
    return rpc.ctx(bank, LAMPORTS_PER_SIGNATURE * msg.header.num_required_signatures)


async def get_minimum_balance_for_rent_exemption(rpc: SolanaRpc, params: list[Any]) -> Any:
    data_len = _uint(_arg(params, 0, "data_len"), "data_len")
    if data_len > MAX_PERMITTED_DATA_LENGTH_BYTES:
        raise invalid_params(f"Invalid params: data_len must be at most {MAX_PERMITTED_DATA_LENGTH_BYTES}")
    # agave's Rent::minimum_balance of the Rent sysvar the bank gives the SVM (one source:
    # core/svm.py; spec/svm.md "Rent"): wallets fund a new mint or token account with this
    # figure (solana-py's AsyncToken, web3.js's createMint)
    return svm.rent_sysvar().minimum_balance(data_len)


@dataclass
class Simulation:
    """A transaction executed on a scratch child of a bank (agave ``simulate_transaction``)."""

    err: Any
    logs: list[str]
    units: int
    bank: Bank | None  # the scratch bank after it ran (None: refused before execution)

    def value(self) -> dict[str, Any]:
        return {"err": self.err, "logs": self.logs, "accounts": None, "unitsConsumed": self.units,
                "returnData": None, "innerInstructions": None, "replacementBlockhash": None,
                "loadedAccountsDataSize": 0}


def _simulate(rpc: SolanaRpc, bank: Bank, raw: bytes, verify: bool) -> Simulation:
    """``raw`` executed on a scratch child of ``bank``: its error, the programs' logs (the
    SVM's; a native program's error as one ``Program log:`` line) and compute units."""
    leader = rpc.v.book.leader(bank.slot + 1) or bytes(32)
    scratch = bank.child(bank.slot + 1, leader)
    try:
        (res,) = scratch.process_transactions([raw], verify_signatures=verify)
    except BlockError as exc:
        return Simulation(TX_ERRORS.get(exc.reason, "SanitizeFailure"), [f"{exc.reason}: {exc.detail}"], 0, None)
    logs = list(res.logs)
    if res.error is not None and not logs:
        logs = [f"Program log: {res.error}"]
    return Simulation(None if res.error is None else instruction_error(res.error), logs, res.compute_units, scratch)


def _wire_tx(params: list[Any], cfg: dict[str, Any]) -> bytes:
    enc = _encoding(cfg, "base58", ("base58", "base64"))
    return _decode_wire(_arg(params, 0, "transaction"), enc)


def _parse_or_error(raw: bytes, verify: bool) -> None:
    try:
        parse_transaction(raw, verify_signatures=verify)
    except BlockError as exc:
        if exc.reason == "bad-signature":
            raise RpcError(SIGNATURE_VERIFICATION_FAILURE, "Transaction signature verification failure") from None
        raise invalid_params(f"failed to deserialize solana_transaction::versioned::VersionedTransaction: "
                             f"{exc.detail}") from None


async def send_transaction(rpc: SolanaRpc, params: list[Any]) -> Any:
    cfg = _cfg(params, 1)
    raw = _wire_tx(params, cfg)
    _parse_or_error(raw, verify=True)
    if not cfg.get("skipPreflight"):
        pcfg = {"commitment": cfg.get("preflightCommitment"), "minContextSlot": cfg.get("minContextSlot")}
        bank = rpc.bank_for(pcfg)
        sim = _simulate(rpc, bank, raw, verify=False)
        if sim.err is not None:
            raise RpcError(PREFLIGHT_FAILURE, f"Transaction simulation failed: {error_message(sim.err, sim.logs)}",
                           sim.value())
    await rpc.submit(raw)
    return base58.b58encode(raw[1:65]).decode()


async def simulate_transaction(rpc: SolanaRpc, params: list[Any]) -> Any:
    cfg = _cfg(params, 1)
    raw = _wire_tx(params, {"encoding": cfg.get("encoding")})
    verify = bool(cfg.get("sigVerify"))
    replace = bool(cfg.get("replaceRecentBlockhash"))
    if verify and replace:
        raise invalid_params("sigVerify may not be used with replaceRecentBlockhash")
    _parse_or_error(raw, verify=verify)
    want = _sim_accounts(cfg.get("accounts"), raw)
    bank = rpc.bank_for(cfg)
    if replace:
        raw = _with_blockhash(raw, bank.last_blockhash)
    sim = _simulate(rpc, bank, raw, verify=False)
    value = sim.value()
    if want is not None:
        keys, enc = want
        # agave: the accounts after a successful simulation; nulls after a failed one
        value["accounts"] = [None if sim.err is not None or sim.bank is None else
                             _account_value(rpc, sim.bank, k, enc) for k in keys]
    if replace:
        value["replacementBlockhash"] = {"blockhash": base58.b58encode(bank.last_blockhash).decode(),
                                         "lastValidBlockHeight": rpc.height(bank) + MAX_PROCESSING_AGE}
    return rpc.ctx(bank, value)


def _sim_accounts(raw_cfg: Any, tx: bytes) -> tuple[list[bytes], str] | None:
    """simulateTransaction's ``accounts`` config (agave): ``addresses`` (at most the
    transaction's account count) and an ``encoding`` (base64 default, jsonParsed; not base58)."""
    if raw_cfg is None:
        return None
    if not isinstance(raw_cfg, dict) or not isinstance(raw_cfg.get("addresses"), list):
        raise invalid_params("Invalid params: accounts needs addresses (a sequence)")
    enc = raw_cfg.get("encoding") or "base64"
    if enc in ("base58", "binary"):
        raise invalid_params("base58 encoding not supported")
    if enc not in ("base64", "jsonParsed"):
        raise invalid_params(f"Invalid params: unknown variant `{enc}`, expected one of `base64`, `jsonParsed`")
    from solders.transaction import VersionedTransaction

    n = len(VersionedTransaction.from_bytes(tx).message.account_keys)
    addresses = raw_cfg["addresses"]
    if len(addresses) > n:
        raise invalid_params(f"Too many accounts provided; max {n}")
    return [_pubkey(a) for a in addresses], str(enc)


def _with_blockhash(raw: bytes, blockhash: bytes) -> bytes:
    """``raw`` with its message's recent blockhash replaced (its signatures kept, so no
    longer valid: simulation only, as agave's ``replaceRecentBlockhash``)."""
    from solders.hash import Hash
    from solders.message import Message, MessageV0
    from solders.transaction import VersionedTransaction

    tx = VersionedTransaction.from_bytes(raw)
    m = tx.message
    h = Hash(blockhash)
    if isinstance(m, MessageV0):
        new: Message | MessageV0 = MessageV0(m.header, m.account_keys, h, m.instructions, m.address_table_lookups)
    else:
        hdr = m.header
        new = Message.new_with_compiled_instructions(
            hdr.num_required_signatures, hdr.num_readonly_signed_accounts, hdr.num_readonly_unsigned_accounts,
            m.account_keys, h, m.instructions)
    return bytes(VersionedTransaction.populate(new, tx.signatures))


async def get_signature_statuses(rpc: SolanaRpc, params: list[Any]) -> Any:
    sigs = _arg(params, 0, "signatures")
    if not isinstance(sigs, list):
        raise invalid_params(f"Invalid params: invalid type: {_json_type(sigs)}, expected a sequence")
    if len(sigs) > MAX_SIGNATURE_STATUSES:
        raise invalid_params(f"Too many inputs provided; max {MAX_SIGNATURE_STATUSES}")
    parsed = [_signature(s) for s in sigs]
    cfg = _cfg(params, 1)
    history = bool(cfg.get("searchTransactionHistory"))
    bank = rpc.bank_for({"commitment": "processed"})
    best_height = rpc.height(bank)
    out: list[Any] = []
    for sig in parsed:
        loc = rpc.find_tx(sig, "processed")
        # without searchTransactionHistory agave answers from the status cache only
        # (the last MAX_RECENT_BLOCKHASHES slots of the best fork)
        if loc is None or (not history and sig not in bank.status_cache and loc.block.slot != bank.slot):
            out.append(None)
            continue
        st = rpc.confirmation_status(loc.block.slot)
        err = tx_error(loc.record.result.error)
        out.append({"slot": loc.block.slot,
                    "confirmations": None if st == "finalized" else max(0, best_height - loc.block.block_height),
                    "err": err, "status": {"Ok": None} if err is None else {"Err": err},
                    "confirmationStatus": st})
    return rpc.ctx(bank, out)


def _history_commitment(cfg: dict[str, Any]) -> str:
    c = cfg.get("commitment")
    if c is not None and COMMITMENTS.get(c) == "processed":
        raise invalid_params("Method does not support commitment below `confirmed`")
    if c is not None and c not in COMMITMENTS:
        raise invalid_params(f"Invalid params: unknown variant `{c}`")
    return COMMITMENTS.get(c, "finalized") if c else "finalized"


async def get_transaction(rpc: SolanaRpc, params: list[Any]) -> Any:
    sig = _signature(_arg(params, 0, "signature"))
    cfg = _cfg(params, 1)
    if isinstance(params[1] if len(params) > 1 else None, str):  # the deprecated encoding-only form
        cfg = {"encoding": params[1]}
    enc = _encoding(cfg, "json", ("json", "jsonParsed", "base64", "base58"))
    loc = rpc.find_tx(sig, _history_commitment(cfg))
    if loc is None:
        return None
    out = _encoded_tx(loc.record, enc, _max_version(cfg), _mint_decimals(rpc))
    return {"slot": loc.block.slot, "blockTime": loc.block.block_time_s, **out}


def _block_or_error(rpc: SolanaRpc, slot: int, commitment: str) -> BlockRecord:
    top = rpc.slot_of(commitment)
    rec = rpc.index.blocks.get(slot)
    if slot > top or (rec is not None and not rpc.on_best_fork(slot)) or (rec is None and slot > rpc.v.cons.root):
        raise RpcError(BLOCK_NOT_AVAILABLE, f"Block not available for slot {slot}")
    if rec is None:
        if slot < rpc.index.evicted_below or (rpc.v.bs.is_root(slot) and slot not in rpc.index.blocks):
            first = min(rpc.index.blocks) if rpc.index.blocks else top
            raise RpcError(BLOCK_CLEANED_UP, f"Block {slot} cleaned up, does not exist on node. "
                           f"First available block: {first}")
        raise RpcError(SLOT_SKIPPED, f"Slot {slot} was skipped, or missing due to ledger jump to recent snapshot")
    return rec


async def get_block(rpc: SolanaRpc, params: list[Any]) -> Any:
    slot = _uint(_arg(params, 0, "slot"), "slot")
    cfg = _cfg(params, 1)
    if isinstance(params[1] if len(params) > 1 else None, str):
        cfg = {"encoding": params[1]}
    enc = _encoding(cfg, "json", ("json", "jsonParsed", "base64", "base58"))
    details = cfg.get("transactionDetails", "full")
    if details not in ("full", "signatures", "none", "accounts"):
        raise invalid_params(f"Invalid params: unknown variant `{details}`")
    rec = _block_or_error(rpc, slot, _history_commitment(cfg))
    mv = _max_version(cfg)
    out: dict[str, Any] = {"blockhash": base58.b58encode(rec.blockhash).decode(),
                           "previousBlockhash": base58.b58encode(rec.previous_blockhash).decode(),
                           "parentSlot": rec.parent_slot, "blockHeight": rec.block_height,
                           "blockTime": rec.block_time_s}
    if details == "full" or details == "accounts":
        decimals = _mint_decimals(rpc)
        out["transactions"] = [_encoded_tx(t, enc, mv, decimals) for t in rec.txs]
    elif details == "signatures":
        out["signatures"] = [base58.b58encode(t.result.signature).decode() for t in rec.txs]
    if cfg.get("rewards", True):
        out["rewards"] = []
    return out


async def get_block_time(rpc: SolanaRpc, params: list[Any]) -> Any:
    slot = _uint(_arg(params, 0, "slot"), "slot")
    return _block_or_error(rpc, slot, "confirmed").block_time_s


async def _chain_slots(rpc: SolanaRpc, lo: int, hi: int) -> list[int]:
    import trio

    # a RocksDB scan of up to MAX_GET_BLOCKS_RANGE roots: in a worker thread, off the node's loop
    roots = {r for r in await trio.to_thread.run_sync(rpc.v.bs.roots, lo) if r <= hi}
    roots |= {s for s in rpc.index.blocks if lo <= s <= hi and rpc.on_best_fork(s)}
    return sorted(roots)


async def get_blocks(rpc: SolanaRpc, params: list[Any]) -> Any:
    lo = _uint(_arg(params, 0, "start_slot"), "start_slot")
    end = params[1] if len(params) > 1 and not isinstance(params[1], dict) else None
    cfg = _cfg(params, 2 if end is not None or (len(params) > 1 and params[1] is None) else 1)
    top = rpc.slot_of(_history_commitment(cfg))
    hi = min(_uint(end, "end_slot") if end is not None else top, top)
    if hi - lo > MAX_GET_BLOCKS_RANGE:
        raise invalid_params(f"Slot range too large; max {MAX_GET_BLOCKS_RANGE}")
    return await _chain_slots(rpc, lo, hi) if hi >= lo else []


async def get_blocks_with_limit(rpc: SolanaRpc, params: list[Any]) -> Any:
    lo = _uint(_arg(params, 0, "start_slot"), "start_slot")
    limit = _uint(_arg(params, 1, "limit"), "limit")
    if limit > MAX_GET_BLOCKS_RANGE:
        raise invalid_params(f"Limit too large; max {MAX_GET_BLOCKS_RANGE}")
    top = rpc.slot_of(_history_commitment(_cfg(params, 2)))
    return (await _chain_slots(rpc, lo, top))[:limit]


async def get_first_available_block(rpc: SolanaRpc, params: list[Any]) -> Any:
    return min(rpc.index.blocks) if rpc.index.blocks else 0


async def get_signatures_for_address(rpc: SolanaRpc, params: list[Any]) -> Any:
    key = _pubkey(_arg(params, 0, "address"))
    cfg = _cfg(params, 1)
    limit = cfg.get("limit", MAX_SIGNATURES_FOR_ADDRESS)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_SIGNATURES_FOR_ADDRESS:
        raise invalid_params(f"Invalid limit; max {MAX_SIGNATURES_FOR_ADDRESS}")
    before = _signature(cfg["before"]) if cfg.get("before") else None
    until = _signature(cfg["until"]) if cfg.get("until") else None
    least = _history_commitment(cfg)
    order = {"processed": 0, "confirmed": 1, "finalized": 2}
    out: list[dict[str, Any]] = []
    started = before is None
    for loc in rpc.index.address_locations(key):
        sig = loc.record.result.signature
        if not started:
            started = sig == before
            continue
        if until is not None and sig == until:
            break
        st = rpc.confirmation_status(loc.block.slot)
        if not rpc.on_best_fork(loc.block.slot) or order[st] < order[least]:
            continue
        out.append({"signature": base58.b58encode(sig).decode(), "slot": loc.block.slot,
                    "err": tx_error(loc.record.result.error), "memo": None, "blockTime": loc.block.block_time_s,
                    "confirmationStatus": st})
        if len(out) >= limit:
            break
    return out


async def get_leader_schedule(rpc: SolanaRpc, params: list[Any]) -> Any:
    spe = rpc.v.genesis.epoch.slots_per_epoch
    first = params[0] if params and not isinstance(params[0], dict) else None
    cfg = _cfg(params, 1 if first is not None or (params and params[0] is None) else 0)
    slot = _uint(first, "slot") if first is not None else rpc.bank_for(cfg).slot
    sched = rpc.v.book.schedule(epoch_of(slot, spe))
    if sched is None:
        return None
    want = cfg.get("identity")
    out: dict[str, list[int]] = {}
    for i, leader in enumerate(sched):
        out.setdefault(encode_address(leader), []).append(i)
    return {k: v for k, v in out.items() if want is None or k == want}


async def get_slot_leader(rpc: SolanaRpc, params: list[Any]) -> Any:
    leader = rpc.v.book.leader(rpc.bank_for(_cfg(params, 0)).slot)
    return encode_address(leader) if leader else None


async def get_vote_accounts(rpc: SolanaRpc, params: list[Any]) -> Any:
    cfg = _cfg(params, 0)
    bank = rpc.bank_for(cfg)
    want = cfg.get("votePubkey")
    table = rpc.v.lstake_table()
    epoch = epoch_of(bank.slot, rpc.v.genesis.epoch.slots_per_epoch)
    current: list[dict[str, Any]] = []
    delinquent: list[dict[str, Any]] = []
    for addr, row in table.items():
        if want is not None and addr != want:
            continue
        key = decode_address(addr)
        last = bank.last_votes.get(key, 0)
        entry = {"votePubkey": addr, "nodePubkey": addr, "activatedStake": row["weight"], "epochVoteAccount": True,
                 "commission": 0, "lastVote": last, "rootSlot": rpc.v.cons.root,
                 "epochCredits": [[epoch, row["vote_credits"], 0]]}
        # agave: delinquent when the last vote is more than 128 slots behind
        (current if row["weight"] > 0 and bank.slot - last <= 128 else delinquent).append(entry)
    return {"current": current, "delinquent": delinquent}


async def get_cluster_nodes(rpc: SolanaRpc, params: list[Any]) -> Any:
    return rpc.cluster()


async def request_airdrop(rpc: SolanaRpc, params: list[Any]) -> Any:
    from solders.hash import Hash
    from solders.keypair import Keypair as SKeypair
    from solders.message import Message
    from solders.pubkey import Pubkey
    from solders.system_program import TransferParams, transfer
    from solders.transaction import Transaction

    key = _pubkey(_arg(params, 0, "pubkey"))
    lamports = _uint(_arg(params, 1, "lamports"), "lamports")
    faucet = rpc.opts.faucet
    if faucet is None:
        raise RpcError(INVALID_REQUEST, "Invalid request")  # agave without a faucet address
    if not 1 <= lamports <= MAX_AIRDROP_LAMPORTS:
        raise RpcError(INTERNAL_ERROR, f"airdrop request failed: lamports must be 1..{MAX_AIRDROP_LAMPORTS}")
    bank = rpc.bank_for({"commitment": "processed"})
    if bank.balance(faucet.pubkey) < lamports + LAMPORTS_PER_SIGNATURE:
        raise RpcError(INTERNAL_ERROR, "airdrop request failed: the faucet is empty")
    skp = SKeypair.from_seed(faucet.seed)
    ix = transfer(TransferParams(from_pubkey=skp.pubkey(), to_pubkey=Pubkey(key), lamports=lamports))
    bh = Hash(bank.last_blockhash)
    tx = Transaction([skp], Message.new_with_blockhash([ix], skp.pubkey(), bh), bh)
    raw = bytes(tx)
    await rpc.submit(raw)
    return base58.b58encode(raw[1:65]).decode()


# -- Ambient methods (spec/rpc.md "Ambient methods") ---------------------------------------------
async def ambient_get_query(rpc: SolanaRpc, params: list[Any]) -> Any:
    from ..miner import auction_view

    qid = _pubkey(_arg(params, 0, "query"))
    bank = rpc.bank_for(_cfg(params, 1), default="processed")
    data = bank.auction_accounts.get(qid)
    if data is None or data[:1] != bytes([au.Kind.QUERY]):
        return rpc.ctx(bank, None)
    _qs, bids = auction_view(bank)
    mine = sorted(bids.get(qid, {}).values(), key=lambda b: b.index)
    return rpc.ctx(bank, {"query": query_json(au.QueryAccount.unpack(data)), "bids": [bid_json(b) for b in mine]})


def _query_of(rpc: SolanaRpc, params: list[Any]) -> tuple[Bank, bytes, au.QueryAccount | None]:
    qid = _pubkey(_arg(params, 0, "query"))
    bank = rpc.bank_for(_cfg(params, 1), default="processed")
    data = bank.auction_accounts.get(qid)
    if data is None or data[:1] != bytes([au.Kind.QUERY]):
        return bank, qid, None
    return bank, qid, au.QueryAccount.unpack(data)


#: A query's settlement as the Logit Pool leaves it (spec/rpc.md "Ambient methods").
SETTLEMENT_OF_STATUS = {au.QueryStatus.RESULT_POSTED: "pending", au.QueryStatus.FINALIZED_VERIFIED: "verified",
                        au.QueryStatus.FINALIZED_REJECTED: "rejected"}


async def ambient_get_draw(rpc: SolanaRpc, params: list[Any]) -> Any:
    """The Logit Pool's validator draw of a query from the bank's chain data (the pool
    account once a verdict or settle wrote it, else the round-0 draw a verdict would make)."""
    bank, qid, q = _query_of(rpc, params)
    if q is None:
        return rpc.ctx(bank, None)
    draw = pool_draw_json(bank, qid)["draw"]
    return rpc.ctx(bank, {"status": q.status.name, "draw": draw})


async def ambient_get_verdicts(rpc: SolanaRpc, params: list[Any]) -> Any:
    """A query's PoL commitment (spec/pol.md, as the result posted it) and the drawn
    validators' verdicts on chain, with the settlement they led to."""
    bank, qid, q = _query_of(rpc, params)
    if q is None:
        return rpc.ctx(bank, None)
    posted = q.status in SETTLEMENT_OF_STATUS
    commitment = None
    if posted:
        commitment = {"pol_root": q.pol_root.hex(), "pol_commitment_hash": q.pol_commitment().hash().hex(),
                      "output_hash": q.output_hash.hex(), "num_tokens": q.num_tokens, "tier": q.tier,
                      "top_k": q.top_k, "vocab": q.vocab, "result_slot": q.result_slot,
                      "miner": encode_address(q.winner)}
    draw = pool_draw_json(bank, qid)["draw"] if posted else None
    verdicts = [{"validator": v["validator"], "round": v["round"], "verdict": v["verdict"]}
                for v in (draw["validators"] if draw else [])]
    return rpc.ctx(bank, {
        "status": q.status.name, "settlement": SETTLEMENT_OF_STATUS.get(q.status), "commitment": commitment,
        "verdicts": verdicts, "accepts": sum(v["verdict"] == "accept" for v in verdicts),
        "rejects": sum(v["verdict"] == "reject" for v in verdicts), "quorum": draw["quorum"] if draw else lp.VERDICT_QUORUM,
        "verify_end_slot": draw["verify_end_slot"] if draw else None})


def _work_json(acc: WorkAccount | None, epoch: int) -> dict[str, int]:
    a = acc.at_epoch(max(epoch, acc.epoch)) if acc is not None else WorkAccount(bytes(32), epoch)
    return {"work_epoch": a.epoch, "tokens_served": a.tokens_served, "positions_validated": a.positions_validated,
            "slashes": a.slashes, "slashed_this_epoch": int(bool(a.flags & Flag.SLASHED_THIS_EPOCH)),
            "total_tokens_served": a.total_tokens_served, "total_positions_validated": a.total_positions_validated,
            "total_slashes": a.total_slashes, "last_slash_slot": a.last_slash_slot,
            "total_rewards_lamports": a.total_rewards_lamports}


async def ambient_get_lstake(rpc: SolanaRpc, params: list[Any]) -> Any:
    """The LStake table (node/status.py: vote weight now, rooted leader slots and vote
    credits) joined with each identity's work account (core/work.py) in the bank at the
    asked commitment (default processed): the Logit Pool work that becomes LStake credit."""
    bank = rpc.bank_for(_cfg(params, 0), default="processed")
    table = rpc.v.lstake_table()
    epoch = epoch_of(bank.slot, bank.slots_per_epoch) if bank.slots_per_epoch else 0
    works = {k: WorkAccount.unpack(d) for k, d in bank.work_accounts.items()}
    for k in works:
        table.setdefault(encode_address(k), {"weight": 0, "leader_slots": 0, "vote_credits": 0})
    out = {addr: {**row, **_work_json(works.get(decode_address(addr)), epoch)} for addr, row in sorted(table.items())}
    return rpc.ctx(bank, {"epoch": rpc.v.weights_epoch, "bank_epoch": epoch, "table": out})


async def ambient_get_node_status(rpc: SolanaRpc, params: list[Any]) -> Any:
    """The node's status, as the ``status`` control command answers it (what ``ambient-p2p
    status`` prints when it reads the RPC)."""
    if rpc.node_status is None:
        raise RpcError(NODE_UNHEALTHY, "Node is unhealthy", {"numSlotsBehind": None})
    return rpc.node_status()


METHODS: dict[str, Callable[[SolanaRpc, list[Any]], Awaitable[Any]]] = {
    "getHealth": get_health, "getVersion": get_version, "getGenesisHash": get_genesis_hash,
    "getIdentity": get_identity, "getSlot": get_slot, "getBlockHeight": get_block_height,
    "getTransactionCount": get_transaction_count, "getEpochInfo": get_epoch_info,
    "getEpochSchedule": get_epoch_schedule, "getBalance": get_balance, "getAccountInfo": get_account_info,
    "getMultipleAccounts": get_multiple_accounts, "getProgramAccounts": get_program_accounts,
    "getTokenAccountBalance": get_token_account_balance, "getTokenSupply": get_token_supply,
    "getTokenAccountsByOwner": get_token_accounts_by_owner,
    "getTokenAccountsByDelegate": get_token_accounts_by_delegate,
    "getTokenLargestAccounts": get_token_largest_accounts,
    "getLatestBlockhash": get_latest_blockhash,
    "isBlockhashValid": is_blockhash_valid, "getFeeForMessage": get_fee_for_message,
    "getMinimumBalanceForRentExemption": get_minimum_balance_for_rent_exemption,
    "sendTransaction": send_transaction, "simulateTransaction": simulate_transaction,
    "getSignatureStatuses": get_signature_statuses, "getTransaction": get_transaction, "getBlock": get_block,
    "getBlockTime": get_block_time, "getBlocks": get_blocks, "getBlocksWithLimit": get_blocks_with_limit,
    "getFirstAvailableBlock": get_first_available_block, "getSignaturesForAddress": get_signatures_for_address,
    "getLeaderSchedule": get_leader_schedule, "getSlotLeader": get_slot_leader,
    "getVoteAccounts": get_vote_accounts, "getClusterNodes": get_cluster_nodes, "requestAirdrop": request_airdrop,
    "ambient_getQuery": ambient_get_query, "ambient_getLStake": ambient_get_lstake,
    "ambient_getDraw": ambient_get_draw, "ambient_getVerdicts": ambient_get_verdicts,
    "ambient_getNodeStatus": ambient_get_node_status,
}
