"""The RPC's one view of a bank's accounts (getAccountInfo, getMultipleAccounts,
getProgramAccounts, accountSubscribe read through here).

An account is an auction-program account (``Bank.auction_accounts``: fixed-layout data,
lamports from the balance map) or a full Solana account (``Bank.account``: lamports plus
owner, data, executable flag; spec/bank.md "Accounts", spec/svm.md). Every RPC read of an account goes through
:func:`account_view` and :func:`program_accounts`, so a new account model changes these two
functions and nothing else in the doors.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...core import auction as au
from ...core.bank import SYSTEM_PROGRAM_ID

if TYPE_CHECKING:  # pragma: no cover
    from ...core.bank import Bank


@dataclass(frozen=True)
class AccountView:
    lamports: int
    owner: bytes
    data: bytes
    executable: bool = False


def account_view(bank: Bank, key: bytes) -> AccountView | None:
    """The account at ``key`` in ``bank`` (None: it does not exist: no lamports, no data)."""
    lamports = bank.balance(key)
    data = bank.auction_accounts.get(key)
    if data is not None:
        return AccountView(lamports, au.AUCTION_PROGRAM_ID, data)
    full = bank.account(key)
    if full is None:
        return None
    return AccountView(full[0], full[1].owner, full[1].data, full[1].executable)


def program_accounts(bank: Bank, program: bytes) -> Iterator[tuple[bytes, AccountView]]:
    """Every account of ``bank`` owned by ``program``, in address order (agave's
    ``get_program_accounts`` scans the owner index; ours is a scan of the owner's map)."""
    if program == au.AUCTION_PROGRAM_ID:
        keys = sorted(bank.auction_accounts)
    elif program == SYSTEM_PROGRAM_ID:
        keys = sorted(k for k, v in bank.accounts.items() if v and k not in bank.auction_accounts)
    else:  # an SVM program's accounts: those whose meta names it as owner
        keys = sorted(k for k, m in bank.account_meta.items() if m.owner == program)
    for k in keys:
        view = account_view(bank, k)
        if view is not None and view.owner == program:
            yield k, view
