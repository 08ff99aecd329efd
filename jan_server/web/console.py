"""The console and the spec it reads: /docs (served offline from swagger-ui-bundle), the bundled spec at
/v1/openapi.json and /v1/openapi.yaml, and the non-API routes / and /health.

Connexion mounts its own console under the API base path (/v1/ui); the user asked for /docs at the root.
"Try it out" stays a click away: with `tryItOutEnabled` Swagger UI 4 fills request bodies from the schema
instead of the spec's first example, and those generated bodies fail. The filter box and request snippets
(curl) are on, and our plugin (assets/jan-console.js) carries ids from one call to the next.
"""

from __future__ import annotations

import json
from pathlib import Path

import flask
import yaml
from swagger_ui_bundle import swagger_ui_path

from jan_server.web.spec_paths import SPEC_URL, SPEC_YAML_URL

#: The console's own files, served beside swagger-ui-bundle's under /docs.
ASSETS = Path(__file__).with_name("assets")

INDEX_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>jan-server API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <link rel="stylesheet" href="/docs/jan-console.css">
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/jan-console.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "%s",
      dom_id: "#swagger-ui",
      plugins: [window.JanConsole],
      deepLinking: true,
      filter: true,
      requestSnippetsEnabled: true,
      displayRequestDuration: true,
      persistAuthorization: true,
      validatorUrl: null
    });
  </script>
</body>
</html>
""" % SPEC_URL


def register(app: flask.Flask, spec: dict) -> None:
    """Routes for the console, and for `spec` (the bundled document), rendered once here."""
    docs = flask.Blueprint("docs", __name__)
    spec_json = json.dumps(spec, ensure_ascii=False)
    spec_yaml = yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=120)

    @docs.get(SPEC_URL)
    def spec_as_json():
        return flask.Response(spec_json, mimetype="application/json")

    @docs.get(SPEC_YAML_URL)
    def spec_as_yaml():
        return flask.Response(spec_yaml, mimetype="application/yaml")

    @docs.get("/")
    def root():
        return flask.redirect("/docs", code=302)

    @docs.get("/docs")
    @docs.get("/docs/")
    def console():
        return flask.Response(INDEX_HTML, mimetype="text/html")

    @docs.get("/docs/<path:filename>")
    def console_asset(filename: str):
        folder = ASSETS if (ASSETS / filename).is_file() else swagger_ui_path
        return flask.send_from_directory(folder, filename)

    @docs.get("/health")
    def health():
        return {"status": "ok"}

    app.register_blueprint(docs)
