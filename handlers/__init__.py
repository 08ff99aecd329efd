"""HTTP translation for each tag of the spec; Connexion dispatches operationIds here (see jan_server.dispatch.TagResolver)."""

from flask import current_app

from jan_server.services import Services


def services() -> Services:
    """The domain objects of the running app."""
    return current_app.extensions["jan_server"]
