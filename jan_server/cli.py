"""The `jan-server` command: serve (the default), migrate, pull, models."""

from __future__ import annotations

import argparse
import errno
import logging
import socket

from jan_server.web.security import is_loopback
from jan_server.settings import Option, Settings, options, split_list


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jan-server", description="A local, OpenAI-compatible API server.")
    for option in options():
        if option.top_level:
            add_option(parser, option)
    commands = parser.add_subparsers(dest="command")

    # Its options are also the top-level parser's; left unset here, they keep what was given before `serve`.
    serve = commands.add_parser("serve", help="start the API server (the default command)", argument_default=argparse.SUPPRESS)
    for option in options():
        if not option.top_level:
            add_option(serve, option)
            add_option(parser, option)
    commands.add_parser("migrate", help="apply database migrations and exit")

    pull = commands.add_parser("pull", help="download a GGUF model into the data dir, with a progress bar")
    pull.add_argument("source", metavar="URL|MODEL_ID", help="a GGUF URL, or the id of a model whose model.json names its source_url")
    pull.add_argument("--id", dest="model_id", help="the model's id (default: from the file name)")
    pull.add_argument("--name", help="a display name for the model")
    pull.add_argument("--sha256", help="the file's expected sha256; a mismatch deletes it")
    commands.add_parser("models", help="list the models in the data dir")
    return parser


def add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    """The flag of a declared setting (jan_server.settings); unset, its value is None."""
    if option.switch:
        parser.add_argument(option.flag, dest=option.name, action="store_const", const=True, help=option.help)
    elif option.many:
        parser.add_argument(option.flag, dest=option.name, action="append", type=split_list, metavar=option.metavar,
                            help=option.help)
    else:
        parser.add_argument(option.flag, dest=option.name, type=option.parse, choices=option.choices,
                            metavar=option.metavar, help=option.help)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The top-level parser defines every option, so each is set (None when not given), whatever the command."""
    given = {}
    for option in options():
        value = getattr(args, option.name)
        if option.many and value is not None:
            value = tuple(item for items in value if items for item in items)
        given[option.name] = value
    return Settings.from_env(**given)


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
