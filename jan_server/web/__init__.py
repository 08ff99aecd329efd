"""The web layer: everything that knows HTTP, Connexion or Flask.

The app factory (app), the one loader of the spec files (spec_bundle), how operations are dispatched and run
(dispatch, run_modes, bridge, disconnect), the guards in front of them (security), the spec's paths and the
errors Connexion itself answers (spec_paths, error_responses), the offline /docs console and the served spec
(console) and the OpenAI wire formats (chat, sse). The domain packages (models, storage) never import from here.
"""
