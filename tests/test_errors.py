"""One ProtocolError(reason, detail) base for the rejections of every layer (core/errors.py):
each class keeps its name and reason codes, callers can catch the base, and classes that
were ValueErrors still are."""

from __future__ import annotations

import pytest

from ambient_p2p.core.bank import BlockError
from ambient_p2p.core.codec import DecodeError, decode
from ambient_p2p.core.consensus import VoteRejected
from ambient_p2p.core.erasure import ErasureError
from ambient_p2p.core.errors import ProtocolError
from ambient_p2p.core.poh import PohError
from ambient_p2p.core.shred import ShredError
from ambient_p2p.core.vote_program import VoteTxError
from ambient_p2p.interop import Rejected
from ambient_p2p.ledger.replay import SlotRejected
from ambient_p2p.net.reqresp import FrameError, ReqRespError

WAS_VALUE_ERROR = (DecodeError, ShredError, PohError, BlockError, ErasureError, VoteTxError, VoteRejected)
WAS_EXCEPTION = (SlotRejected, Rejected, ReqRespError, FrameError)


@pytest.mark.parametrize("cls", WAS_VALUE_ERROR + WAS_EXCEPTION, ids=lambda c: c.__name__)
def test_every_reason_detail_error_is_a_protocol_error(cls: type[ProtocolError]) -> None:
    exc = cls("some-code", "what happened")
    assert isinstance(exc, ProtocolError)
    assert (exc.reason, exc.detail) == ("some-code", "what happened")
    assert str(exc).startswith("some-code: what happened")
    with pytest.raises(ProtocolError) as ei:
        raise exc
    assert ei.value.reason == "some-code"


@pytest.mark.parametrize("cls", WAS_VALUE_ERROR, ids=lambda c: c.__name__)
def test_former_value_errors_are_still_value_errors(cls: type[ProtocolError]) -> None:
    assert issubclass(cls, ValueError)


def test_context_is_kept() -> None:
    assert str(DecodeError("truncated", "x", "@3")) == "truncated: x at @3"
    assert DecodeError("truncated", "x", "@3").where == "@3"
    assert str(PohError("bad-hash", "x", 4)) == "bad-hash: x (entry 4)"
    assert BlockError("fee", "x", 2).tx_index == 2
    assert ReqRespError("timeout", "x").code == "timeout"
    assert FrameError("too-large", "x").code == "too-large"
    assert str(Rejected("only-reason")) == "only-reason"


def test_a_real_rejection_is_caught_as_protocol_error() -> None:
    with pytest.raises(ProtocolError) as ei:
        decode(b"")
    assert ei.value.reason == "truncated"
