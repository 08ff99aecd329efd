"""Where the server's own requests may go (jan_server.models.egress): the address rules, then the servers under test
in a network namespace of their own, so that a refusal that fails to happen cannot reach anything off the machine.

The namespace (`unshare -n -m`, as root) has only loopback, with the addresses a refusal is about added to it:
169.254.169.254, 100.100.100.200 and fd00:ec2::254 (cloud metadata) and 10.1.2.3 (a LAN host), each with a
listener that counts the connections it gets, and an /etc/hosts of its own that points names at them. Other names
(files.test) resolve nowhere: only a proxy, a loopback one that fetches every path from the file server, reaches them. This module
run as a script (`python -m tests.test_egress`) is what runs inside: it starts the servers, makes the requests and
prints what it saw as JSON, which the tests below read.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

import httpx
import pytest

from jan_server.models.egress import allows, shown

ROOT = Path(__file__).parent.parent
METADATA, ALIBABA, METADATA6, LAN_HOST = "169.254.169.254", "100.100.100.200", "fd00:ec2::254", "10.1.2.3"
HOSTS = f"""127.0.0.1 localhost
::1 localhost
{METADATA} metadata.test
127.0.0.1 mixed.test
{METADATA} mixed.test
{LAN_HOST} lan.test
"""
SETUP = f"ip link set lo up && ip addr add {METADATA}/32 dev lo && ip addr add {ALIBABA}/32 dev lo && " \
        f"ip addr add {LAN_HOST}/32 dev lo && ip -6 addr add {METADATA6}/128 dev lo && mount --bind {{hosts}} /etc/hosts"
REFUSED_LAN = "an address this server's egress setting ('lan': no link-local, cloud metadata, multicast or unspecified addresses) refuses"
REFUSED_DOWNLOAD = f"The download source, a redirect of it, or the proxy it goes through, is at {REFUSED_LAN}."


@pytest.mark.parametrize("address, lan, public, loopback", [
    (METADATA, False, False, False), ("169.254.0.1", False, False, False), (METADATA6, False, False, False),
    (ALIBABA, False, False, False), ("fe80::1", False, False, False), ("fe80::1%lo", False, False, False),
    ("::ffff:169.254.169.254", False, False, False), ("64:ff9b::a9fe:a9fe", False, False, False),
    ("0.0.0.0", False, False, False), ("0.1.2.3", False, False, False), ("::", False, False, False),
    ("224.0.0.1", False, False, False), ("255.255.255.255", False, False, False), ("ff02::1", False, False, False),
    ("127.0.0.1", True, False, True), ("127.8.9.10", True, False, True), ("::1", True, False, True),
    ("::ffff:127.0.0.1", True, False, True), ("10.1.2.3", True, False, False), ("172.16.0.1", True, False, False),
    ("192.168.1.1", True, False, False), ("100.64.0.1", True, False, False), ("fd12:3456::1", True, False, False),
    ("8.8.8.8", True, True, False), ("2606:4700::1111", True, True, False), ("::ffff:8.8.8.8", True, True, False),
])
def test_the_address_rules(address, lan, public, loopback):
    assert (allows("lan", address), allows("public", address), allows("loopback", address)) == (lan, public, loopback)


def test_egress_is_a_setting():
    from jan_server.cli import build_parser, settings_from_args
    from jan_server.settings import Settings

    assert Settings().egress == "lan"
    assert Settings.from_env({"JAN_EGRESS": "public"}).egress == "public"
    assert settings_from_args(build_parser().parse_args(["--egress", "loopback"])).egress == "loopback"
    with pytest.raises(ValueError, match="egress"):
        Settings.from_env({"JAN_EGRESS": "everywhere"})


def test_logs_show_urls_without_credentials():
    assert shown("https://user:pw@host:8443/a/b.gguf?token=secret#x") == "https://host:8443/a/b.gguf"


@pytest.fixture(scope="module")
def seen(tmp_path_factory) -> dict:
    hosts = tmp_path_factory.mktemp("egress") / "hosts"
    hosts.write_text(HOSTS)
    command = ["unshare", "-n", "-m", "sh", "-c", f"{SETUP.format(hosts=hosts)} && exec {sys.executable} -m tests.test_egress"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_a_download_from_a_metadata_address_is_refused_before_any_connection(seen):
    for url, answer in seen["lan"]["downloads"].items():
        assert answer == [400, "source_url", "address_refused"], url
    assert seen["lan"]["download_by_id"] == [400, "source_url", "address_refused"]
    assert seen["trapped"][METADATA] == seen["trapped"][ALIBABA] == seen["trapped"][METADATA6] == 0


def test_a_remote_engine_at_a_metadata_address_is_refused_before_any_connection(seen):
    for url, answer in seen["lan"]["remotes"].items():
        assert answer == [400, "base_url", "address_refused"], url
    assert seen["lan"]["by_hand_chat"] == seen["lan"]["by_hand_start"] == [400, "base_url", "address_refused"]


def test_a_redirect_to_a_refused_address_fails_the_download_without_echoing_it(seen):
    for error in seen["lan"]["redirected"].values():
        assert error == REFUSED_DOWNLOAD
    assert seen["lan"]["resumed"] == REFUSED_DOWNLOAD


def test_lan_addresses_stay_allowed_by_default(seen):
    assert seen["lan"]["allowed"] == {"download": 200, "remote": 200}
    assert seen["lan"]["lan_host_reached"]


def test_public_refuses_loopback_and_private_ranges(seen):
    for url, answer in seen["public"].items():
        assert answer[0] == 400 and answer[1] in ("source_url", "base_url"), url


def test_loopback_allows_only_this_machine(seen):
    assert seen["loopback"] == {
        f"http://{LAN_HOST}/x.gguf": 400, "http://lan.test/x.gguf": 400, f"http://{LAN_HOST}/v1": 400,
        "http://127.0.0.1:9/x.gguf": 200, "http://localhost:9/x.gguf": 200, "http://127.0.0.1:9/v1": 200,
    }
    assert seen["trapped"][LAN_HOST] == seen["lan"]["trapped_lan_host"]  # nothing more after the lan server


def test_the_connection_goes_to_the_address_checked(seen):
    """A name whose next lookup answers another address (DNS rebinding) is connected to the address checked."""
    assert seen["rebinding"] == {"download": "done", "remote": True, "trapped": 0}


def test_a_download_through_a_proxy_from_a_name_only_the_proxy_resolves_succeeds(seen):
    assert seen["proxy"]["named"] == [200, "downloaded"]
    assert "http://files.test/proxied.gguf" in seen["proxy"]["asked"]


def test_through_a_proxy_an_address_target_is_still_refused_at_the_request_and_on_each_redirect(seen):
    """The proxy resolves names, so a name is its to judge; a target that is an IP address is refused here, in any
    form getaddrinfo reads (2852039166 is 169.254.169.254), before the proxy sees it."""
    assert seen["proxy"]["addresses"] == {url: [400, "source_url", "address_refused"] for url in (
        f"http://{METADATA}/x.gguf", "http://2852039166/x.gguf", "http://0xa9.0xfe.0xa9.0xfe/x.gguf", f"http://{METADATA}./x.gguf")}
    assert seen["proxy"]["hop"] == REFUSED_DOWNLOAD
    assert sorted(seen["proxy"]["asked"]) == ["http://files.test/hop.gguf", "http://files.test/proxied.gguf"]


def test_no_proxy_hosts_go_direct_and_are_checked_as_without_a_proxy(seen):
    assert seen["proxy"]["bypassed"] == [200, "downloaded"]
    assert seen["proxy"]["bypassed_name"] == [400, "source_url", "address_refused"]  # metadata.test, resolved here
    assert sorted(seen["proxy"]["asked"]) == ["http://files.test/hop.gguf", "http://files.test/proxied.gguf"]


def test_the_proxy_is_held_to_egress(seen):
    assert seen["proxy"]["at_metadata"] == REFUSED_DOWNLOAD
    assert seen["trapped"][METADATA] == 0


# What runs inside the namespace.


class Trap:
    """A listener that counts the connections it accepts."""

    def __init__(self, host: str, port: int):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.count = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            connection, _ = self.sock.accept()
            self.count += 1
            connection.close()


class Proxy:
    """A loopback HTTP proxy that records the absolute URIs it is asked for and fetches each one's path (and Range)
    from `files`, whatever its host."""

    def __init__(self, files):
        asked = self.asked = []
        port = urlsplit(files.url("/")).port

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                asked.append(self.path)
                upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                upstream.request("GET", urlsplit(self.path).path, headers={"Range": self.headers["Range"]} if self.headers["Range"] else {})
                response = upstream.getresponse()
                body = response.read()
                upstream.close()
                self.send_response(response.status)
                for name in ("Content-Type", "Content-Range", "Location"):
                    if response.getheader(name):
                        self.send_header(name, response.getheader(name))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def answer(response: httpx.Response) -> list:
    error = response.json().get("error") or {}
    return [response.status_code, error.get("param"), error.get("code")]


def remote(model_id: str, base_url: str) -> dict:
    return {"id": model_id, "engine": "openai", "settings": {"base_url": base_url, "model": "m"}}


def final_state(api: httpx.Client, model_id: str) -> dict:
    deadline = time.monotonic() + 120  # a limit for a hang
    while (model := api.get(f"/models/{model_id}").json())["state"] == "downloading" and time.monotonic() < deadline:
        time.sleep(0.1)
    return model


def probe() -> dict:
    from jan_server.models.registry import Registry, ModelRecord
    from jan_server.models.remote import Upstreams
    from jan_server.models.transfer import DownloadError, Transfer
    from tests.http_fixture import FileServer, Route
    from tests.live_server import LiveServer

    traps = {host: Trap(host, 80) for host in (METADATA, ALIBABA, METADATA6, LAN_HOST)}
    seen: dict = {}
    with FileServer() as files, tempfile.TemporaryDirectory() as tmp:
        hops = {name: files.add(f"/{name}.gguf", Route(location=target)) for name, target in (
            ("metadata", f"http://{METADATA}/x.gguf"), ("named", "http://metadata.test/x.gguf"), ("ipv6", f"http://[{METADATA6}]/x.gguf"))}
        lan_dir = Path(tmp) / "lan"
        models = Registry(lan_dir / "models", include_bundled=False)
        models.save("by-hand", {"engine": "openai", "settings": {"base_url": f"http://{METADATA}/v1", "model": "m"}})
        resumed = models.save("resumed", {"source_url": f"http://{METADATA}/x.gguf", "settings": {"llama_model_path": "x.gguf"}})
        (resumed.directory / "x.gguf.part").write_bytes(b"GGUF")  # a download a stop interrupted: resumed at start
        with LiveServer(lan_dir, args=("--n-threads", "1")) as lan, httpx.Client(base_url=lan.api_url, timeout=60) as api:
            downloads = [f"http://{METADATA}/latest/x.gguf", f"http://{ALIBABA}/x.gguf", "http://metadata.test/x.gguf",
                         "http://mixed.test/x.gguf", f"http://0.0.0.0:{lan.port}/x.gguf"]
            remotes = [f"http://{METADATA}/v1", f"http://[{METADATA6}]/v1", f"http://[::ffff:{METADATA}]/v1", "http://[::ffff:a9fe:a9fe]/v1",
                       "http://[64:ff9b::a9fe:a9fe]/v1", "http://metadata.test/v1", "http://[fe80::1]/v1"]
            seen["lan"] = {
                "downloads": {url: answer(api.post("/models", json={"source_url": url, "id": "m"})) for url in downloads},
                "remotes": {url: answer(api.post("/models", json=remote("m", url))) for url in remotes},
                "resumed": final_state(api, "resumed")["error"],
                "download_by_id": answer(api.post("/models", json={"id": "resumed"})),
                "by_hand_chat": answer(api.post("/chat/completions", json={"model": "by-hand", "messages": [{"role": "user", "content": "hi"}]})),
                "by_hand_start": answer(api.put("/models/by-hand/start")),
            }
            for name, url in hops.items():
                api.post("/models", json={"source_url": url, "id": f"hop-{name}"}).raise_for_status()
            seen["lan"]["redirected"] = {name: final_state(api, f"hop-{name}")["error"] for name in hops}
            seen["lan"]["allowed"] = {
                "download": api.post("/models", json={"source_url": f"http://{LAN_HOST}/x.gguf", "id": "lan"}).status_code,
                "remote": api.post("/models", json=remote("lan-remote", "http://lan.test/v1")).status_code,
            }
            deadline = time.monotonic() + 60  # a limit for a hang: the download connects at once
            while not traps[LAN_HOST].count and time.monotonic() < deadline:
                time.sleep(0.05)
            seen["lan"]["lan_host_reached"] = traps[LAN_HOST].count > 0
        seen["lan"]["trapped_lan_host"] = traps[LAN_HOST].count

        with LiveServer(Path(tmp) / "public", args=("--n-threads", "1", "--egress", "public")) as public, \
                httpx.Client(base_url=public.api_url, timeout=60) as api:
            seen["public"] = {
                **{url: answer(api.post("/models", json={"source_url": url, "id": "m"})) for url in (
                    files.url("/x.gguf"), "http://localhost:9/x.gguf", f"http://{LAN_HOST}/x.gguf", "http://lan.test/x.gguf")},
                **{url: answer(api.post("/models", json=remote("m", url))) for url in (
                    "http://127.0.0.1:9/v1", "http://[::1]:9/v1", "http://100.64.0.1/v1", "http://192.168.0.1/v1", "http://[fd12::1]/v1")},
            }
        with LiveServer(Path(tmp) / "loopback", args=("--n-threads", "1", "--egress", "loopback")) as loopback, \
                httpx.Client(base_url=loopback.api_url, timeout=60) as api:
            seen["loopback"] = {
                **{url: api.post("/models", json={"source_url": url, "id": f"m{i}"}).status_code for i, url in enumerate((
                    f"http://{LAN_HOST}/x.gguf", "http://lan.test/x.gguf", "http://127.0.0.1:9/x.gguf", "http://localhost:9/x.gguf"))},
                **{url: api.post("/models", json=remote(f"r{i}", url)).status_code for i, url in enumerate((
                    f"http://{LAN_HOST}/v1", "http://127.0.0.1:9/v1"))},
            }

        # Through a proxy: names go to it unresolved, IP addresses are refused here, no_proxy's hosts go direct.
        proxy = Proxy(files)
        files.add("/proxied.gguf", Route(body=b"GGUF" + bytes(1024)))
        files.add("/hop.gguf", Route(location=f"http://{METADATA}/x.gguf"))
        env = {"http_proxy": proxy.url, "no_proxy": "localhost,metadata.test"}
        with LiveServer(Path(tmp) / "proxied", args=("--n-threads", "1"), env=env) as proxied, \
                httpx.Client(base_url=proxied.api_url, timeout=60) as api:
            def downloaded(model_id: str, url: str) -> list:
                status = api.post("/models", json={"source_url": url, "id": model_id}).status_code
                return [status, final_state(api, model_id)["state"]]

            seen["proxy"] = {
                "named": downloaded("named", "http://files.test/proxied.gguf"),
                "addresses": {url: answer(api.post("/models", json={"source_url": url, "id": "m"})) for url in (
                    f"http://{METADATA}/x.gguf", "http://2852039166/x.gguf", "http://0xa9.0xfe.0xa9.0xfe/x.gguf", f"http://{METADATA}./x.gguf")},
                "bypassed": downloaded("bypassed", files.url("/proxied.gguf").replace("127.0.0.1", "localhost")),
                "bypassed_name": answer(api.post("/models", json={"source_url": "http://metadata.test/x.gguf", "id": "m"})),
            }
            api.post("/models", json={"source_url": "http://files.test/hop.gguf", "id": "hop"}).raise_for_status()
            seen["proxy"]["hop"] = final_state(api, "hop")["error"]
        with mock.patch.dict(os.environ, {"http_proxy": f"http://{METADATA}/"}):
            try:
                Transfer("http://files.test/proxied.gguf", Path(tmp) / "at-metadata.gguf", attempts=1).run()
            except DownloadError as exc:
                seen["proxy"]["at_metadata"] = str(exc)
        seen["proxy"]["asked"] = proxy.asked

        # DNS rebinding, in this process: `rebind.test` answers 127.0.0.1, then METADATA, then 127.0.0.1... A connection
        # made by name after a check by name would reach the trap on METADATA at the port asked.
        files.add("/rebound.gguf", Route(body=b"GGUF" + bytes(1024)))
        files.add("/v1/models", Route(body=b'{"object": "list", "data": []}', content_type="application/json"))
        file_port = urlsplit(files.url("/")).port
        rebinding_traps = [Trap(METADATA, file_port)]
        real = socket.getaddrinfo
        flips = itertools.count()

        def rebinding(host, *args, **kwargs):
            if host == "rebind.test":
                host = "127.0.0.1" if next(flips) % 2 == 0 else METADATA
            return real(host, *args, **kwargs)

        with mock.patch("socket.getaddrinfo", rebinding):
            Transfer(f"http://rebind.test:{file_port}/rebound.gguf", Path(tmp) / "rebound.gguf").run()
            flips = itertools.count()
            upstreams = Upstreams()
            record = ModelRecord("rebound", {"engine": "openai", "settings": {"base_url": f"http://rebind.test:{file_port}/v1", "model": "m"}}, None, None)
            upstream = upstreams.get(record)
            upstream.check()
            upstreams.close()
        seen["rebinding"] = {"download": "done" if (Path(tmp) / "rebound.gguf").exists() else "missing",
                             "remote": upstream.answered, "trapped": sum(trap.count for trap in rebinding_traps)}
    seen["trapped"] = {host: trap.count for host, trap in traps.items()}
    return seen


if __name__ == "__main__":
    print(json.dumps(probe()))
