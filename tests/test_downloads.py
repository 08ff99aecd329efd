"""Model downloads: the transfer engine and manager against a real local HTTP server, then POST /v1/models."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time

import pytest

from jan_server.downloads import DownloadError, DownloadManager, Transfer, partial_path
from jan_server.errors import ConflictError, InvalidRequestError
from tests.http_fixture import FileServer, Route

MiB = 1 << 20


def wait_for(predicate, timeout: float = 60, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    """A 6 MiB file with the GGUF magic: big enough for several reads, small enough to be quick."""
    path = tmp_path_factory.mktemp("upstream") / "tiny.Q4_0.gguf"
    path.write_bytes(b"GGUF" + os.urandom(6 * MiB - 4))
    return path


@pytest.fixture()
def files():
    with FileServer() as server:
        yield server


def test_transfer_copies_the_file_and_leaves_no_partial(files, gguf, tmp_path):
    url = files.add("/tiny.gguf", Route(body=gguf))
    transfer = Transfer(url, tmp_path / "tiny.gguf")
    assert transfer.run() == tmp_path / "tiny.gguf"
    assert (tmp_path / "tiny.gguf").read_bytes() == gguf.read_bytes()
    assert not partial_path(tmp_path / "tiny.gguf").exists()
    assert transfer.progress() == (gguf.stat().st_size, gguf.stat().st_size)


def test_redirects_are_followed(files, gguf, tmp_path):
    target = files.add("/blob/tiny.gguf", Route(body=gguf))
    url = files.add("/resolve/tiny.gguf", Route(location=target))
    Transfer(url, tmp_path / "tiny.gguf").run()
    assert (tmp_path / "tiny.gguf").read_bytes() == gguf.read_bytes()
    assert [r.path for r in files.requests] == ["/resolve/tiny.gguf", "/blob/tiny.gguf"]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/x.gguf", "http:///no-host.gguf", "x.gguf"])
def test_non_http_urls_are_refused(url, tmp_path):
    with pytest.raises(InvalidRequestError):
        Transfer(url, tmp_path / "x.gguf")


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/x.gguf"])
def test_a_redirect_to_another_scheme_is_refused(files, tmp_path, target):
    url = files.add("/evil.gguf", Route(location=target))
    with pytest.raises(DownloadError, match="(?i)redirect"):
        Transfer(url, tmp_path / "x.gguf").run()
    assert not (tmp_path / "x.gguf").exists()


def test_a_dropped_connection_resumes_with_a_range_request(files, gguf, tmp_path):
    url = files.add("/tiny.gguf", Route(body=gguf, drop_after=2 * MiB + 123))
    Transfer(url, tmp_path / "tiny.gguf").run()
    assert (tmp_path / "tiny.gguf").read_bytes() == gguf.read_bytes()
    first, second = files.requests_for("/tiny.gguf")
    assert "Range" not in first.headers
    assert second.headers["Range"] == f"bytes={2 * MiB + 123}-"


def test_a_partial_file_resumes_and_is_verified_whole(files, gguf, tmp_path):
    data = gguf.read_bytes()
    partial_path(tmp_path / "tiny.gguf").write_bytes(data[: 3 * MiB])
    url = files.add("/tiny.gguf", Route(body=gguf))
    Transfer(url, tmp_path / "tiny.gguf", sha256=hashlib.sha256(data).hexdigest()).run()
    assert (tmp_path / "tiny.gguf").read_bytes() == data
    assert files.requests[0].headers["Range"] == f"bytes={3 * MiB}-"


def test_a_server_ignoring_range_restarts_from_zero(files, gguf, tmp_path):
    data = gguf.read_bytes()
    partial_path(tmp_path / "tiny.gguf").write_bytes(b"GGUF stale bytes")
    url = files.add("/tiny.gguf", Route(body=gguf, honour_range=False))
    Transfer(url, tmp_path / "tiny.gguf").run()
    assert (tmp_path / "tiny.gguf").read_bytes() == data


def test_a_partial_longer_than_the_file_starts_over(files, gguf, tmp_path):
    partial_path(tmp_path / "tiny.gguf").write_bytes(b"GGUF" + bytes(7 * MiB))
    url = files.add("/tiny.gguf", Route(body=gguf))
    Transfer(url, tmp_path / "tiny.gguf").run()
    assert (tmp_path / "tiny.gguf").read_bytes() == gguf.read_bytes()
    assert [r.headers.get("Range") for r in files.requests] == [f"bytes={7 * MiB + 4}-", None]


def test_a_matching_sha256_is_accepted_in_any_case(files, gguf, tmp_path):
    url = files.add("/tiny.gguf", Route(body=gguf))
    Transfer(url, tmp_path / "tiny.gguf", sha256=hashlib.sha256(gguf.read_bytes()).hexdigest().upper()).run()
    assert (tmp_path / "tiny.gguf").is_file()


def test_a_wrong_sha256_is_an_error_and_leaves_nothing(files, gguf, tmp_path):
    url = files.add("/tiny.gguf", Route(body=gguf))
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        Transfer(url, tmp_path / "tiny.gguf", sha256="0" * 64).run()
    assert list(tmp_path.iterdir()) == []


def test_html_instead_of_gguf_is_rejected(files, tmp_path):
    url = files.add("/login.gguf", Route(body=b"<!doctype html><html>Sign in</html>", content_type="text/html"))
    with pytest.raises(DownloadError, match="Not a GGUF file"):
        Transfer(url, tmp_path / "x.gguf").run()
    assert list(tmp_path.iterdir()) == []


def test_upstream_404_is_an_error_without_retries(files, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        Transfer(files.url("/missing.gguf"), tmp_path / "x.gguf").run()
    assert len(files.requests) == 1
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_host_is_an_error_not_a_hang(tmp_path):
    from tests.live_server import free_port

    with pytest.raises(DownloadError, match="Cannot fetch"):
        Transfer(f"http://127.0.0.1:{free_port()}/x.gguf", tmp_path / "x.gguf", attempts=2).run()


def test_a_stalled_server_times_out(files, gguf, tmp_path):
    url = files.add("/slow.gguf", Route(body=gguf, rate=1))
    with pytest.raises(DownloadError, match="connection lost"):
        Transfer(url, tmp_path / "x.gguf", timeout=0.3, attempts=2).run()


def test_a_full_disk_is_an_error(gguf, tmp_path):
    """A file-size limit makes writes fail as a full disk does (EFBIG instead of ENOSPC): an OSError mid-transfer."""
    script = f"""
import resource, signal, sys
from tests.http_fixture import FileServer, Route
from jan_server.downloads import DownloadError, Transfer
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
with FileServer() as files:
    url = files.add("/tiny.gguf", Route(body=Path({str(gguf)!r})))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    try:
        Transfer(url, Path({str(tmp_path / "x.gguf")!r})).run()
    except DownloadError as exc:
        print(exc)
        sys.exit(0)
sys.exit("no error")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Cannot write x.gguf.part" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_manager_reports_progress_moving_then_success(files, gguf, tmp_path):
    route = Route(body=gguf, rate=4 * MiB)
    url = files.add("/tiny.gguf", route)
    finished = []
    manager = DownloadManager()
    download = manager.start("tiny", url, tmp_path / "tiny.gguf", on_success=finished.append)
    first = wait_for(lambda: (s := manager.status("tiny"))["bytes_downloaded"] > 0 and s)
    assert first["state"] == "downloading" and first["bytes_total"] == 6 * MiB
    later = wait_for(lambda: (s := manager.status("tiny"))["bytes_downloaded"] > first["bytes_downloaded"] and s)
    assert 0 < later["percent"] < 100
    route.rate = None
    assert download.wait(30)
    assert manager.status("tiny")["state"] == "downloaded"
    assert manager.status("tiny")["percent"] == 100
    assert finished == [tmp_path / "tiny.gguf"]


def test_manager_refuses_a_second_download_of_the_same_id(files, gguf, tmp_path):
    url = files.add("/tiny.gguf", Route(body=gguf, rate=MiB))
    manager = DownloadManager()
    manager.start("tiny", url, tmp_path / "tiny.gguf")
    with pytest.raises(ConflictError):
        manager.start("tiny", url, tmp_path / "other.gguf")
    assert manager.cancel("tiny")


def test_manager_cancel_stops_and_removes_the_partial(files, gguf, tmp_path):
    url = files.add("/tiny.gguf", Route(body=gguf, rate=MiB))
    manager = DownloadManager()
    download = manager.start("tiny", url, tmp_path / "tiny.gguf")
    wait_for(lambda: partial_path(tmp_path / "tiny.gguf").exists() and manager.status("tiny")["bytes_downloaded"])
    assert manager.cancel("tiny")
    assert not download.thread.is_alive()
    assert download.state == "stopped"
    assert manager.status("tiny") is None
    assert list(tmp_path.iterdir()) == []
    assert not manager.cancel("tiny")


def test_manager_close_keeps_the_partial_and_a_new_start_resumes(files, gguf, tmp_path):
    route = Route(body=gguf, rate=2 * MiB)
    url = files.add("/tiny.gguf", route)
    manager = DownloadManager()
    manager.start("tiny", url, tmp_path / "tiny.gguf")
    wait_for(lambda: manager.status("tiny")["bytes_downloaded"] > MiB)
    manager.close()
    kept = partial_path(tmp_path / "tiny.gguf").stat().st_size
    assert kept > MiB
    route.rate = None
    again = DownloadManager()
    assert again.start("tiny", url, tmp_path / "tiny.gguf").wait(30)
    assert again.status("tiny")["state"] == "downloaded"
    assert (tmp_path / "tiny.gguf").read_bytes() == gguf.read_bytes()
    assert files.requests[-1].headers["Range"] == f"bytes={kept}-"


def test_manager_shows_an_error_with_its_message(files, tmp_path):
    manager = DownloadManager()
    download = manager.start("gone", files.url("/gone.gguf"), tmp_path / "gone.gguf")
    assert download.wait(30)
    status = manager.status("gone")
    assert status["state"] == "error" and "HTTP 404" in status["error"]
    manager.start("gone", files.url("/gone.gguf"), tmp_path / "gone.gguf").wait(30)  # an ended download may restart
