"""The `jan-server` command: serve (the default), migrate, pull, models."""

from __future__ import annotations

import argparse
import errno
import logging
import socket

from jan_server.models.egress import EGRESS
from jan_server.web.security import is_loopback
from jan_server.settings import Settings, split_list


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jan-server", description="A local, OpenAI-compatible API server.")
    parser.add_argument("--data-dir", help="where models, the database and downloads live (env JAN_DATA_DIR)")
    parser.add_argument("--database-url", help="a SQLAlchemy URL instead of the SQLite file (env JAN_DATABASE_URL)")
    commands = parser.add_subparsers(dest="command")

    # Its options are also the top-level parser's; left unset here, they keep what was given before `serve`.
    serve = commands.add_parser("serve", help="start the API server (the default command)", argument_default=argparse.SUPPRESS)
    add_serve_arguments(serve)
    add_serve_arguments(parser)
    commands.add_parser("migrate", help="apply database migrations and exit")

    pull = commands.add_parser("pull", help="download a GGUF model into the data dir, with a progress bar")
    pull.add_argument("source", metavar="URL|MODEL_ID", help="a GGUF URL, or the id of a model whose model.json names its source_url")
    pull.add_argument("--id", dest="model_id", help="the model's id (default: from the file name)")
    pull.add_argument("--name", help="a display name for the model")
    pull.add_argument("--sha256", help="the file's expected sha256; a mismatch deletes it")
    commands.add_parser("models", help="list the models in the data dir")
    return parser


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (env JAN_API_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (env JAN_API_PORT, default 1337)")
    parser.add_argument("--n-threads", type=int, help="llama.cpp threads all running models share (env JAN_N_THREADS, default: every core)")
    parser.add_argument("--max-queued-requests", type=int,
                        help="chat requests that may wait per model before 429 (env JAN_MAX_QUEUED_REQUESTS, default 32)")
    parser.add_argument("--api-key", action="append", dest="api_keys", metavar="KEY",
                        help="require `Authorization: Bearer KEY` on /v1; repeat for several keys (env JAN_API_KEY, comma-separated)")
    parser.add_argument("--allow-remote", action="store_const", const=True,
                        help="allow an open API (no --api-key) on an address other than loopback (env JAN_ALLOW_REMOTE)")
    parser.add_argument("--cors-origins", type=split_list, metavar="ORIGINS",
                        help="comma-separated origins browsers may call from, or * (env JAN_CORS_ORIGINS, default: localhost origins)")
    parser.add_argument("--max-body-bytes", type=int, help="largest request body accepted (env JAN_MAX_BODY_BYTES, default 8 MiB)")
    parser.add_argument("--max-loaded-models", type=int, metavar="N",
                        help="most local models loaded at once; one more stops the least recently used idle one (env JAN_MAX_LOADED_MODELS, default: no limit)")
    parser.add_argument("--idle-timeout", type=float, metavar="SECONDS",
                        help="stop a local model idle this long (env JAN_IDLE_TIMEOUT, default: never)")
    parser.add_argument("--remote-connect-timeout", type=float, metavar="SECONDS",
                        help="wait this long to connect to a remote engine (env JAN_REMOTE_CONNECT_TIMEOUT, default 10)")
    parser.add_argument("--remote-read-timeout", type=float, metavar="SECONDS",
                        help="wait this long for each read from a remote engine (env JAN_REMOTE_READ_TIMEOUT, default 300)")
    parser.add_argument("--remote-key-prefix", metavar="PREFIX",
                        help="a remote model's api_key_env may name variables starting with this; '' for none "
                             "(env JAN_REMOTE_KEY_PREFIX, default JAN_REMOTE_)")
    parser.add_argument("--remote-key-env", action="append", dest="remote_key_envs", metavar="NAME",
                        help="a variable a remote model's api_key_env may name besides those; repeat for several "
                             "(env JAN_REMOTE_KEY_ENVS, comma-separated)")
    parser.add_argument("--egress", choices=EGRESS,
                        help="where downloads and remote engines may connect: lan (not link-local or cloud metadata addresses), "
                             "public (not loopback or private ranges either) or loopback (env JAN_EGRESS, default lan)")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The top-level parser defines every serve option, so each is set (None when not given), whatever the command."""
    return Settings.from_env(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        database_url=args.database_url,
        n_threads=args.n_threads,
        max_queued_requests=args.max_queued_requests,
        api_keys=tuple(key for key in args.api_keys or () if key) or None,
        allow_remote=args.allow_remote,
        cors_origins=args.cors_origins,
        max_body_bytes=args.max_body_bytes,
        max_loaded_models=args.max_loaded_models,
        idle_timeout=args.idle_timeout,
        remote_connect_timeout=args.remote_connect_timeout,
        remote_read_timeout=args.remote_read_timeout,
        remote_key_prefix=args.remote_key_prefix,
        remote_key_envs=tuple(args.remote_key_envs) if args.remote_key_envs else None,
        egress=args.egress,
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before building the app, so a busy port is one clear error rather than a half-started server."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise SystemExit(f"jan-server: cannot listen on {host}:{port}: {reason}") from None
    sock.listen(2048)
    return sock


def serve(settings: Settings) -> None:
    if not settings.api_keys and not settings.allow_remote and not is_loopback(settings.host):
        raise SystemExit(f"jan-server: refusing to serve an open API on {settings.host}: "
                         "set an API key (--api-key / JAN_API_KEY) or pass --allow-remote")
    import uvicorn

    from jan_server.web.app import create_app

    sock = bind_socket(settings.host, settings.port)
    app = create_app(settings)
    print(f"jan-server: API at http://{settings.host}:{settings.port}/v1, console at http://{settings.host}:{settings.port}/docs", flush=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it already handled with a graceful shutdown
        pass


def migrate(settings: Settings) -> None:
    from sqlalchemy.engine import make_url

    from jan_server.storage.store import Store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    Store.open(settings.sqlalchemy_url).close()
    print(f"jan-server: database at {make_url(settings.sqlalchemy_url).render_as_string(hide_password=True)} is up to date")


def pull(settings: Settings, args: argparse.Namespace) -> None:
    """Download in this process (no server needed); Ctrl-C keeps the partial file for the next pull to resume."""
    from tqdm import tqdm

    from jan_server.models.downloads import DownloadManager, start_model_download
    from jan_server.errors import ApiError
    from jan_server.models.registry import Registry

    request = {"source_url": args.source} if "://" in args.source else {"id": args.source}
    request.update({key: value for key, value in {"id": args.model_id, "name": args.name, "sha256": args.sha256}.items() if value})
    downloads = DownloadManager(settings.egress)
    try:
        record = start_model_download(Registry(settings.models_dir), downloads, request)
    except ApiError as exc:
        raise SystemExit(f"jan-server: {exc.message}") from None
    download = downloads.get(record.id)
    with tqdm(desc=record.id, unit="B", unit_scale=True, unit_divisor=1024, dynamic_ncols=True) as bar:
        try:
            while True:
                ended = download.wait(0.1)
                done, bar.total = download.transfer.progress()
                bar.update(done - bar.n)
                if ended:
                    break
        except KeyboardInterrupt:
            downloads.close()
            raise SystemExit("jan-server: interrupted; the same command resumes the download") from None
    if download.state != "downloaded":
        raise SystemExit(f"jan-server: {download.error or download.state}")
    print(f"jan-server: model '{record.id}' is ready ({record.directory})")


def list_models(settings: Settings) -> None:
    from jan_server.models.transfer import partial_path
    from jan_server.models.registry import Registry

    records = Registry(settings.models_dir).list()
    if not records:
        print(f"jan-server: no models in {settings.models_dir}; add one with `jan-server pull URL`")
    for record in records:
        model = record.to_object()
        size = model["metadata"].get("size")
        state = model["state"]
        if not record.downloaded and record.weights and partial_path(record.weights).exists():
            size, state = partial_path(record.weights).stat().st_size, "partial (pull resumes it)"
        print(f"{record.id:40} {state:26} {f'{size / 1e6:,.0f} MB' if size else '':>9}  {record.weights or ''}")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("jan_server").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    if args.command == "migrate":
        migrate(settings)
    elif args.command == "pull":
        pull(settings, args)
    elif args.command == "models":
        list_models(settings)
    else:
        serve(settings)
