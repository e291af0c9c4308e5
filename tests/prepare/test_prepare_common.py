"""Download / extraction / markers / audio checks / ffmpeg conversion helpers."""

import hashlib
import io
import logging
import os
import shutil
import stat
import sys
import tarfile
import zipfile

import numpy as np
import pytest
import soundfile as sf

from sslsv_sb.data.prepare import common
from sslsv_sb.errors import SSLSVError


def write_wav(path, seconds=0.2, sr=16000):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    x = np.random.default_rng(0).standard_normal(int(seconds * sr)) * 0.1
    sf.write(path, x.astype(np.float32), sr, subtype="PCM_16")
    return path


def test_download_fresh_then_skip(server, tmp_path):
    url, h = server
    data = h.files["data.bin"]
    md5 = hashlib.md5(data).hexdigest()
    dest = str(tmp_path / "data.bin")
    common.download(f"{url}/data.bin", dest, f"md5:{md5}")
    assert open(dest, "rb").read() == data
    assert not os.path.exists(dest + ".part")
    n = len(h.log)
    common.download(f"{url}/data.bin", dest, md5)  # exists + right checksum
    assert len(h.log) == n


def test_download_resumes_part_with_range(server, tmp_path):
    url, h = server
    data = h.files["data.bin"]
    dest = str(tmp_path / "data.bin")
    with open(dest + ".part", "wb") as f:
        f.write(data[:123_456])
    sha = hashlib.sha256(data).hexdigest()
    common.download(f"{url}/data.bin", dest, f"sha256:{sha}")
    assert h.log[-1][1] == "bytes=123456-"
    assert open(dest, "rb").read() == data


def test_download_server_ignoring_range_restarts(server, tmp_path):
    url, h = server
    h.ignore_range = True
    data = h.files["data.bin"]
    dest = str(tmp_path / "data.bin")
    with open(dest + ".part", "wb") as f:
        f.write(b"garbage")
    common.download(f"{url}/data.bin", dest, hashlib.md5(data).hexdigest())
    assert open(dest, "rb").read() == data


def test_download_checksum_mismatch(server, tmp_path):
    url, _ = server
    dest = str(tmp_path / "data.bin")
    with pytest.raises(SSLSVError, match="md5 checksum mismatch"):
        common.download(f"{url}/data.bin", dest, "md5:" + "0" * 32)
    assert not os.path.exists(dest) and not os.path.exists(dest + ".part")


def test_download_credentials(server, tmp_path):
    url, h = server
    dest = str(tmp_path / "data.bin")
    md5 = hashlib.md5(h.files["data.bin"]).hexdigest()
    with pytest.raises(SSLSVError, match="HTTP 401"):
        common.download(f"{url}/private/data.bin", dest, md5)
    common.download(
        f"{url}/private/data.bin", dest, md5, user="alice", password="secret"
    )
    assert open(dest, "rb").read() == h.files["data.bin"]
    with pytest.raises(SSLSVError, match="HTTP 404"):
        common.download(f"{url}/nothere.bin", str(tmp_path / "x"), verify=False)


def test_download_without_checksum_needs_no_verify(server, tmp_path, caplog):
    url, h = server
    dest = str(tmp_path / "data.bin")
    with pytest.raises(SSLSVError) as e:
        common.download(f"{url}/data.bin", dest)
    msg = str(e.value)
    assert "data.bin" in msg and "no known checksum" in msg and "--no-verify" in msg
    assert "\n" not in msg
    assert h.log == [] and not os.path.exists(dest)  # refused before any request
    with caplog.at_level(logging.WARNING, logger=common.__name__):
        common.download(f"{url}/data.bin", dest, verify=False)
    assert open(dest, "rb").read() == h.files["data.bin"]
    assert any("unverified" in r.getMessage() for r in caplog.records)
    # The file is there now, but still without a checksum: refused again.
    with pytest.raises(SSLSVError, match="no known checksum"):
        common.download(f"{url}/data.bin", dest)
    # A given checksum is checked even with verify=False.
    with pytest.raises(SSLSVError, match="md5 checksum mismatch"):
        common.download(
            f"{url}/data.bin",
            str(tmp_path / "other.bin"),
            "md5:" + "0" * 32,
            verify=False,
        )


def test_checksum_ok_needs_a_checksum(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    assert common.checksum_ok(str(p), hashlib.md5(b"abc").hexdigest())
    assert not common.checksum_ok(str(p), "md5:" + "0" * 32)
    with pytest.raises(SSLSVError, match="no checksum"):
        common.checksum_ok(str(p), None)


def test_download_all_refuses_missing_checksums_up_front(server, tmp_path):
    url, h = server
    md5 = hashlib.md5(h.files["data.bin"]).hexdigest()
    urls = tmp_path / "urls.txt"
    urls.write_text(
        f"a.bin {url}/data.bin md5:{md5}\n"
        f"b.bin {url}/data.bin\n"
        f"# comment\nc.bin {url}/data.bin\n"
    )
    entries = common.read_url_list(str(urls))
    out = tmp_path / "dl"
    with pytest.raises(SSLSVError) as e:
        common.download_all(entries, str(out), source=str(urls))
    assert str(e.value).startswith(
        f"{urls}: no known checksum for b.bin (line 2), c.bin (line 4); "
    )
    assert h.log == [] and not out.exists()  # not even a.bin was fetched
    paths = common.download_all(entries, str(out), verify=False)
    assert [os.path.basename(p) for p in paths] == ["a.bin", "b.bin", "c.bin"]


def test_read_url_list(tmp_path):
    p = tmp_path / "urls.txt"
    p.write_text(
        "# comment\n\nfoo.zip http://h/foo.zip md5:" + "a" * 32 + "\n"
        "bar.zip http://h/bar.zip\n"
    )
    entries = common.read_url_list(str(p))
    assert [e[0] for e in entries] == ["foo.zip", "bar.zip"]
    assert entries[0][2] == "md5:" + "a" * 32 and entries[1][2] is None
    p.write_text("foo.zip http://h/foo.zip\nfoo.zip http://h/other.zip\n")
    with pytest.raises(SSLSVError, match=r"urls.txt:2: file name 'foo.zip' already"):
        common.read_url_list(str(p))
    p.write_text("foo.zip not-a-url\n")
    with pytest.raises(SSLSVError, match=r"urls.txt:1: 'not-a-url' is not a URL"):
        common.read_url_list(str(p))
    p.write_text("foo.zip http://h/foo.zip md5:xyz\n")
    with pytest.raises(SSLSVError, match=r"urls.txt:1: unrecognised checksum"):
        common.read_url_list(str(p))


def test_extract_zip_tar_with_marker(tmp_path):
    src = tmp_path / "src"
    write_wav(str(src / "a" / "x.wav"))
    zp, tp = str(tmp_path / "a.zip"), str(tmp_path / "a.tar.gz")
    with zipfile.ZipFile(zp, "w") as z:
        z.write(src / "a" / "x.wav", "a/x.wav")
    with tarfile.open(tp, "w:gz") as t:
        t.add(src / "a", "a")
    for arch, out in ((zp, tmp_path / "oz"), (tp, tmp_path / "ot")):
        common.extract(arch, str(out))
        assert (out / "a" / "x.wav").is_file()
        assert common.is_done(str(out), "extract_" + os.path.basename(arch))
        os.remove(arch)
        common.extract(arch, str(out))  # marker: archive not needed any more
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not an archive")
    with pytest.raises(SSLSVError, match="bad.zip: not a zip or tar archive"):
        common.extract(str(bad), str(tmp_path / "ob"))
    evil = str(tmp_path / "evil.zip")
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../escape.txt", "x")
    with pytest.raises(SSLSVError, match="'..' path component"):
        common.extract(evil, str(tmp_path / "oe"))


def _tar_member(name, kind="file", linkname=""):
    info = tarfile.TarInfo(name)
    info.type = {
        "file": tarfile.REGTYPE,
        "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE,
        "fifo": tarfile.FIFOTYPE,
        "chardev": tarfile.CHRTYPE,
    }[kind]
    info.linkname = linkname
    return info


def _make_tar(path, bad):
    """A tar.gz with one good file, then ``bad`` (a TarInfo), then another file."""
    with tarfile.open(path, "w:gz") as t:
        for info in (_tar_member("corpus/a.txt"), bad, _tar_member("corpus/z.txt")):
            data = b"x" if info.isreg() else b""
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def _make_zip(path, bad_name, symlink=False):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("corpus/a.txt", "x")
        info = zipfile.ZipInfo(bad_name)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, "/etc/passwd" if symlink else "x")
        z.writestr("corpus/z.txt", "x")


@pytest.mark.parametrize(
    "kind,member,why",
    [
        (
            "tar",
            _tar_member("corpus/link", "symlink", "/etc/passwd"),
            "is a symbolic link (to '/etc/passwd')",
        ),
        (
            "tar",
            _tar_member("corpus/rel", "symlink", "a.txt"),
            "is a symbolic link (to 'a.txt')",
        ),
        (
            "tar",
            _tar_member("corpus/hard", "hardlink", "corpus/a.txt"),
            "is a hard link (to 'corpus/a.txt')",
        ),
        ("tar", _tar_member("corpus/pipe", "fifo"), "is a device or FIFO special file"),
        (
            "tar",
            _tar_member("corpus/tty", "chardev"),
            "is a device or FIFO special file",
        ),
        ("tar", _tar_member("/tmp/abs.txt"), "has an absolute path"),
        ("tar", _tar_member("corpus/../../up.txt"), "has a '..' path component"),
        ("zip", ("corpus/link", True), "is a symbolic link"),
        ("zip", ("/tmp/abs.txt", False), "has an absolute path"),
        ("zip", ("corpus/../../up.txt", False), "has a '..' path component"),
    ],
)
def test_extract_refuses_links_and_unsafe_paths(tmp_path, kind, member, why):
    if kind == "tar":
        archive = str(tmp_path / "evil.tar.gz")
        _make_tar(archive, member)
        name = member.name
    else:
        archive = str(tmp_path / "evil.zip")
        _make_zip(archive, *member)
        name = member[0]
    dest = tmp_path / "out"
    with pytest.raises(SSLSVError) as e:
        common.extract(archive, str(dest))
    assert str(e.value) == (
        f"{archive}: member '{name}' {why}; the archive was not extracted (only "
        "plain files and folders are accepted)"
    )
    # Checked before writing: not even the good first member was extracted.
    assert os.listdir(dest) == []
    assert not common.is_done(str(dest), "extract_" + os.path.basename(archive))


def test_extract_corrupt_archive(tmp_path):
    src = tmp_path / "src"
    write_wav(str(src / "a" / "x.wav"), seconds=2.0)
    tp = tmp_path / "a.tar.gz"
    with tarfile.open(tp, "w:gz") as t:
        t.add(src / "a", "a")
    data = tp.read_bytes()
    tp.write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(SSLSVError, match=r"a.tar.gz: corrupt or truncated archive"):
        common.extract(str(tp), str(tmp_path / "out"))
    assert not common.is_done(str(tmp_path / "out"), "extract_a.tar.gz")


def test_run_step_markers(tmp_path):
    calls = []
    out = tmp_path / "out.txt"

    def fn():
        calls.append(1)
        out.write_text("x")

    assert common.run_step(str(tmp_path), "s1", fn, outputs=[str(out)])[0]
    assert not common.run_step(str(tmp_path), "s1", fn, outputs=[str(out)])[0]
    out.unlink()  # a deleted output re-runs the step
    assert common.run_step(str(tmp_path), "s1", fn, outputs=[str(out)])[0]
    assert common.run_step(str(tmp_path), "s1", fn, force=True)[0]
    assert len(calls) == 3
    assert (tmp_path / ".done_s1").is_file()


def test_audio_validation_messages(tmp_path):
    good = write_wav(str(tmp_path / "good.wav"))
    assert common.audio_info(good) == 3200
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF" + os.urandom(100))
    write_wav(str(tmp_path / "sr8k.wav"), sr=8000)
    sf.write(str(tmp_path / "nosamples.wav"), np.zeros(0, np.float32), 16000)
    cases = {
        "missing.wav": "file not found",
        "empty.wav": "zero-length file",
        "corrupt.wav": "unreadable or corrupt audio",
        "sr8k.wav": "sample rate 8000 Hz, expected 16000 Hz",
        "nosamples.wav": "zero-length audio",
    }
    for name, msg in cases.items():
        with pytest.raises(SSLSVError, match=msg) as e:
            common.audio_info(str(tmp_path / name), line_ref="list.csv:7")
        assert name in str(e.value) and "list.csv:7" in str(e.value)
    items = [(str(tmp_path / n), None) for n in ["good.wav", *cases]]
    rep = common.Report(verbose=False)
    assert common.check_audio_files(items, skip_invalid=True, report=rep) == [0]
    assert rep.skipped_count == 5


def test_ffmpeg_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SSLSVError, match="ffmpeg not found"):
        common.convert_to_wav([(str(tmp_path / "a.m4a"), str(tmp_path / "a.wav"))])


def make_fake_ffmpeg(tmp_path):
    """A stand-in ffmpeg: reads the input with soundfile (fails on 'bad' names)."""
    script = tmp_path / "fake_ffmpeg"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, soundfile as sf\n"
        "a = sys.argv; src = a[a.index('-i') + 1]; dst = a[-1]\n"
        "if 'bad' in src: sys.stderr.write('Invalid data found\\n'); sys.exit(1)\n"
        "x, sr = sf.read(src)\n"
        "assert a[a.index('-ar') + 1] == '16000' and a[a.index('-ac') + 1] == '1'\n"
        "sf.write(dst, x, sr, subtype='PCM_16', format='WAV')\n"
    )
    script.chmod(0o755)
    return str(script)


def test_convert_with_fake_ffmpeg(monkeypatch, tmp_path):
    fake = make_fake_ffmpeg(tmp_path)
    monkeypatch.setattr(shutil, "which", lambda name: fake)
    jobs = []
    for i in range(3):
        src = write_wav(str(tmp_path / "in" / f"{i}.wav"))
        os.rename(src, src[:-4] + ".m4a")
        jobs.append((src[:-4] + ".m4a", str(tmp_path / "out" / "s" / f"{i}.wav")))
    assert common.convert_to_wav(jobs, num_workers=2) == (3, 0, 0)
    assert all(sf.info(d).samplerate == 16000 for _, d in jobs)
    assert common.convert_to_wav(jobs, num_workers=2) == (0, 3, 0)  # resumable
    bad = (str(tmp_path / "in" / "bad.m4a"), str(tmp_path / "out" / "bad.wav"))
    open(bad[0], "wb").close()
    with pytest.raises(SSLSVError, match="bad.m4a: ffmpeg failed"):
        common.convert_to_wav([*jobs, bad])
    rep = common.Report(verbose=False)
    assert common.convert_to_wav([*jobs, bad], skip_invalid=True, report=rep) == (
        0,
        3,
        1,
    )
    assert rep.skipped_count == 1 and not os.path.exists(bad[1])


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_convert_with_real_ffmpeg(tmp_path):
    src = write_wav(str(tmp_path / "a.wav"), sr=44100)
    m4a = str(tmp_path / "a.m4a")
    os.system(f"ffmpeg -nostdin -loglevel error -y -i {src} -c:a aac {m4a}")
    dst = str(tmp_path / "out" / "a.wav")
    assert common.convert_to_wav([(m4a, dst)]) == (1, 0, 0)
    info = sf.info(dst)
    assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
