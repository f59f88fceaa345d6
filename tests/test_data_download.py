"""Safe archive extraction and downloads over file:// (no test touches the network)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile

import pytest

from nfd.cli import main
from nfd.data import download as dl
from nfd.data.archive import ArchiveError, iter_archive_files, list_members, safe_extract


def add(tf: tarfile.TarFile, name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def make_tar(path, members, mode="w:gz"):
    with tarfile.open(path, mode) as tf:
        for m in members:
            add(tf, *m)
    return path


GOOD = [("pkg/a.txt", b"alpha"), ("pkg/sub/b.txt", b"beta"), ("pkg/link", b"", tarfile.SYMTYPE, "sub/b.txt")]


def test_safe_extract_good_tar_and_zip(tmp_path):
    arc = make_tar(tmp_path / "good.tgz", GOOD)
    dest = tmp_path / "out"
    created = safe_extract(arc, dest)
    assert [p.name for p in created] == ["pkg"]
    assert (dest / "pkg/a.txt").read_bytes() == b"alpha" and (dest / "pkg/link").read_bytes() == b"beta"
    assert not any(p.name.startswith(".nfd-extract") for p in dest.iterdir())
    z = tmp_path / "good.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("d/x.txt", "xx")
    safe_extract(z, tmp_path / "zout")
    assert (tmp_path / "zout/d/x.txt").read_text() == "xx"


@pytest.mark.parametrize(
    "bad, why",
    [
        (("/tmp/evil.txt", b"x"), "absolute path"),
        (("pkg/../../evil.txt", b"x"), "'..' in path"),
        (("pkg/esc", b"", tarfile.SYMTYPE, "../../etc/passwd"), "symlink to '../../etc/passwd' escapes"),
        (("pkg/abs", b"", tarfile.SYMTYPE, "/etc/passwd"), "symlink to '/etc/passwd' escapes"),
        (("pkg/hard", b"", tarfile.LNKTYPE, "../outside"), "hardlink to '../outside' escapes"),
        (("pkg/dev", b"", tarfile.CHRTYPE), "special file"),
    ],
)
def test_unsafe_tar_rejected_whole(tmp_path, bad, why):
    arc = make_tar(tmp_path / "bad.tgz", [*GOOD[:2], bad, ("pkg/z.txt", b"late")])
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ArchiveError) as e:
        safe_extract(arc, dest)
    assert str(bad[0]) in str(e.value) and why in str(e.value) and "bad.tgz" in str(e.value)
    assert list(dest.iterdir()) == []  # nothing extracted, not even the good members before it
    assert not (tmp_path / "evil.txt").exists()
    with pytest.raises(ArchiveError):
        list(iter_archive_files(arc))


def test_unsafe_zip_rejected(tmp_path):
    z = tmp_path / "bad.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr("../evil.txt", "x")
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError, match=r"bad\.zip: unsafe member '\.\./evil\.txt'"):
        safe_extract(z, dest)
    assert not dest.exists() or list(dest.iterdir()) == []
    z2 = tmp_path / "link.zip"
    with zipfile.ZipFile(z2, "w") as zf:
        info = zipfile.ZipInfo("esc")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "../../outside")
    with pytest.raises(ArchiveError, match="symlink to '../../outside' escapes"):
        safe_extract(z2, dest)


def test_truncated_and_corrupt_archives(tmp_path):
    arc = make_tar(tmp_path / "good.tgz", [("pkg/big.bin", os.urandom(200_000))])
    data = arc.read_bytes()
    trunc = tmp_path / "trunc.tgz"
    trunc.write_bytes(data[: len(data) // 2])
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError, match=r"trunc\.tgz: truncated or corrupt archive"):
        safe_extract(trunc, dest)
    assert not dest.exists() or list(dest.iterdir()) == []
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        list(iter_archive_files(trunc))
    # a flipped byte in the gzip trailer (CRC) is caught too
    corrupt = tmp_path / "corrupt.tgz"
    corrupt.write_bytes(data[:-8] + bytes([data[-8] ^ 0xFF]) + data[-7:])
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        list_members(corrupt)
    zbad = tmp_path / "trunc.zip"
    with zipfile.ZipFile(tmp_path / "ok.zip", "w") as zf:
        zf.writestr("a.txt", "a" * 1000)
    zbad.write_bytes((tmp_path / "ok.zip").read_bytes()[:-30])
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        safe_extract(zbad, dest)
    notarc = tmp_path / "plain.txt"
    notarc.write_text("hi")
    with pytest.raises(ArchiveError, match="not a tar or zip"):
        safe_extract(notarc, dest)


# --- downloads --------------------------------------------------------------------------------------------------------
def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_fetch_file_url_checksums(tmp_path):
    payload = os.urandom(50_000)
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    url = src.as_uri()
    dest = tmp_path / "dl" / "file.bin"
    assert dl.fetch(url, dest, sha256=sha(payload), size=len(payload), progress=False) == dest
    assert dest.read_bytes() == payload
    # wrong sha256: error names the file and the mirror, nothing left behind
    dest2 = tmp_path / "dl" / "other.bin"
    with pytest.raises(dl.DownloadError) as e:
        dl.fetch(url, dest2, sha256="0" * 64, progress=False)
    msg = str(e.value)
    assert "other.bin" in msg and "sha256 mismatch" in msg and url in msg and "\n" not in msg
    assert sorted(p.name for p in dest2.parent.iterdir()) == ["file.bin"]
    # wrong size, wrong md5
    with pytest.raises(dl.DownloadError, match="size mismatch"):
        dl.fetch(url, dest2, size=1, progress=False)
    with pytest.raises(dl.DownloadError, match="md5 mismatch"):
        dl.fetch(url, dest2, md5="0" * 32, progress=False)
    assert not dest2.exists()


def test_fetch_falls_back_to_next_mirror_and_keeps_verified_file(tmp_path):
    payload = b"mirror two"
    good = tmp_path / "good.bin"
    good.write_bytes(payload)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"tampered")
    dest = tmp_path / "dl" / "f.bin"
    urls = [(tmp_path / "missing.bin").as_uri(), bad.as_uri(), good.as_uri()]
    dl.fetch(urls, dest, sha256=sha(payload), progress=False)
    assert dest.read_bytes() == payload
    good.unlink()  # already present and verified: no download needed
    dl.fetch(urls, dest, sha256=sha(payload), progress=False)
    with pytest.raises(dl.DownloadError, match="download failed from every mirror"):
        dl.fetch([(tmp_path / "missing.bin").as_uri()], tmp_path / "dl" / "g.bin", progress=False)


def test_download_dataset_extracts_safely(tmp_path, monkeypatch):
    arc = make_tar(tmp_path / "toy.tgz", GOOD)
    entry = dl.DatasetEntry(
        name="toy",
        description="test",
        files=(dl.RemoteFile("toy.tgz", (arc.as_uri(),), sha256=sha(arc.read_bytes())),),
        extract=True,
    )
    monkeypatch.setitem(dl.REGISTRY, "toy", entry)
    out = tmp_path / "raw"
    assert main(["data", "download", "toy", "--out", str(out), "--quiet"]) == 0
    assert (out / "toy.tgz").is_file() and (out / "pkg/a.txt").read_bytes() == b"alpha"
    # an unsafe archive with the right checksum is still rejected: nothing extracted
    evil = make_tar(tmp_path / "evil.tgz", [("../evil.txt", b"x")])
    monkeypatch.setitem(
        dl.REGISTRY,
        "evil",
        dl.DatasetEntry("evil", "t", (dl.RemoteFile("evil.tgz", (evil.as_uri(),), sha(evil.read_bytes())),), True),
    )
    out2 = tmp_path / "raw2"
    assert main(["data", "download", "evil", "--out", str(out2), "--quiet"]) == 2
    assert sorted(p.name for p in out2.iterdir()) == ["evil.tgz"] and not (tmp_path / "evil.txt").exists()


def test_download_cli_errors(tmp_path, monkeypatch, capsys):
    payload = b"data"
    src = tmp_path / "p.bin"
    src.write_bytes(payload)
    monkeypatch.setitem(
        dl.REGISTRY, "bad", dl.DatasetEntry("bad", "t", (dl.RemoteFile("p.bin", (src.as_uri(),), sha256="f" * 64),))
    )
    assert main(["data", "download", "bad", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sha256 mismatch" in err[0] and "p.bin" in err[0]
    assert not (tmp_path / "o" / "p.bin").exists()
    assert main(["data", "download", "celebahq"]) == 2
    assert "no public direct URL" in capsys.readouterr().err
    assert main(["data", "download", "nope"]) == 2
    assert main(["data", "download", "--list"]) == 0
    assert "shapenet_vox32" in capsys.readouterr().out


def test_registry_entries():
    m = dl.REGISTRY["mnist"]
    assert len(m.files) == 4 and all(len(f.urls) == 2 and f.md5 and f.size for f in m.files)
    assert any("ossci-datasets.s3.amazonaws.com/mnist/" in u for u in m.files[0].urls)
    assert any("storage.googleapis.com/cvdf-datasets/mnist/" in u for u in m.files[0].urls)
    assert dl.REGISTRY["shapenet_vox32"].files[0].urls == (
        "http://cvgl.stanford.edu/data2/ShapeNetVox32.tgz",
        "http://ftp.cs.stanford.edu/cs/cvgl/ShapeNetVox32.tgz",
    )
    assert not dl.REGISTRY["celebahq"].files and "prepare celebahq" in dl.REGISTRY["celebahq"].instructions


def test_http_resume_with_range(tmp_path):
    """Resume a partial download with an HTTP Range request (a local loopback server, not the network)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    payload = os.urandom(100_000)
    seen_ranges: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            rng = self.headers.get("Range")
            seen_ranges.append(rng)
            start = int(rng.split("=")[1].split("-")[0]) if rng else 0
            body = payload[start:]
            self.send_response(206 if rng else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/f.bin"
        dest = tmp_path / "f.bin"
        (tmp_path / ".f.bin.part").write_bytes(payload[:30_000])  # an interrupted earlier attempt
        dl.fetch(url, dest, sha256=sha(payload), size=len(payload), progress=False)
        assert dest.read_bytes() == payload and seen_ranges == ["bytes=30000-"]
        assert not (tmp_path / ".f.bin.part").exists()
    finally:
        server.shutdown()
        server.server_close()


def test_unpublished_checksum_is_recorded_then_checked(tmp_path, monkeypatch, capsys):
    """A file without a published checksum (ShapeNetVox32.tgz): the first download records its sha256 beside it;
    a later run finds a changed copy and says so in one line."""
    arc = make_tar(tmp_path / "toy.tgz", GOOD)
    entry = dl.DatasetEntry("nosum", "t", (dl.RemoteFile("toy.tgz", (arc.as_uri(),)),))
    monkeypatch.setitem(dl.REGISTRY, "nosum", entry)
    out = tmp_path / "raw"
    assert main(["data", "download", "nosum", "--out", str(out), "--quiet"]) == 0
    pin = out / "toy.tgz.sha256"
    assert pin.read_text() == f"{sha(arc.read_bytes())}  toy.tgz\n"  # sha256sum's format, an independent digest
    assert main(["data", "download", "nosum", "--out", str(out), "--quiet"]) == 0  # unchanged: accepted
    capsys.readouterr()
    data = bytearray((out / "toy.tgz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / "toy.tgz").write_bytes(bytes(data))
    assert main(["data", "download", "nosum", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "toy.tgz" in err[0] and "recorded at its first download" in err[0]
    assert dl.REGISTRY["shapenet_vox32"].files[0].sha256 is None  # none published: the pin is what checks it
