"""One wire-type registry (spec/encoding.md "Type-id ranges" and "Type-id registry"): the
tables in the spec equal the codec's registry, every type sits in its layer's range, the
composition loader sees every module that defines a type, and ``ambient-p2p inspect``
decodes every registered type to its JSON view."""

from __future__ import annotations

import ast
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from ambient_p2p import cli, registry
from ambient_p2p.core import codec

from .strategies import for_message

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "ambient_p2p"
SPEC = (REPO / "spec" / "encoding.md").read_text()
TYPES = registry.load_all_types()


def _table(heading: str) -> list[list[str]]:
    """Rows of the first Markdown table under ``## heading`` (cells stripped of backticks)."""
    section = SPEC.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return [[c.strip().strip("`") for c in r.strip("|").split("|")] for r in rows[2:]]


def _ranges() -> list[tuple[int, int, str]]:
    out = []
    for rng, layer, *_ in _table("Type-id ranges"):
        lo, hi = (int(x, 16) for x in rng.split("-"))
        out.append((lo, hi, layer))
    return out


def test_ranges_do_not_overlap() -> None:
    spans = sorted(_ranges())
    assert spans, "no ranges table in spec/encoding.md"
    for (_lo1, hi1, _), (lo2, _hi2, _) in itertools.pairwise(spans):
        assert hi1 < lo2


def test_spec_registry_table_equals_codec_registry() -> None:
    spec = {
        int(tid, 16): (name, int(version), int(max_size), module)
        for tid, name, version, max_size, module in _table("Type-id registry")
    }
    code = {
        tid: (mt.name, mt.version, mt.max_size, mt.cls.__module__.removeprefix("ambient_p2p."))
        for tid, mt in TYPES.items()
    }
    assert spec == code


def test_every_type_sits_in_its_layers_range() -> None:
    ranges = _ranges()
    for tid, mt in TYPES.items():
        layer = mt.cls.__module__.split(".")[1]
        owners = [lay for lo, hi, lay in ranges if lo <= tid <= hi]
        assert owners == [layer], f"{mt.name} {tid:#06x} is defined in {layer}/ but its range belongs to {owners}"


def test_retired_ids_stay_unused() -> None:
    section = SPEC.split("Retired ids", 1)[1]
    rows = [line for line in section.split("\n\n", 2)[1].splitlines() if line.startswith("|")][2:]
    retired = {int(r.strip("|").split("|")[0].strip().strip("`"), 16) for r in rows}
    assert retired == {0x0303, 0x0304, 0x0305, 0x0306}
    assert not retired & set(TYPES)


def _modules_defining_messages() -> set[str]:
    """Modules with a class decorated ``@message(...)`` / ``@codec.message(...)`` (AST scan,
    so a module nobody imports is found too)."""
    found = set()
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            for d in node.decorator_list:
                f = d.func if isinstance(d, ast.Call) else d
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
                if name == "message":
                    found.add(".".join(path.relative_to(REPO).with_suffix("").parts))
    return found


def test_loader_names_every_defining_module() -> None:
    found = _modules_defining_messages()
    outside_core = {m for m in found if not m.startswith("ambient_p2p.core.")}
    assert outside_core == set(registry.WIRE_MODULES)
    assert {mt.cls.__module__ for mt in TYPES.values()} == found


def test_fresh_process_loader_sees_every_type() -> None:
    """Nothing else imported first: the loader alone registers every type of the table."""
    code = "from ambient_p2p.registry import load_all_types; print(sorted(load_all_types()))"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == sorted(int(row[0], 16) for row in _table("Type-id registry"))


@pytest.mark.parametrize("mt", list(TYPES.values()), ids=lambda mt: mt.name)
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                               HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_inspect_prints_every_type(
    mt: codec.MessageType, data: st.DataObject, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    msg = data.draw(for_message(mt.cls))
    f = tmp_path / "msg.cbor"
    f.write_bytes(codec.encode(msg))
    capsys.readouterr()
    assert cli.main(["inspect", str(f)]) == 0
    assert json.loads(capsys.readouterr().out) == codec.to_json(msg)


def test_inspect_cli_in_a_fresh_process(tmp_path: Path) -> None:
    """The installed entry point, in a process that imported nothing before: one file per
    registered type, every one printed as its JSON view."""
    files, want = [], []
    for tid, mt in sorted(TYPES.items()):
        msg = find(for_message(mt.cls), lambda _m: True, settings=settings(database=None))
        f = tmp_path / f"{tid:04x}.cbor"
        f.write_bytes(codec.encode(msg))
        files.append(str(f))
        want.append(codec.to_json(msg))
    code = (
        "import sys\nfrom ambient_p2p.cli import main\n"
        "for f in sys.argv[1:]:\n    assert main(['inspect', f]) == 0\n    print('\\x1e')\n"
    )
    r = subprocess.run([sys.executable, "-c", code, *files], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = [json.loads(chunk) for chunk in r.stdout.split("\x1e\n") if chunk.strip()]
    assert got == want


def test_inspect_rejects_garbage_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "junk"
    f.write_bytes(b"\x83\x19\x03\x03\x01\xa0")  # a retired type id
    assert cli.main(["inspect", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "unknown-type" in err and err.count("\n") == 1


def _shreds() -> tuple[bytes, bytes]:
    from ambient_p2p.interop.formats.shred import _batch

    b = _batch(b"inspect me " * 40, True)
    return b.data[0].payload, b.code[0].payload


def test_inspect_raw_shred_packets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The blockstore stores, and the shreds topic carries, raw agave-layout packets."""
    from ambient_p2p.core.shred import parse_shred

    for packet in _shreds():
        f = tmp_path / "shred.bin"
        f.write_bytes(packet)
        capsys.readouterr()
        assert cli.main(["inspect", str(f)]) == 0
        view = json.loads(capsys.readouterr().out)
        assert view == {"type": "Shred", "shred": parse_shred(packet).describe()}
        assert cli.main(["inspect", "--as", "message", str(f)]) == 2  # not CBOR
    f.write_bytes(b"\x01" * 1000)  # packet-sized, neither a message nor a shred
    capsys.readouterr()
    assert cli.main(["inspect", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not a shred packet either" in err and err.count("\n") == 1


def test_inspect_expands_shreds_inside_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ambient_p2p.core.shred import parse_shred
    from ambient_p2p.ledger.meta import DuplicateSlotProof
    from ambient_p2p.net.messages import NoncedShreds

    data, code = _shreds()
    f = tmp_path / "m.cbor"
    f.write_bytes(codec.encode(NoncedShreds(nonce=5, shreds=(data, code, b"short"))))
    capsys.readouterr()
    assert cli.main(["inspect", "--shreds", str(f)]) == 0
    shreds = json.loads(capsys.readouterr().out)["body"]["shreds"]
    assert [s.get("shred") for s in shreds[:2]] == [parse_shred(data).describe(), parse_shred(code).describe()]
    assert shreds[2]["shred_error"] == "wrong-size"
    assert [s["hex"] for s in shreds] == ["0x" + p.hex() for p in (data, code, b"short")]
    f.write_bytes(codec.encode(DuplicateSlotProof(slot=1000, kind="merkle-root", shred1=data, shred2=code)))
    assert cli.main(["inspect", "--shreds", str(f)]) == 0
    body = json.loads(capsys.readouterr().out)["body"]
    assert body["shred1"]["shred"]["index"] == 0 and body["shred2"]["shred"]["type"] == "code"
