"""User mistakes give one ``error:`` line and exit 2: no traceback, nothing written (issue 16).

Every case runs the real CLI in a subprocess against a directory prepared with the mistake,
and checks the exit status, that stderr is exactly one line starting with ``error:`` naming
the problem, and that the directory tree is byte-for-byte what it was before. A case whose
mistake the CLI did not catch would start a node: the subprocess timeout fails it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ambient_p2p.core.codec import encode
from ambient_p2p.devnet.genesis import LOCALNET_CHAIN_ID, localnet_genesis
from ambient_p2p.devnet.users import node_keypairs

ROOT = Path(__file__).resolve().parents[1]
CLI_TIMEOUT_S = 90


def _tree(root: Path) -> dict[str, tuple[str, int, bytes]]:
    """Every path under ``root`` with its kind, size and content (files)."""
    out: dict[str, tuple[str, int, bytes]] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", 0, os.readlink(p).encode())
        elif p.is_dir():
            out[rel] = ("dir", 0, b"")
        else:
            out[rel] = ("file", p.stat().st_size, p.read_bytes() if p.stat().st_size < 1 << 20 else b"")
    return out


def _genesis(tmp: Path) -> Path:
    g = tmp / "genesis.cbor"
    g.write_bytes(encode(localnet_genesis(LOCALNET_CHAIN_ID, [k.pubkey for k in node_keypairs(LOCALNET_CHAIN_ID, 1)])))
    return g


def _validator(tmp: Path, node: Path) -> list[str]:
    return ["run", "--ledger", str(node), "--validator", "--no-rpc", "--genesis", str(_genesis(tmp)), "--quiet"]


def _ledger(tmp: Path) -> Path:
    led = tmp / "ledger"
    r = subprocess.run([sys.executable, "-m", "ambient_p2p", "ledger", "produce", "--slots", "2",
                        "--txs-per-slot", "1", "--ledger", str(led)],
                       capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=_env())
    assert r.returncode == 0, r.stderr
    return led


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def _blockstore_file(tmp: Path) -> list[str]:
    node = tmp / "n"
    node.mkdir()
    (node / "blockstore").write_bytes(b"not a directory")
    return _validator(tmp, node)


def _tower(content: bytes | None) -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        node = tmp / "n"
        node.mkdir()
        if content is None:
            (node / "tower.cbor").mkdir()
        else:
            (node / "tower.cbor").write_bytes(content)
        return _validator(tmp, node)

    return setup


def _control_sock_dir(tmp: Path) -> list[str]:
    (tmp / "n" / "control.sock").mkdir(parents=True)
    return ["run", "--ledger", str(tmp / "n"), "--quiet"]


def _long_dir(tmp: Path) -> list[str]:
    d = tmp / ("d" * (120 - len(str(tmp))))
    return ["run", "--ledger", str(d), "--quiet"]


def _run_opts(*opts: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["run", "--ledger", str(tmp / "n"), *opts]


def _show_slot(slot: str) -> Callable[[Path], list[str]]:
    return lambda tmp: ["ledger", "show", str(_ledger(tmp)), "--slot", slot]


def _localnet_dir_file(tmp: Path) -> list[str]:
    (tmp / "afile").write_text("x")
    return ["localnet", "--dir", str(tmp / "afile"), "--nodes", "1", "--duration", "1"]


CASES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("blockstore-is-a-file", _blockstore_file, "blockstore is not a directory"),
    ("tower-garbage", _tower(b"garbage\n"), "tower.cbor is damaged"),
    ("tower-empty", _tower(b""), "tower.cbor is damaged"),
    ("tower-is-a-directory", _tower(None), "tower.cbor is not a file"),
    ("control-sock-is-a-directory", _control_sock_dir, "is not a socket"),
    ("data-dir-too-long-for-a-socket", _long_dir, "byte limit of a Unix socket path"),
    ("ledger-show-slot-negative", _show_slot("-1"), "--slot must be"),
    ("ledger-show-slot-2**70", _show_slot(str(2**70)), "--slot must be"),
    ("localnet-dir-is-a-file", _localnet_dir_file, "is not a directory"),
    ("status-interval-0", _run_opts("--status-interval", "0"), "--status-interval must be"),
    ("status-interval-nan", _run_opts("--status-interval", "nan"), "--status-interval must be"),
    ("target-peers-negative", _run_opts("--target-peers", "-5"), "--target-peers must be"),
    ("join-timeout-nan", _run_opts("--join-timeout", "nan"), "--join-timeout must be"),
    ("join-timeout-inf", _run_opts("--join-timeout", "inf"), "--join-timeout must be"),
]


def _check(argv: list[str], tmp: Path, expect: str, wrap: list[str] | None = None) -> None:
    before = _tree(tmp)
    cmd = [*(wrap or []), sys.executable, "-m", "ambient_p2p", *argv]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=_env())
    except subprocess.TimeoutExpired:
        pytest.fail(f"{argv} was accepted: the node ran for {CLI_TIMEOUT_S}s")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], r.stderr
    assert r.stdout == ""
    assert _tree(tmp) == before, "the command wrote to its directory before refusing"


@pytest.mark.parametrize(("name", "setup", "expect"), CASES, ids=[c[0] for c in CASES])
def test_user_error_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, name: str, setup: Callable[[Path], list[str]], expect: str
) -> None:
    argv = setup(tmp_path)
    _check(argv, tmp_path, expect)


def _read_only_wrapper(d: Path) -> list[str] | None:
    """A command prefix under which ``d`` is read-only: a read-only bind mount in a private
    mount namespace (root ignores permission bits), or None if that cannot be made."""
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        return None
    return ["unshare", "-m", "sh", "-c",
            f'mount --bind "{d}" "{d}" && mount -o remount,bind,ro "{d}" && exec "$0" "$@"']


@pytest.mark.parametrize("validator", [False, True], ids=["run", "validator"])
def test_read_only_ledger_dir_is_one_error_line(tmp_path: Path, validator: bool) -> None:
    node = tmp_path / "n"
    node.mkdir()
    argv = _validator(tmp_path, node) if validator else ["run", "--ledger", str(node), "--quiet"]
    if os.geteuid() != 0:
        node.chmod(0o555)
        try:
            _check(argv, tmp_path, "is not writable")
        finally:
            node.chmod(0o755)
        return
    wrap = _read_only_wrapper(node)
    if wrap is None:
        pytest.skip("running as root without mount namespaces: cannot make a read-only directory")
    _check(argv, tmp_path, "is not writable", wrap)


def test_a_late_first_start_says_what_happens_to_production() -> None:
    """A genesis written long before the first node starts never produced, silently (issue
    16): `run --validator` on a fresh ledger now says where the slot clock starts and what
    follows for production."""
    from ambient_p2p.commands.join import late_genesis_warning
    from ambient_p2p.node.validator import slot_duration_ms

    g = localnet_genesis(LOCALNET_CHAIN_ID, [k.pubkey for k in node_keypairs(LOCALNET_CHAIN_ID, 1)],
                         creation_time_s=1_000_000)
    epoch_s = g.epoch.slots_per_epoch * slot_duration_ms(g) / 1000
    assert late_genesis_warning(g, 1_000_000 + 5) is None
    assert late_genesis_warning(g, 1_000_000 + 0.9 * epoch_s) is None
    w1 = late_genesis_warning(g, 1_000_000 + 1.5 * epoch_s)
    assert w1 is not None and "epoch 1" in w1 and "production stops" in w1
    w2 = late_genesis_warning(g, 1_000_000 + 2.5 * epoch_s)
    assert w2 is not None and "no slot will be produced" in w2 and "epoch 2" in w2
