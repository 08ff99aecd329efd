"""App-level behaviour: the console, health, OpenAI-shaped errors for Connexion's own failures, the CLI."""

from __future__ import annotations

import ast
import configparser
import re
import site
import socket
import subprocess
import sys
import venv
from importlib.metadata import packages_distributions
from pathlib import Path

import httpx
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from jan_server.cli import build_parser, settings_from_args
from jan_server.settings import Settings, options
from tests.live_server import PATIENT
from tests.live_server import LiveServer, free_port

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
#: A `jan-server` command that exits by itself: it imports the app (llama.cpp included) and maybe migrates a
#: database, seconds of work that a loaded machine can stretch; only a hang should reach this.
COMMAND_LIMIT = 300


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error


def test_health_and_root_redirect(server):
    assert httpx.get(f"{server.base_url}/health", timeout=PATIENT).json() == {"status": "ok"}
    root = httpx.get(f"{server.base_url}/", timeout=PATIENT)
    assert root.status_code == 302 and root.headers["location"] == "/docs"


def test_console_is_served_offline(server):
    page = httpx.get(f"{server.base_url}/docs", timeout=PATIENT)
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(a.startswith("/docs/") for a in assets), assets
    for asset in assets:
        assert httpx.get(f"{server.base_url}{asset}", timeout=PATIENT).status_code == 200, asset


def test_unknown_route_is_a_json_404(api):
    assert assert_openai_error(api.get("/no-such-thing"), 404)["code"] == "not_found"


def test_wrong_method_is_a_json_405_naming_every_allowed_method(api):
    response = api.put("/threads")
    assert assert_openai_error(response, 405)["code"] == "method_not_allowed"
    assert response.headers["allow"] == "GET, POST"
    assert api.put("/models").headers["allow"] == "GET, POST"


def test_wrong_content_type_is_a_json_415(api):
    response = api.post("/threads", content="hello", headers={"content-type": "text/plain"})
    assert assert_openai_error(response, 415)["code"] == "unsupported_media_type"


def test_malformed_json_is_a_400(api):
    response = api.post("/threads", content="{not json", headers={"content-type": "application/json"})
    assert assert_openai_error(response, 400)["type"] == "invalid_request_error"


def test_query_validation_names_the_parameter(api):
    assert assert_openai_error(api.get("/threads", params={"limit": 0}), 400)["param"] == "limit"


def test_slashless_alias_of_a_trailing_slash_path(api):
    assert api.get("/assistants").json()["object"] == "list"
    assert api.get("/assistants/").json()["object"] == "list"


def test_busy_port_is_one_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "jan_server", "--data-dir", str(tmp_path), "--port", str(port)],
            capture_output=True, text=True, timeout=COMMAND_LIMIT,
        )
    assert result.returncode != 0
    assert result.stderr.strip() == f"jan-server: cannot listen on 127.0.0.1:{port}: address already in use"


def test_migrate_command_creates_the_database(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "jan_server", "--data-dir", str(tmp_path), "migrate"],
        capture_output=True, text=True, timeout=COMMAND_LIMIT,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "jan.db").exists()


def test_serve_options_count_before_or_after_the_command():
    for argv in (["--port", "5000", "--allow-remote", "serve"], ["serve", "--port", "5000", "--allow-remote"]):
        settings = settings_from_args(build_parser().parse_args(argv))
        assert (settings.port, settings.allow_remote) == (5000, True), argv


def test_environment_variables_configure_the_server(tmp_path):
    data_dir = tmp_path / "env-data"
    live = LiveServer(data_dir, port=free_port(), command=[sys.executable, "-m", "jan_server"])
    live.env = {"JAN_API_PORT": str(live.port), "JAN_DATA_DIR": str(data_dir)}
    try:
        live.start()
        assert (data_dir / "jan.db").exists()
    finally:
        live.stop()


def test_plain_install_elsewhere_serves_the_spec(tmp_path):
    """`pip install .` (not editable) ships openapi.yaml and specs/ with the package."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    # The new environment borrows this one's dependencies, but not its editable jan_server.
    env_site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], capture_output=True, text=True, check=True
    ).stdout.strip()
    Path(env_site, "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(REPO)], check=True, cwd=tmp_path, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    found = subprocess.run(
        [python, "-c", "import jan_server.web.spec_bundle as b; print(b.spec_path())"],
        capture_output=True, text=True, cwd=elsewhere, check=True,
    ).stdout.strip()
    assert not found.startswith(str(REPO)), found
    data_dir = tmp_path / "data"
    live = LiveServer(data_dir, port=free_port(), cwd=elsewhere)
    live.command = [str(env_dir / "bin" / "jan-server"), "--data-dir", str(data_dir), "--port", str(live.port)]
    try:
        spec = httpx.get(f"{live.start().api_url}/openapi.json", timeout=PATIENT).json()
        assert "/threads" in spec["paths"] and "/chat/completions" in spec["paths"]
    finally:
        live.stop()


def imported_modules(folder: Path) -> set[str]:
    """The top-level names every module under `folder` imports, at any depth of its code."""
    names = set()
    for source in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_every_imported_package_is_declared():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    requirements = config["options"]["install_requires"].split()
    declared = {re.match(r"[\w.-]+", line).group().lower().replace("_", "-") for line in requirements}
    third_party = set().union(*(imported_modules(REPO / folder) for folder in ("jan_server", "handlers", "migrations")))
    third_party -= set(sys.stdlib_module_names) | {"jan_server"}
    providers = packages_distributions()
    needed = {module: {name.lower().replace("_", "-") for name in providers[module]} for module in third_party}
    assert {module for module, names in needed.items() if not names & declared} == set()


def locked(path: Path) -> dict[str, tuple[str, str]]:
    """A lock's pins for this Python and platform: name -> (version, the whole entry, with options and hashes)."""
    entries = re.split(r"\n(?=\S)", re.sub(r"^#.*\n|\n\s*#.*", "", path.read_text(), flags=re.M).strip())
    pins = {}
    for entry in entries:
        requirement = Requirement(re.sub(r" --.*| \\$", "", entry.split("\n")[0]))
        if requirement.marker is None or requirement.marker.evaluate():
            pins[canonicalize_name(requirement.name)] = (next(iter(requirement.specifier)).version, entry)
    return pins


def test_the_locks_pin_every_package_with_hashes_within_setup_cfgs_ranges():
    """The README's commands install from the locks: each pins what setup.cfg asks for, inside its ranges, every
    package with a hash; the server's lock is the test lock's subset, and llama-cpp-python keeps its build flags."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    extras = config["options.extras_require"]
    server, tests = locked(REPO / "requirements.lock"), locked(REPO / "requirements-test.lock")
    for pins, sections in ((server, ["default-model", "postgres"]), (tests, ["default-model", "postgres", "test"])):
        wanted = config["options"]["install_requires"].split("\n") + [line for extra in sections for line in extras[extra].split("\n")]
        for line in filter(None, wanted):
            requirement = Requirement(line)
            version, _ = pins[canonicalize_name(requirement.name)]
            assert requirement.specifier.contains(version), (line, version)
        assert all("--hash=sha256:" in entry for _, entry in pins.values())
        assert "-DGGML_NATIVE=OFF" in pins["llama-cpp-python"][1]
    assert {name: version for name, (version, _) in server.items()} == {name: tests[name][0] for name in server}


def test_every_setting_comes_from_its_variable_or_its_flag_the_flag_winning():
    def sample(option, n):
        if option.switch:
            return "1", True
        if option.many:
            return f"a{n}, b{n}", (f"a{n}", f"b{n}")
        text = option.choices[n] if option.choices else f"/tmp/{n}" if option.parse is Path else str(n + 7)
        return text, option.parse(text)

    for option in options():
        env_text, from_env = sample(option, 1)
        flag_text, from_flag = sample(option, 2)
        assert getattr(Settings.from_env({option.env: env_text}), option.name) == from_env, option.env
        args = build_parser().parse_args([option.flag] + ([] if option.switch else [flag_text]))
        assert getattr(settings_from_args(args), option.name) == from_flag, option.flag
        assert option.env in option.help and "default " in option.help, option.help
        assert f"| `{option.flag}`" in README and f"`{option.env}`" in README, f"README's Configuration lacks {option.flag}"
