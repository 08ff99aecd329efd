"""How Connexion dispatches operations to handlers: operationId -> handler function, parameter validation with
OpenAI-style messages, and the per-operation validators and decorator chain built once instead of per request."""

from __future__ import annotations

import collections
import functools
import re

from connexion.apps.flask import FlaskOperation
from connexion.datastructures import MediaTypeDict
from connexion.decorators import FlaskDecorator
from connexion.decorators.parameter import SyncParameterDecorator, prep_kwargs, unwrap_decorators
from connexion.http_facts import FORM_CONTENT_TYPES
from connexion.middleware import ConnexionMiddleware
from connexion.middleware.request_validation import RequestValidationAPI, RequestValidationMiddleware, RequestValidationOperation
from connexion.resolver import Resolver
from connexion.utils import inspect_function_arguments, is_null, is_nullable
from connexion.validators import VALIDATOR_MAP, JSONRequestBodyValidator, ParameterValidator
from connexion.exceptions import BadRequestProblem
from jsonschema import Draft4Validator, ValidationError
from jsonschema.exceptions import best_match
from starlette.datastructures import Headers


def handler_name(tag: str, operation_id: str) -> str:
    """operationId `createThread` tagged `Threads` -> `jan_server.handlers.threads.create_thread` (a tag of
    several words names its module with underscores: `Anthropic Messages` -> `anthropic_messages`)."""
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", operation_id).lower()
    return f"jan_server.handlers.{tag.lower().replace(' ', '_')}.{name}"


class TagResolver(Resolver):
    """Each operation resolves to its handler_name (which Connexion then also uses as its operation_id)."""

    def resolve_operation_id(self, operation) -> str:
        return handler_name(operation._operation["tags"][0], operation.operation_id)  # _operation: the raw spec


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


class PreparedRequestValidationOperation(RequestValidationOperation):
    """Connexion's request validation, with what it built for every request built once per operation: the URI
    parser, the parameter validator, and each content type's body validator with its JSON Schema validator.
    Each is stateless between requests (what a request needs, it creates in the call)."""

    def __init__(self, next_app, **kwargs):
        super().__init__(next_app, **kwargs)
        operation = self._operation
        self.uri_parser = operation.uri_parser_class(operation.parameters, operation.body_definition())
        self.parameter_validator = self._validator_map["parameter"](
            operation.parameters,
            uri_parser=self.uri_parser,
            strict_validation=self.strict_validation,
            security_query_params=self.security_query_params,
        )
        # Keyed by the request's content type and charset, so bounded: clients choose those.
        self.body_validator = functools.lru_cache(maxsize=8)(self.make_body_validator)

    async def __call__(self, scope, receive, send):
        self.parameter_validator.validate(scope)
        mime_type, encoding = self.extract_content_type(scope["headers"])
        self.validate_mime_type(mime_type)
        validator = self.body_validator(mime_type, encoding)
        if validator is not None:
            receive, scope = await validator.wrap_receive(receive, scope=scope)
        await self.next_app(scope, receive, send)

    def make_body_validator(self, mime_type: str, encoding: str):
        """The body validator for a content type, None if the operation takes no body of it or none is registered
        (Connexion then skips validation too)."""
        operation = self._operation
        schema = operation.body_schema(mime_type)
        validator_cls = self._validator_map["body"].get(mime_type) if schema else None
        return validator_cls and validator_cls(
            schema=schema,
            required=operation.request_body.get("required", False),
            nullable=is_nullable(operation.body_definition(mime_type)),
            encoding=encoding,
            strict_validation=self.strict_validation,
            uri_parser=self.uri_parser,
        )


class PreparedRequestValidationAPI(RequestValidationAPI):
    def make_operation(self, operation):
        return PreparedRequestValidationOperation(
            self.next_app, operation=operation, strict_validation=self.strict_validation, validator_map=self.validator_map
        )


class PreparedRequestValidationMiddleware(RequestValidationMiddleware):
    api_cls = PreparedRequestValidationAPI


class PreparedJSONBodyValidator(JSONRequestBodyValidator):
    """Connexion's JSON body validator builds its JSON Schema validator on every use; this one keeps it.

    It also lets an optional body (`required: false`) be absent without the spec marking its schema nullable,
    which would give generated clients a `CreateThreadRequestType0 | None` instead of a `CreateThreadRequest`.
    A body sent as JSON `null` is still validated (and refused unless the schema allows it). A body that fits
    none of a `oneOf`'s schemas is told what is wrong for the schema it comes closest to (see closest_error),
    with the field's path, which the error's `param` then names.
    """

    _validator = functools.cached_property(JSONRequestBodyValidator._validator.fget)

    def _validate(self, body):
        if not self._nullable and body is None:
            raise BadRequestProblem("Request body must not be empty")
        error = best_match(self._validator.iter_errors(body))
        if error is not None:
            error = closest_error(error)
            path = ".".join(str(item) for item in error.absolute_path)
            raise BadRequestProblem(detail=f"{error.message} - '{path}'" if path else error.message)

    async def _parse(self, stream, scope):
        try:
            return await super()._parse(stream, scope)
        except RecursionError:  # nested deeper than the JSON parser goes: as unreadable as a syntax error (not a 500)
            raise BadRequestProblem(detail="The JSON body is nested too deeply to read.") from None

    async def wrap_receive(self, receive, *, scope):
        headers = Headers(scope=scope)
        if not self._required and not int(headers.get("content-length") or 0) and "transfer-encoding" not in headers:
            return receive, scope
        return await super().wrap_receive(receive, scope=scope)


def closest_error(error: ValidationError) -> ValidationError:
    """For an instance that fits none of a oneOf's (or anyOf's) schemas, the error of the schema it comes closest
    to: the fewest unexpected properties at its own level, then the fewest errors at that level, then the fewest
    errors (the first schema on a tie); e.g. `{"id": "../x", "source_url": …}` is a download with a bad `id`, not
    a remote model without `engine`."""
    while error.validator in ("oneOf", "anyOf") and error.context:
        branches = collections.defaultdict(list)
        for sub in error.context:
            branches[sub.schema_path[0]].append(sub)

        def misfit(errors: list[ValidationError]) -> tuple[int, int, int]:
            level = [sub for sub in errors if not sub.relative_path]
            return sum(sub.validator == "additionalProperties" for sub in level), len(level), len(errors)

        error = best_match(min(branches.values(), key=misfit))
    return error


#: Connexion's validators, with ours where they differ.
VALIDATORS = {
    **VALIDATOR_MAP,
    "parameter": NamedParameterValidator,
    "body": MediaTypeDict({**VALIDATOR_MAP["body"], "*/*json": PreparedJSONBodyValidator}),
}


def connexion_middlewares() -> list:
    """Connexion's default middleware stack, with request validation prepared once per operation."""
    return [
        PreparedRequestValidationMiddleware if middleware is RequestValidationMiddleware else middleware
        for middleware in ConnexionMiddleware.default_middlewares
    ]


class PreparedParameterDecorator(SyncParameterDecorator):
    """Connexion's parameter step, minus two per-request costs: it runs the Python names of parameters through
    inflection's regexes (remembered here), and it parses every request body as a form to look for files
    (here only a body whose content type is a form can hold any, as werkzeug itself decides)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sanitize_fn = functools.lru_cache(maxsize=256)(self.sanitize_fn)

    def __call__(self, function):
        arguments, has_kwargs = inspect_function_arguments(unwrap_decorators(function))

        @functools.wraps(function)
        def wrapper(request):
            body = self._maybe_get_body(request, arguments=arguments, has_kwargs=has_kwargs)
            files = request.files() if request.mimetype in FORM_CONTENT_TYPES else {}
            kwargs = prep_kwargs(
                request, request_body=body, files=files, arguments=arguments, has_kwargs=has_kwargs, sanitize=self.sanitize_fn
            )
            return function(**kwargs)

        return wrapper


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

