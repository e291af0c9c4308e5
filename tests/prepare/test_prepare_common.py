"""Download / extraction / markers / audio checks / ffmpeg conversion helpers."""

import base64
import hashlib
import http.server
import os
import shutil
import sys
import tarfile
import threading
import zipfile

import numpy as np
import pytest
import soundfile as sf

from sslsv_sb.data.prepare import common
from sslsv_sb.errors import SSLSVError


def write_wav(path, seconds=0.2, sr=16000):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    x = (np.random.default_rng(0).standard_normal(int(seconds * sr)) * 0.1)
    sf.write(path, x.astype(np.float32), sr, subtype="PCM_16")
    return path


# ------------------------------------------------------------------ HTTP server
class _Handler(http.server.BaseHTTPRequestHandler):
    files = {}
    log = []
    ignore_range = False
    auth = ("alice", "secret")

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).log.append((self.path, self.headers.get("Range")))
        if self.path.startswith("/private/"):
            token = base64.b64encode(":".join(self.auth).encode()).decode()
            if self.headers.get("Authorization") != f"Basic {token}":
                self.send_response(401)
                self.end_headers()
                return
        data = self.files.get(self.path.split("/")[-1])
        if data is None:
            self.send_response(404)
            self.end_headers()
            return
        rng = self.headers.get("Range")
        if rng and not self.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            body = data[start:]
            self.send_response(206)
            self.send_header("Content-Range",
                             f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    _Handler.files = {"data.bin": os.urandom(300_000)}
    _Handler.log = []
    _Handler.ignore_range = False
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler
    httpd.shutdown()
    httpd.server_close()


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
    with pytest.raises(SSLSVError, match="HTTP 401"):
        common.download(f"{url}/private/data.bin", dest)
    common.download(f"{url}/private/data.bin", dest, user="alice", password="secret")
    assert open(dest, "rb").read() == h.files["data.bin"]
    with pytest.raises(SSLSVError, match="HTTP 404"):
        common.download(f"{url}/nothere.bin", str(tmp_path / "x"))


def test_read_url_list(tmp_path):
    p = tmp_path / "urls.txt"
    p.write_text("# comment\n\nfoo.zip http://h/foo.zip md5:" + "a" * 32 + "\n"
                 "bar.zip http://h/bar.zip\n")
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
    with pytest.raises(SSLSVError, match="outside"):
        common.extract(evil, str(tmp_path / "oe"))


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
        "sf.write(dst, x, sr, subtype='PCM_16', format='WAV')\n")
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
    assert common.convert_to_wav([*jobs, bad], skip_invalid=True, report=rep) == \
        (0, 3, 1)
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
