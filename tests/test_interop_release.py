"""Release tarballs of the interop vectors (`interop generate --release`, `interop verify TARBALL`):
deterministic bytes, a name carrying the version and content hash, SHA256SUMS inside and next
to it, and any changed byte (of the tarball or of an extracted copy) fails verification."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import pytest

from ambient_p2p import __version__, interop
from ambient_p2p.cli import main
from ambient_p2p.interop import release

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def vectors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vectors")
    interop.generate(root)
    shutil.copy(REPO / "interop" / "README.md", root / "README.md")
    (root / "verifier-ts" / "node_modules" / "x").mkdir(parents=True)  # not vectors: left out
    (root / "verifier-ts" / "node_modules" / "x" / "index.js").write_text("export {};\n")
    return root


@pytest.fixture(scope="module")
def released(vectors: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("release")
    assert main(["interop", "generate", "--release", str(out), str(vectors)]) == 0
    (tarball,) = out.glob("*.tar.gz")
    return tarball


def test_release_is_deterministic(vectors: Path, released: Path, tmp_path: Path) -> None:
    # vectors generated afresh in another folder, with other file times: byte-identical tarball
    again = tmp_path / "again"
    interop.generate(again)
    shutil.copy(vectors / "README.md", again / "README.md")
    for p in again.rglob("*"):
        p.touch()
    name, data, _ = release.tarball_bytes(again, __version__)
    assert f"{name}.tar.gz" == released.name
    assert data == released.read_bytes()
    # and through the CLI a second time
    out2 = tmp_path / "out2"
    assert main(["interop", "generate", str(again), "--release", str(out2)]) == 0
    assert (out2 / released.name).read_bytes() == released.read_bytes()
    assert (out2 / "SHA256SUMS").read_bytes() == (released.parent / "SHA256SUMS").read_bytes()


def test_release_name_sums_and_contents(vectors: Path, released: Path) -> None:
    sidecar = release.parse_sums((released.parent / "SHA256SUMS").read_bytes())
    assert sidecar == {released.name: hashlib.sha256(released.read_bytes()).hexdigest()}
    with tarfile.open(released) as tar:
        members = tar.getmembers()
        top = members[0].name
        assert released.name == f"{top}.tar.gz"
        sums = tar.extractfile(f"{top}/SHA256SUMS").read()  # type: ignore[union-attr]
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and not m.uname and not m.gname for m in members)
        files = {m.name[len(top) + 1 :]: tar.extractfile(m).read() for m in members if m.isfile()}  # type: ignore[union-attr]
    assert top == f"ambient-interop-vectors-{__version__}-{hashlib.sha256(sums).hexdigest()[:12]}"
    listed = release.parse_sums(sums)
    assert set(listed) == set(files) - {"SHA256SUMS"}
    assert all(hashlib.sha256(files[p]).hexdigest() == h for p, h in listed.items())
    # exactly the vector files and the README: nothing of verifier-ts/
    expected = {p.relative_to(vectors).as_posix() for p in vectors.rglob("*") if p.is_file()}
    expected = {p for p in expected if not p.startswith("verifier-ts/")}
    assert set(listed) == expected and "README.md" in listed
    assert sum(p.endswith("/meta.json") for p in listed) == len(interop.verify(vectors))


def test_verify_accepts_the_tarball_and_an_extracted_copy(released: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    n = sum(1 for _ in (REPO / "interop").rglob("meta.json") if "verifier-ts" not in str(_))
    assert main(["interop", "verify", str(released)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"{n} passed, 0 failed" and "matches" in err and "FAIL" not in err
    with tarfile.open(released) as tar:
        tar.extractall(tmp_path, filter="data")
    (root,) = tmp_path.iterdir()
    assert main(["interop", "verify", str(root)]) == 0
    assert "every file matches its SHA256SUMS" in capsys.readouterr().err
    # the tarball alone (no SHA256SUMS next to it) is still checked against the one inside
    alone = tmp_path / "alone" / released.name
    alone.parent.mkdir()
    shutil.copy(released, alone)
    assert main(["interop", "verify", str(alone)]) == 0


@pytest.mark.parametrize("where", ["first", "gzip-os-byte", "middle", "last"])
def test_a_flipped_byte_in_the_tarball_fails(released: Path, tmp_path: Path, where: str, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(released.read_bytes())
    i = {"first": 0, "gzip-os-byte": 9, "middle": len(data) // 2, "last": len(data) - 1}[where]
    data[i] ^= 0x01
    bad = tmp_path / released.name
    bad.write_bytes(bytes(data))
    shutil.copy(released.parent / "SHA256SUMS", tmp_path / "SHA256SUMS")
    assert main(["interop", "verify", str(bad)]) == 1
    assert f"FAIL {bad}" in capsys.readouterr().err
    if where in ("middle", "last"):  # the compressed data or its CRC: caught without the sidecar too
        (tmp_path / "SHA256SUMS").unlink()
        assert main(["interop", "verify", str(bad)]) == 1
        assert f"FAIL {bad}" in capsys.readouterr().err


def test_a_changed_extracted_copy_fails(released: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with tarfile.open(released) as tar:
        tar.extractall(tmp_path, filter="data")
    (root,) = tmp_path.iterdir()
    # an edited vector whose meta.json sha256 was "fixed up" still fails: SHA256SUMS lists it
    out = next(root.glob("tower/*/*/output.json"))
    original = out.read_bytes()
    out.write_bytes(original.replace(b"1", b"2", 1))
    assert main(["interop", "verify", str(root)]) == 1
    assert f"{out.relative_to(root).as_posix()} does not match" in capsys.readouterr().err
    out.unlink()
    assert main(["interop", "verify", str(root)]) == 1
    assert "listed in SHA256SUMS but missing" in capsys.readouterr().err
    out.write_bytes(original)
    assert main(["interop", "verify", str(root)]) == 0
    (root / "codec" / "extra.json").write_text("{}")
    assert main(["interop", "verify", str(root)]) == 1
    assert "codec/extra.json is not listed" in capsys.readouterr().err


def _tar_gz(members: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return raw.getvalue()


def test_a_hostile_tarball_is_refused_without_writing_outside(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sums = b"0" * 64 + b"  x\n"
    for members in (
        {"ambient-interop-vectors-0-0/../../escaped": b"x", "ambient-interop-vectors-0-0/SHA256SUMS": sums},
        {"a/SHA256SUMS": sums, "b/SHA256SUMS": sums},
        {"/abs/SHA256SUMS": sums},
    ):
        bad = tmp_path / "bad.tar.gz"
        bad.write_bytes(_tar_gz(members))
        assert main(["interop", "verify", str(bad)]) == 1
        assert f"FAIL {bad}" in capsys.readouterr().err
    assert not (tmp_path.parent / "escaped").exists() and not Path("/abs").exists()
    # a folder named like a release whose hash is not its SHA256SUMS' hash
    sums_ok = f"{hashlib.sha256(b'{}').hexdigest()}  codec/x.json\n".encode()
    bad.write_bytes(_tar_gz({"ambient-interop-vectors-0-000000000000/SHA256SUMS": sums_ok, "ambient-interop-vectors-0-000000000000/codec/x.json": b"{}"}))
    assert main(["interop", "verify", str(bad)]) == 1
    assert "does not carry the hash" in capsys.readouterr().err


def test_release_user_errors_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["interop", "generate"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    f = tmp_path / "file"
    f.write_text("")
    assert main(["interop", "generate", "--release", str(f)]) == 2
    assert main(["interop", "generate", str(tmp_path / "v"), "--release", str(f)]) == 2
    assert not (tmp_path / "v").exists()
    assert main(["interop", "verify", str(tmp_path / "missing.tar.gz")]) == 2
    assert capsys.readouterr().err.count("error: ") == 3
