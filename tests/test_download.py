"""phonerec.data.download against a real HTTP server on 127.0.0.1 (a thread in this process; nothing leaves
loopback)."""

import hashlib
import random
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import phonerec.data.download as dl
from phonerec.base.errors import CorpusError

PAYLOAD = random.Random(20240521).randbytes(300_000)
MD5 = hashlib.md5(PAYLOAD).hexdigest()
HALF = len(PAYLOAD) // 2
PARTIAL = 123_457  # bytes already in a `.part` file


class Handler(BaseHTTPRequestHandler):
    """Serves PAYLOAD; the path picks the behaviour:

    /ranged     honours `Range: bytes=N-` (206 + Content-Range, or 416 past the end)
    /norange    ignores Range: always 200 with the whole body
    /nolength   honours Range but never sends Content-Length (HTTP/1.0: closing the connection ends the body)
    /nolength-norange  ignores Range and sends no Content-Length
    /flaky      first request: 200 with the full Content-Length, then closes after half the body; later as /ranged
    /chunked    first request: chunked 200 that closes midway without the last chunk; later as /ranged
    anything else: 404
    """

    timeout = 5  # a stuck connection cannot hold a server thread for long

    def log_message(self, format, *args):  # keep the test output quiet
        pass

    def do_GET(self):
        server = self.server
        with server.lock:
            server.hits[self.path] = server.hits.get(self.path, 0) + 1
            first = server.hits[self.path] == 1
        seen = {"path": self.path, "range": self.headers.get("Range")}
        server.requests.append(seen)
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(match.group(1)) if match else None

        if self.path == "/flaky" and first:
            seen["sent"] = HALF
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[:HALF])
            self.close_connection = True
            return
        if self.path == "/chunked" and first:
            seen["sent"] = 100_000
            self.protocol_version = "HTTP/1.1"
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n" % 100_000 + PAYLOAD[:100_000] + b"\r\n")
            self.close_connection = True  # no terminating 0-chunk: the body breaks off
            return
        if self.path in ("/ranged", "/flaky", "/chunked", "/nolength"):
            length = self.path != "/nolength"
            if start is not None and start >= len(PAYLOAD):
                seen["sent"] = 0
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if start is not None:
                self._send(206, PAYLOAD[start:], length, f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
            else:
                self._send(200, PAYLOAD, length)
            return
        if self.path == "/norange":
            self._send(200, PAYLOAD, True)
            return
        if self.path == "/nolength-norange":
            self._send(200, PAYLOAD, False)
            return
        seen["sent"] = 0
        self.send_error(404)

    def _send(self, status, body, length, content_range=None):
        self.server.requests[-1]["sent"] = len(body)
        self.send_response(status)
        if content_range:
            self.send_header("Content-Range", content_range)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server:
    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.lock = threading.Lock()
        self.httpd.hits = {}
        self.httpd.requests = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def requests(self):
        return self.httpd.requests

    def url(self, path):
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"


@pytest.fixture
def server():
    srv = Server()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(timeout=5)


@pytest.fixture(autouse=True)
def no_proxy_no_sleep(monkeypatch):
    """Loopback only (no proxy from the environment), and record the retry back-off instead of waiting."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    sleeps = []
    monkeypatch.setattr(dl.time, "sleep", sleeps.append)
    return sleeps


@pytest.fixture
def bar_totals(monkeypatch):
    """The `total` each progress bar was created with."""
    totals = []
    real = dl.tqdm

    def spy(*args, **kwargs):
        totals.append(kwargs.get("total"))
        return real(*args, **kwargs)

    monkeypatch.setattr(dl, "tqdm", spy)
    return totals


def part_of(dest):
    return dest.with_name(dest.name + ".part")


def test_plain_download(server, tmp_path, bar_totals):
    dest = tmp_path / "sub" / "corpus.tar.gz"
    assert dl.download(server.url("/ranged"), dest, size=len(PAYLOAD), md5=MD5, timeout=5) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not part_of(dest).exists()
    assert server.requests == [{"path": "/ranged", "range": None, "sent": len(PAYLOAD)}]
    assert bar_totals == [len(PAYLOAD)]


def test_resume_asks_for_the_rest(server, tmp_path, bar_totals):
    dest = tmp_path / "corpus.tar.gz"
    part_of(dest).write_bytes(PAYLOAD[:PARTIAL])
    dl.download(server.url("/ranged"), dest, size=len(PAYLOAD), md5=MD5, timeout=5)
    assert dest.read_bytes() == PAYLOAD
    assert not part_of(dest).exists()
    # One request, for the missing tail only.
    assert server.requests == [{"path": "/ranged", "range": f"bytes={PARTIAL}-", "sent": len(PAYLOAD) - PARTIAL}]
    assert bar_totals == [len(PAYLOAD)]


def test_complete_part_answered_416_is_kept(server, tmp_path):
    dest = tmp_path / "corpus.tar.gz"
    part_of(dest).write_bytes(PAYLOAD)
    dl.download(server.url("/ranged"), dest, size=len(PAYLOAD), md5=MD5, timeout=5)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [{"path": "/ranged", "range": f"bytes={len(PAYLOAD)}-", "sent": 0}]


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    dest = tmp_path / "corpus.tar.gz"
    part_of(dest).write_bytes(PAYLOAD[:PARTIAL])
    dl.download(server.url("/norange"), dest, timeout=5)  # no size/md5: the bytes themselves are checked
    assert dest.read_bytes() == PAYLOAD  # not PAYLOAD[:PARTIAL] + PAYLOAD
    assert not part_of(dest).exists()
    assert server.requests == [{"path": "/norange", "range": f"bytes={PARTIAL}-", "sent": len(PAYLOAD)}]


@pytest.mark.parametrize("path", ["/nolength", "/nolength-norange"])
@pytest.mark.parametrize("have", [0, PARTIAL])
def test_no_content_length(server, tmp_path, bar_totals, path, have):
    dest = tmp_path / "corpus.tar.gz"
    if have:
        part_of(dest).write_bytes(PAYLOAD[:have])
    dl.download(server.url(path), dest, size=len(PAYLOAD), md5=MD5, timeout=5)
    assert dest.read_bytes() == PAYLOAD
    assert not part_of(dest).exists()
    assert bar_totals == [None]  # a progress bar without a total
    resumed = have and path == "/nolength"  # 206 with only the tail; /nolength-norange sends everything again
    sent = len(PAYLOAD) - have if resumed else len(PAYLOAD)
    assert server.requests == [{"path": path, "range": f"bytes={have}-" if have else None, "sent": sent}]


def test_broken_transfer_is_resumed(server, tmp_path, no_proxy_no_sleep):
    dest = tmp_path / "corpus.tar.gz"
    dl.download(server.url("/flaky"), dest, size=len(PAYLOAD), md5=MD5, timeout=5)
    assert dest.read_bytes() == PAYLOAD
    assert not part_of(dest).exists()
    assert server.requests == [
        {"path": "/flaky", "range": None, "sent": HALF},
        {"path": "/flaky", "range": f"bytes={HALF}-", "sent": len(PAYLOAD) - HALF},
    ]
    assert no_proxy_no_sleep == [2]  # one back-off before the second attempt


def test_broken_chunked_transfer_is_resumed(server, tmp_path, no_proxy_no_sleep):
    # A chunked body that breaks off raises http.client.IncompleteRead, which is not an OSError.
    dest = tmp_path / "corpus.tar.gz"
    dl.download(server.url("/chunked"), dest, size=len(PAYLOAD), md5=MD5, timeout=5)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.requests) == 2
    assert server.requests[0]["range"] is None
    assert re.fullmatch(r"bytes=\d+-", server.requests[1]["range"])
    assert no_proxy_no_sleep == [2]


def test_wrong_md5_fails_and_removes_the_part(server, tmp_path):
    dest = tmp_path / "corpus.tar.gz"
    with pytest.raises(CorpusError, match="MD5"):
        dl.download(server.url("/ranged"), dest, size=len(PAYLOAD), md5="0" * 32, timeout=5)
    assert not dest.exists()
    assert not part_of(dest).exists()
    assert len(server.requests) == 1


def test_wrong_size_fails(server, tmp_path):
    dest = tmp_path / "corpus.tar.gz"
    with pytest.raises(CorpusError, match=f"{len(PAYLOAD)} bytes, expected {len(PAYLOAD) + 1}"):
        dl.download(server.url("/ranged"), dest, size=len(PAYLOAD) + 1, timeout=5)
    assert not dest.exists()
    assert not part_of(dest).exists()


def test_unreachable_server_fails_at_once(tmp_path, no_proxy_no_sleep):
    # A bound socket that does not listen: connecting to its port is refused, and no other process can take it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/corpus.tar.gz"
        dest = tmp_path / "corpus.tar.gz"
        started = time.monotonic()
        with pytest.raises(CorpusError, match=re.escape(url)):
            dl.download(url, dest, timeout=5)
        assert time.monotonic() - started < 3
    assert no_proxy_no_sleep == []  # gave up after the first attempt, no back-off
    assert not dest.exists()
    assert not part_of(dest).exists()


def test_http_404(server, tmp_path, no_proxy_no_sleep):
    dest = tmp_path / "corpus.tar.gz"
    with pytest.raises(CorpusError, match="HTTP 404") as caught:
        dl.download(server.url("/missing"), dest, timeout=5)
    assert server.url("/missing") in str(caught.value)
    assert not dest.exists()
    assert len(server.requests) == 1
    assert no_proxy_no_sleep == []


def test_existing_verified_dest_is_not_downloaded_again(server, tmp_path):
    dest = tmp_path / "corpus.tar.gz"
    dest.write_bytes(PAYLOAD)
    assert dl.download(server.url("/ranged"), dest, size=len(PAYLOAD), md5=MD5, timeout=5) == dest
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == []


def test_existing_dest_that_fails_verification_is_reported(server, tmp_path):
    dest = tmp_path / "corpus.tar.gz"
    dest.write_bytes(PAYLOAD[:-1])
    with pytest.raises(CorpusError, match="expected"):
        dl.download(server.url("/ranged"), dest, size=len(PAYLOAD), md5=MD5, timeout=5)
    assert dest.read_bytes() == PAYLOAD[:-1]  # left for the user to look at
    assert server.requests == []
