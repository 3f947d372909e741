"""Downloads against a local HTTP server (127.0.0.1) that supports Range and can misbehave."""

import hashlib
import http.server
import threading

import pytest

from lanternlm.data import builtin
from lanternlm.data.download import cache_dir, download, filename_for
from lanternlm.data.sources import iter_documents
from lanternlm.errors import LanternError

PAYLOAD = bytes(range(256)) * 400          # 102,400 bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Server:
    """Serves ``files`` by name; records each request's Range header; may cut a response short."""

    def __init__(self, files):
        self.files = files
        self.requests = []           # (path, Range header or None)
        self.cut_after = None        # send only this many bytes once, then close
        self.ignore_range = False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                start = 0
                rng = self.headers.get("Range")
                if rng and not server.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    self.wfile.write(body[:server.cut_after])
                    server.cut_after = None
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server({"data.bin": PAYLOAD, "input.txt": b"First Citizen:\nBefore we proceed.\n\nAll:\nSpeak.\n"})
    yield s
    s.close()


def test_download_verifies_and_caches(server, tmp_path):
    path = download(f"{server.url}/data.bin", SHA, cache=tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert path == tmp_path / "downloads" / filename_for(f"{server.url}/data.bin")
    again = download(f"{server.url}/data.bin", SHA, cache=tmp_path)
    assert again == path
    assert len(server.requests) == 1                    # the second call was a cache hit
    assert not list((tmp_path / "downloads").glob("*.part"))


def test_checksum_mismatch_keeps_nothing(server, tmp_path):
    with pytest.raises(LanternError, match="sha256 mismatch"):
        download(f"{server.url}/data.bin", "0" * 64, cache=tmp_path)
    assert list((tmp_path / "downloads").iterdir()) == []


def test_resume_from_partial_file_with_range(server, tmp_path):
    part = tmp_path / "downloads" / (filename_for(f"{server.url}/data.bin") + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:30_000])
    path = download(f"{server.url}/data.bin", SHA, cache=tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("data.bin", "bytes=30000-")]


def test_interrupted_download_resumes(server, tmp_path):
    server.cut_after = 40_000
    with pytest.raises(LanternError, match="run again to resume"):
        download(f"{server.url}/data.bin", SHA, cache=tmp_path)
    part = tmp_path / "downloads" / (filename_for(f"{server.url}/data.bin") + ".part")
    assert part.stat().st_size == 40_000
    assert not part.with_suffix("").exists()
    path = download(f"{server.url}/data.bin", SHA, cache=tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("data.bin", "bytes=40000-")


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.ignore_range = True
    part = tmp_path / "downloads" / (filename_for(f"{server.url}/data.bin") + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage that must not be kept")
    assert download(f"{server.url}/data.bin", SHA, cache=tmp_path).read_bytes() == PAYLOAD


def test_complete_part_file_is_finished_without_refetching_bytes(server, tmp_path):
    part = tmp_path / "downloads" / (filename_for(f"{server.url}/data.bin") + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD)
    assert download(f"{server.url}/data.bin", SHA, cache=tmp_path).read_bytes() == PAYLOAD
    assert server.requests == [("data.bin", f"bytes={len(PAYLOAD)}-")]


def test_unpinned_download_records_checksum_and_detects_change(server, tmp_path):
    path = download(f"{server.url}/data.bin", cache=tmp_path)
    assert path.with_name(path.name + ".sha256").read_text().strip() == SHA
    path.write_bytes(b"tampered")                       # the cache changed behind our back
    assert download(f"{server.url}/data.bin", cache=tmp_path).read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_http_errors_are_clear(server, tmp_path):
    with pytest.raises(LanternError, match="HTTP 404"):
        download(f"{server.url}/missing.bin", cache=tmp_path)
    with pytest.raises(LanternError, match="cannot download"):
        download("http://127.0.0.1:9/nothing", cache=tmp_path, timeout=2)


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("LANTERN_HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home"
    assert cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("LANTERN_HOME")
    assert cache_dir().name == "lanternlm"
    assert filename_for("https://h/a/b/c.parquet?x=1").endswith("-c.parquet")


def test_url_source_and_builtin_download_via_mirror(server, tmp_path, monkeypatch):
    sha = hashlib.sha256(server.files["input.txt"]).hexdigest()
    docs = list(iter_documents(f"{server.url}/input.txt#sha256={sha}", cache=tmp_path))
    assert [d.text for d in docs] == [server.files["input.txt"].decode()]
    monkeypatch.setitem(builtin.DOWNLOADS, "tinyshakespeare",
                        builtin.Download("https://example.invalid/char-rnn/input.txt", sha, {"text_split": "paragraph"}))
    corpus = builtin.get("tinyshakespeare", cache=tmp_path / "c2", mirror=server.url)
    assert corpus.sha256 == sha and corpus.kind == "text"
    docs = list(iter_documents("builtin:tinyshakespeare", cache=tmp_path / "c2"))   # cached: no server needed
    assert [d.text for d in docs] == ["First Citizen:\nBefore we proceed.\n", "All:\nSpeak.\n"]
