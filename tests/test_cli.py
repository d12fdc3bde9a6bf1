"""The `ambient-p2p` command line: help everywhere, one-line errors with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ambient_p2p.cli import build_parser, main
from ambient_p2p.core import codec
from ambient_p2p.core.messages import Genesis


def _commands() -> list[list[str]]:
    parser = build_parser()
    out = []
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for name, sub in action.choices.items():
            out.append([name])
            for sa in getattr(sub, "_subparsers", None)._group_actions if sub._subparsers else []:
                out += [[name, n] for n in sa.choices]
    return out


@pytest.mark.parametrize("cmd", _commands(), ids=" ".join)
def test_every_command_has_help(cmd: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main([*cmd, "--help"])
    assert ei.value.code == 0
    assert "usage: ambient-p2p" in capsys.readouterr().out


def test_required_commands_exist() -> None:
    names = {" ".join(c) for c in _commands()}
    for want in ("keygen", "genesis", "interop generate", "interop verify", "version", "localnet"):
        assert want in names


def test_keygen_writes_solana_keypair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "k.json"
    assert main(["keygen", "--outfile", str(out)]) == 0
    arr = json.loads(out.read_text())
    assert len(arr) == 64 and all(isinstance(x, int) and 0 <= x <= 255 for x in arr)
    addr = capsys.readouterr().out.split("address: ")[1].strip()
    assert main(["address", str(out)]) == 0
    assert capsys.readouterr().out.strip() == addr
    # never overwrites a key silently
    before = out.read_text()
    assert main(["keygen", "--outfile", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--force" in err
    assert out.read_text() == before


def test_genesis_roundtrip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "k.json"
    main(["keygen", "-o", str(key), "--seed-label", "t"])
    gfile = tmp_path / "g.cbor"
    rc = main(["genesis", "--out", str(gfile), "--bootstrap", str(key), "--localnet-nodes", "2",
               "--account", "11111111111111111111111111111111:5", "--creation-time", "0", "--chain-id", "t-1"])
    assert rc == 0
    g = codec.decode(gfile.read_bytes(), Genesis)
    assert g.chain_id == "t-1" and len(g.bootstrap_nodes) == 3 and g.creation_time_s == 0
    assert any(a.pubkey == bytes(32) and a.lamports == 5 for a in g.accounts)
    capsys.readouterr()
    assert main(["inspect", str(gfile)]) == 0
    assert json.loads(capsys.readouterr().out)["body"]["chain_id"] == "t-1"


@pytest.mark.parametrize(
    "argv",
    [
        ["address", "/nonexistent/key.json"],
        ["inspect", "/nonexistent"],
        ["genesis", "--out", "{tmp}/g.cbor"],  # no bootstrap node
        ["genesis", "--out", "{tmp}/g.cbor", "--localnet-nodes", "1", "--chain-id", "Bad Chain"],
        ["genesis", "--out", "{tmp}/g.cbor", "--localnet-nodes", "1", "--model-file", "/nonexistent"],
        ["genesis", "--out", "{tmp}/g.cbor", "--localnet-nodes", "1", "--slots-per-epoch", "6"],
        ["interop", "verify", "/nonexistent"],
        ["localnet", "--nodes", "0", "--dir", "{tmp}/ln"],
        ["localnet", "--slot-ms", "333", "--ticks-per-slot", "7", "--dir", "{tmp}/ln"],
        ["localnet", "--hashes-per-tick", "1", "--dir", "{tmp}/ln"],
    ],
)
def test_user_errors_are_one_line(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_bad_files_are_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\xff\x00garbage")
    assert main(["inspect", str(junk)]) == 2
    assert main(["address", str(junk)]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([1] * 64))  # public half does not match
    assert main(["address", str(bad)]) == 2
    with pytest.raises(SystemExit) as ei:  # argparse-level: usage line + error line, exit 2
        main(["genesis", "--out", str(tmp_path / "g"), "--bootstrap", str(bad)])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert "does not match" in err
    assert "Traceback" not in err


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main(["genesis", "--hashes-per-tick", "zero"])
    assert ei.value.code == 2
    with pytest.raises(SystemExit) as ei:
        main(["no-such-command"])
    assert ei.value.code == 2


def test_console_entry_point_runs() -> None:
    r = subprocess.run([sys.executable, "-m", "ambient_p2p", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "keygen" in r.stdout
    r = subprocess.run([sys.executable, "-m", "ambient_p2p", "inspect", "/nonexistent"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr


def test_help_does_not_import_torch() -> None:
    code = "import sys; from ambient_p2p.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False"
