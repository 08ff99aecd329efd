"""Every setting of the server, declared once.

Each field of `Settings` is a `setting(...)`: its default, help, environment variable (`JAN_<NAME>` unless named) and
CLI flag (`--<name>` unless named). `Settings.from_env` reads the variables and `jan_server.cli` builds its options from
the same declarations: defaults, then environment variables, then CLI flags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from jan_server.models.egress import EGRESS


def default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "jan-server"


def split_list(value: str | None) -> tuple[str, ...] | None:
    """`a, b,c` -> ("a", "b", "c"); None or only blanks -> None (not set)."""
    items = tuple(item.strip() for item in (value or "").split(",") if item.strip())
    return items or None


def setting(default=None, help: str = "", *, factory=None, parse=str, env: str | None = None, flag: str | None = None,
            many: bool = False, switch: bool = False, choices=None, metavar: str | None = None, shown: str | None = None,
            top_level: bool = False):
    """A field of `Settings` with what the environment and the command line need to set it.

    `many`: a tuple, comma-separated in the environment, the flag repeatable (each use comma-separated too);
    `switch`: a boolean flag taking no value; `shown`: the default as the help says it; `top_level`: a flag of
    every command (given before it), not only of `serve`.
    """
    metadata = {"help": help, "parse": parse, "env": env, "flag": flag, "many": many, "switch": switch,
                "choices": choices, "metavar": metavar, "shown": shown, "top_level": top_level}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Option:
    """One declared setting, as the environment and the command line see it."""

    name: str
    env: str
    flag: str
    help: str
    parse: object
    many: bool
    switch: bool
    choices: tuple | None
    metavar: str | None
    top_level: bool

    def from_text(self, value: str | None):
        """The setting's value from an environment variable's text; None when unset (or blank, but for text)."""
        if self.many:
            return split_list(value)
        if self.switch:
            return (value or "").lower() in ("1", "true", "yes") or None
        if value is None or (value == "" and self.parse is not str):
            return None
        return self.parse(value)


@dataclass(frozen=True)
class Settings:
    host: str = setting("127.0.0.1", "address to bind", env="JAN_API_HOST")
    port: int = setting(1337, "port to bind", parse=int, env="JAN_API_PORT")
    data_dir: Path = setting(factory=default_data_dir, help="where models, the database and downloads live",
                             parse=Path, shown="$XDG_DATA_HOME/jan-server", top_level=True)
    database_url: str | None = setting(None, "a SQLAlchemy URL instead of the SQLite file", shown="jan.db in the data dir",
                                       top_level=True)
    #: See jan_server.models.loading.ThreadBudget.
    n_threads: int | None = setting(None, "llama.cpp threads all running models share", parse=int, shown="every core")
    max_queued_requests: int = setting(32, "chat requests that may wait per model before 429", parse=int)
    #: Empty means the API is open (and loopback-only).
    api_keys: tuple[str, ...] = setting((), "require `Authorization: Bearer KEY` on /v1; repeat for several keys",
                                        env="JAN_API_KEY", flag="--api-key", many=True, metavar="KEY", shown="none")
    allow_remote: bool = setting(False, "allow an open API (no --api-key) on an address other than loopback", switch=True,
                                shown="off")
    cors_origins: tuple[str, ...] = setting((), "origins browsers may call the API from, or *", many=True,
                                            metavar="ORIGINS", shown="any http(s)://localhost or 127.0.0.1 origin")
    max_body_bytes: int = setting(8 * 1024 * 1024, "largest request body accepted; bigger ones get 413", parse=int,
                                  shown="8 MiB")
    #: Uploads are streamed to disk, so this limit is not bound by memory (see jan_server.web.uploads).
    max_file_bytes: int = setting(512 * 1024 * 1024, "largest file an upload may hold; bigger ones get 413", parse=int,
                                  shown="512 MiB")
    #: A non-streamed completion sends nothing until it is done, so the read limit is long.
    remote_connect_timeout: float = setting(10.0, "seconds to wait to connect to a remote engine", parse=float,
                                            metavar="SECONDS")
    remote_read_timeout: float = setting(300.0, "seconds to wait for each read from a remote engine", parse=float,
                                         metavar="SECONDS")
    #: See jan_server.models.remote.KeyVariables.
    remote_key_prefix: str = setting("JAN_REMOTE_", "a remote model's api_key_env may name variables starting with this; "
                                     "'' for none", metavar="PREFIX")
    remote_key_envs: tuple[str, ...] = setting((), "a variable a remote model's api_key_env may name besides those; "
                                               "repeat for several", flag="--remote-key-env", many=True, metavar="NAME",
                                               shown="none")
    #: See jan_server.models.egress.
    egress: str = setting("lan", "where downloads and remote engines may connect: lan (not link-local or cloud metadata "
                          "addresses), public (not loopback or private ranges either) or loopback", choices=EGRESS)
    max_loaded_models: int | None = setting(None, "most local models loaded at once; one more stops the least recently "
                                            "used idle one", parse=int, metavar="N", shown="no limit")
    #: Off by default: reloading costs the next request seconds, and on a machine of its own a model's memory is
    #: better kept than freed.
    idle_timeout: float | None = setting(None, "stop a local model idle this many seconds", parse=float,
                                         metavar="SECONDS", shown="never")
    #: See jan_server.models.prompt_cache. None: a quarter of the memory available at start, at most 8 GiB.
    cache_ram: int | None = setting(None, "MiB of host memory for the prompt cache (the KV cells of conversations "
                                    "evicted from their slots); 0 turns it off", parse=int, metavar="MIB",
                                    shown="a quarter of available memory, at most 8192")
    cache_disk: int = setting(2048, "MiB of the data dir for the prompt cache's disk tier, which outlives restarts; "
                              "0 turns it off", parse=int, metavar="MIB")
    #: See Job.exact: the default of every model's settings.deterministic.
    deterministic: bool = setting(False, "a seed gives the same text whatever else runs (seeded chats then batch less "
                                  "and reuse less of the prompt cache), unless a model's settings say otherwise",
                                  switch=True, shown="off")
    #: See jan_server.models.aliases (which refuses one that is not PATTERN=MODEL when the server starts).
    model_aliases: tuple[str, ...] = setting((), "serve requests for model names matching the glob PATTERN with MODEL, "
                                             "e.g. 'claude-*=my-coder'; repeat for several (the first match wins)",
                                             flag="--model-alias", many=True, metavar="PATTERN=MODEL", shown="none")
    #: See jan_server.retrieval.ingest: a store records the model that embedded it, and is searched with that one.
    embedding_model: str = setting("smollm2-135m-instruct", "local model that embeds vector stores' files and "
                                   "queries, unless a store names its own", metavar="MODEL")
    #: Not settings of the command line. Worker threads bridging Flask to ASGI for chat and model requests: open
    #: streams each hold one, so keep well above the queue. Quick workers run every other request (store, /health)
    #: when the database is not SQLite; with SQLite those run on the event loop (see jan_server.web.bridge).
    wsgi_workers: int = 64
    quick_workers: int = 4

    def __post_init__(self):
        if self.egress not in EGRESS:
            raise ValueError(f"egress must be one of {', '.join(EGRESS)}, not {self.egress!r}")
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser())

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'jan.db'}"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> "Settings":
        """Settings from JAN_* environment variables; keyword overrides (CLI flags) that are not None win."""
        env = os.environ if environ is None else environ
        chosen = {option.name: option.from_text(env.get(option.env)) for option in options()}
        chosen.update((name, value) for name, value in overrides.items() if value is not None)
        return replace(cls(), **{name: value for name, value in chosen.items() if value is not None})


def options() -> list[Option]:
    """The declared settings, in declaration order."""
    declared = []
    for f in fields(Settings):
        if not f.metadata:
            continue
        meta = f.metadata
        env = meta["env"] or f"JAN_{f.name.upper()}"
        listed = ", comma-separated" if meta["many"] else ""
        declared.append(Option(
            name=f.name, env=env, flag=meta["flag"] or f"--{f.name.replace('_', '-')}",
            help=f"{meta['help']} (env {env}{listed}, default {meta['shown'] or f.default})",
            parse=meta["parse"], many=meta["many"], switch=meta["switch"], choices=meta["choices"],
            metavar=meta["metavar"], top_level=meta["top_level"],
        ))
    return declared
