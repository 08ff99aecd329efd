"""How Connexion dispatches operations to handlers: operationId -> handler function, parameter validation with
OpenAI-style messages, and the per-operation decorator chain built once instead of per request."""

from __future__ import annotations

import functools
import re

from connexion.apps.flask import FlaskOperation
from connexion.decorators import FlaskDecorator
from connexion.decorators.parameter import SyncParameterDecorator
from connexion.resolver import Resolver
from connexion.utils import is_null, is_nullable
from connexion.validators import ParameterValidator
from jsonschema import Draft4Validator, ValidationError


class TagResolver(Resolver):
    """operationId `createThread` tagged `Threads` resolves to `jan_server.handlers.threads.create_thread`."""

    def resolve_operation_id(self, operation) -> str:
        tag = operation._operation["tags"][0].lower()  # Connexion keeps the operation's raw spec here
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", operation.operation_id).lower()
        return f"jan_server.handlers.{tag}.{name}"


class NamedParameterValidator(ParameterValidator):
    """Connexion's parameter errors omit the parameter's name; OpenAI clients expect it (as `param`).

    Connexion also builds a JSON Schema validator, from a deep copy of the parameter, for each parameter of
    each request; here each parameter's validator is built once (see `schema_validator`)."""

    @staticmethod
    def validate_parameter(parameter_type, value, param, param_name=None):
        if value is None or (is_nullable(param) and is_null(value)):
            return ParameterValidator.validate_parameter(parameter_type, value, param, param_name)
        try:
            schema_validator(param).validate(value)
        except ValidationError as exception:
            error = str(exception)
            return error if f"parameter '{param['name']}'" in error else f"Invalid {parameter_type} parameter '{param['name']}': {error}"
        return None


_SCHEMA_VALIDATORS: dict[int, tuple[dict, Draft4Validator]] = {}


def schema_validator(param: dict) -> Draft4Validator:
    """The validator of a spec parameter's schema, built on first use. The cache holds the parameter itself
    so its id cannot be reused by another object."""
    cached = _SCHEMA_VALIDATORS.get(id(param))
    if cached is None or cached[0] is not param:
        validator = Draft4Validator(param.get("schema", param), format_checker=Draft4Validator.FORMAT_CHECKER)
        cached = _SCHEMA_VALIDATORS[id(param)] = (param, validator)
    return cached[1]


class PreparedParameterDecorator(SyncParameterDecorator):
    """Remembers the Python names of parameters: Connexion runs each through inflection's regexes per request."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sanitize_fn = functools.lru_cache(maxsize=256)(self.sanitize_fn)


class PreparedFlaskDecorator(FlaskDecorator):
    """Connexion's FlaskOperation wraps its handler in the parameter and response decorators again on
    every request (inspecting the handler's signature each time); this builds that chain once."""

    _parameter_decorator_cls = PreparedParameterDecorator

    def __call__(self, function):
        decorated = self.decorate(function)

        @functools.wraps(function)
        def wrapper(*_args, **_kwargs):
            return decorated(self.framework.get_request(uri_parser=self.uri_parser))

        return wrapper


def prepare_operations(flask_app) -> None:
    """Swap each Connexion operation view for its handler wrapped once by PreparedFlaskDecorator."""
    for endpoint, view in flask_app.view_functions.items():
        if isinstance(view, FlaskOperation):
            decorator = PreparedFlaskDecorator(pythonic_params=view.pythonic_params, jsonifier=view.jsonifier)
            flask_app.view_functions[endpoint] = decorator(view._fn)

