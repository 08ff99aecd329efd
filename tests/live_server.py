"""Start the real `jan-server` in a subprocess on a free port, with its own data dir, for tests and benches."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai

from jan_server.models.registry import BUNDLED_FILE, bundled_weights

#: How long a test's client waits for the server. Generous on purpose: the tests share a small machine with
#: other work, and under load one chat on the bundled model takes many times its usual second (a 60 s read
#: limit failed an ordinary chat so). Only a hung server should ever reach these limits.
PATIENT = httpx.Timeout(connect=60, read=600, write=60, pool=600)


def openai_at(api_url: str) -> openai.OpenAI:
    """The official `openai` package pointed at a server, without retries, so that a failure shows at once. Its timeout
    is a number: SDK releases differ in the HTTP library under them (3.63 moved to httpx2 and refuses httpx objects)."""
    return openai.OpenAI(api_key="x", base_url=api_url, max_retries=0, timeout=PATIENT.read)


def bundled_copy(data_dir: Path, model_id: str, manifest: dict | None = None) -> Path:
    """A model folder `model_id` in `data_dir` (before or while its server runs): a link to the bundled GGUF, and
    `manifest` as its model.json if given."""
    folder = data_dir / "models" / model_id
    folder.mkdir(parents=True)
    (folder / BUNDLED_FILE).symlink_to(bundled_weights())
    if manifest is not None:
        (folder / "model.json").write_text(json.dumps(manifest))
    return folder


def until(condition, what: str, timeout: float = 300):
    """`condition()` once it is true; the limit is for a hang only."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"no sign that {what}"
        time.sleep(0.2)
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    data_dir: Path
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    #: The command to run instead of `python -m jan_server --data-dir … --port …`.
    command: list[str] | None = None
    cwd: Path | None = None
    process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v1"

    def start(self, timeout: float = 300) -> "LiveServer":
        """Start the server and wait for /health; the limit is generous, for the same reason as PATIENT's."""
        self.port = self.port or free_port()
        command = self.command or [
            sys.executable, "-m", "jan_server", "--data-dir", str(self.data_dir), "--port", str(self.port), *self.args
        ]
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            command, env={**os.environ, **self.env}, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jan-server exited with {self.process.returncode}; see {log.name}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"jan-server did not answer /health within {timeout}s")

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    def stop(self, timeout: float = 20) -> None:
        """SIGINT, then SIGKILL if the server has not ended within `timeout` seconds."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run, as in a crash."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    @property
    def log_path(self) -> Path:
        """The server's stdout and stderr (its log), appended to by every start."""
        return self.data_dir.parent / f"{self.data_dir.name}-server.log"
