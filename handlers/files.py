"""Files: HTTP translation for the file operations of the spec (see jan_server.storage.files and jan_server.web.uploads)."""

from urllib.parse import quote

from flask import Response, request

from jan_server.errors import InvalidRequestError
from jan_server.handlers import services
from jan_server.storage.paging import Page
from jan_server.web.uploads import STAGED_HEADER, staging_dir


def create_file(body, file=None):
    """The upload middleware has written the file part to a staging file and named it in STAGED_HEADER."""
    staged = request.headers.get(STAGED_HEADER.decode())
    if not staged:
        raise InvalidRequestError("Send `file` as a file part of the form, with a filename.", param="file")
    path = staging_dir(services().settings.data_dir) / staged
    if not path.stat().st_size:
        raise InvalidRequestError("The file is empty.", param="file")
    return services().store.files.create(path, file.filename or "upload", body["purpose"])


def list_files(purpose=None, limit=20, order="desc", after=None):
    return services().store.files.list(Page(limit, order, after), purpose)


def retrieve_file(file_id):
    return services().store.files.get(file_id)


def delete_file(file_id):
    return services().store.files.delete(file_id)


def download_file(file_id):
    file, chunks = services().store.files.content(file_id)
    headers = {"Content-Length": str(file["bytes"]), "Content-Disposition": f"attachment; filename*=UTF-8''{quote(file['filename'])}"}
    return Response(chunks, mimetype="application/octet-stream", headers=headers)
