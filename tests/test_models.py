"""Models over HTTP against the real server: the bundled SmolLM2, ids, start/stop, a corrupt GGUF, delete."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from jan_server.models.registry import BUNDLED_MODEL_ID, bundled_weights
from tests.live_server import bundled_copy
from tests.test_app import assert_openai_error


def model_dir(server, model_id):
    path = server.data_dir / "models" / model_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_bundled_model_is_listed_ready(api):
    listed = api.get("/models").json()
    assert listed["object"] == "list"
    model = next(m for m in listed["data"] if m["id"] == BUNDLED_MODEL_ID)
    assert model["object"] == "model" and isinstance(model["created"], int) and model["owned_by"]
    assert model["state"] in ("downloaded", "running")
    assert "ctx_len" not in model["settings"] and "temperature" in model["parameters"]  # the trained context
    metadata = model["metadata"]
    assert metadata["size"] == bundled_weights().stat().st_size
    assert (metadata["quantization"], metadata["engine"], metadata["bundled"]) == ("Q4_1", "llamacpp", True)
    assert api.get(f"/models/{BUNDLED_MODEL_ID}").json()["id"] == BUNDLED_MODEL_ID


def test_unknown_and_invalid_ids(api):
    assert assert_openai_error(api.get("/models/no-such-model"), 404)["code"] == "model_not_found"
    for bad in ("a..b", "-dash-first", "x" * 129):
        assert_openai_error(api.get(f"/models/{bad}"), 400)
    assert_openai_error(api.delete("/models/a..b"), 400)
    assert_openai_error(api.put("/models/a..b/start"), 400)


def test_start_and_stop_state_transitions(api):
    stopped = api.put(f"/models/{BUNDLED_MODEL_ID}/stop")
    assert stopped.status_code == 200 and stopped.json()["state"] == "downloaded"
    started = api.put(f"/models/{BUNDLED_MODEL_ID}/start", json={"ctx_len": 1024})
    assert started.status_code == 200, started.text
    model = started.json()
    assert model["state"] == "running"
    assert model["metadata"]["ctx_len"] == 1024
    others = [m for m in api.get("/models").json()["data"] if m["state"] == "running" and m["id"] != BUNDLED_MODEL_ID]
    assert model["metadata"]["n_threads"] == max(1, os.cpu_count() - sum(m["metadata"]["n_threads"] for m in others))
    assert api.get(f"/models/{BUNDLED_MODEL_ID}").json()["state"] == "running"
    assert api.put(f"/models/{BUNDLED_MODEL_ID}/start").json()["state"] == "running"  # already running: unchanged
    assert api.put(f"/models/{BUNDLED_MODEL_ID}/stop").json()["state"] == "downloaded"
    assert api.put(f"/models/{BUNDLED_MODEL_ID}/stop").json()["state"] == "downloaded"  # not running: unchanged
    assert_openai_error(api.put(f"/models/{BUNDLED_MODEL_ID}/start", json={"ctx_len": 0}), 400)


def test_a_model_runs_with_the_threads_it_asks_for(api):
    api.put(f"/models/{BUNDLED_MODEL_ID}/stop").raise_for_status()
    started = api.put(f"/models/{BUNDLED_MODEL_ID}/start", json={"n_threads": 1})
    assert started.status_code == 200, started.text
    assert started.json()["metadata"]["n_threads"] == 1
    assert api.get(f"/models/{BUNDLED_MODEL_ID}").json()["metadata"]["n_threads"] == 1
    api.put(f"/models/{BUNDLED_MODEL_ID}/stop").raise_for_status()


def test_chat_starts_a_stopped_model(api):
    api.put(f"/models/{BUNDLED_MODEL_ID}/stop")
    reply = api.post("/chat/completions", json={"model": BUNDLED_MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
    assert reply.status_code == 200, reply.text
    assert api.get(f"/models/{BUNDLED_MODEL_ID}").json()["state"] == "running"


@pytest.mark.parametrize("content", [b"<html>not a model</html>", b"GGUF" + bytes(range(256)) * 16], ids=["html", "bad-gguf"])
def test_corrupt_gguf_is_an_error_and_the_server_keeps_serving(server, api, content):
    model_id = f"broken-{len(content)}"
    (model_dir(server, model_id) / "broken.Q4_0.gguf").write_bytes(content)
    listed = api.get(f"/models/{model_id}").json()
    assert listed["state"] == "downloaded"
    error = assert_openai_error(api.put(f"/models/{model_id}/start"), 409)
    assert error["code"] == "model_load_failed" and model_id in error["message"]
    model = api.get(f"/models/{model_id}").json()
    assert model["state"] == "error" and model_id in model["error"]
    chat = api.post("/chat/completions", json={"model": model_id, "messages": [{"role": "user", "content": "Hi"}]})
    assert assert_openai_error(chat, 409)["code"] == "model_load_failed"
    assert httpx.get(f"{server.base_url}/health").json() == {"status": "ok"}
    reply = api.post("/chat/completions", json={"model": BUNDLED_MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
    assert reply.status_code == 200, reply.text


def test_model_json_without_weights_is_not_downloaded(server, api):
    manifest = {"id": "later", "name": "Later", "source_url": "https://example.invalid/later.Q4_K_M.gguf",
                "settings": {"ctx_len": 4096, "llama_model_path": "later.Q4_K_M.gguf"}, "parameters": {"temperature": 0.2}}
    (model_dir(server, "later") / "model.json").write_text(json.dumps(manifest))
    model = api.get("/models/later").json()
    assert (model["state"], model["name"], model["source_url"]) == ("not_downloaded", "Later", manifest["source_url"])
    assert model["settings"]["ctx_len"] == 4096 and model["parameters"]["temperature"] == 0.2
    assert assert_openai_error(api.put("/models/later/start"), 409)["code"] == "model_not_downloaded"


def test_the_list_shows_models_dropped_in_edited_and_removed_by_hand(server, api):
    """GET /models re-reads the folder only when it changed; every change by hand still shows at once."""
    def listed():
        return {model["id"]: model for model in api.get("/models").json()["data"]}

    assert "by-hand" not in listed()
    folder = model_dir(server, "by-hand")
    (folder / "dropped.Q8_0.gguf").write_bytes(b"GGUF")
    model = listed()["by-hand"]
    assert (model["state"], model["metadata"]["quantization"], model["name"]) == ("downloaded", "Q8_0", "by-hand")
    (folder / "model.json").write_text(json.dumps({"name": "Dropped by hand"}))
    assert listed()["by-hand"]["name"] == "Dropped by hand"
    with open(folder / "model.json", "w") as manifest:  # edited in place: the same file, the same folder
        manifest.write(json.dumps({"name": "Edited by hand, in place"}))
    assert listed()["by-hand"]["name"] == "Edited by hand, in place"
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    assert "by-hand" not in listed()


def test_delete_stops_a_running_model_and_removes_its_files(server, api):
    directory = bundled_copy(server.data_dir, "smol-copy", {"name": "Smol copy", "settings": {"ctx_len": 512}})
    assert api.put("/models/smol-copy/start").json()["state"] == "running"
    deleted = api.delete("/models/smol-copy")
    assert deleted.json() == {"id": "smol-copy", "object": "model", "deleted": True}
    assert not directory.exists() and bundled_weights().is_file()
    assert assert_openai_error(api.get("/models/smol-copy"), 404)["code"] == "model_not_found"
    assert assert_openai_error(api.delete("/models/smol-copy"), 404)["code"] == "model_not_found"
    assert "smol-copy" not in [m["id"] for m in api.get("/models").json()["data"]]


def test_bundled_model_cannot_be_deleted(api):
    assert assert_openai_error(api.delete(f"/models/{BUNDLED_MODEL_ID}"), 409)["code"] == "model_not_deletable"
    assert api.get(f"/models/{BUNDLED_MODEL_ID}").status_code == 200


def test_settings_that_do_not_fit_in_memory_are_a_409_and_the_model_starts_again(api):
    """Schema-valid settings the machine cannot hold (found by schemathesis): the server is fine, this load is not."""
    api.put(f"/models/{BUNDLED_MODEL_ID}/stop")
    error = assert_openai_error(api.put(f"/models/{BUNDLED_MODEL_ID}/start", json={"ctx_len": 1048576, "n_parallel": 64}), 409)
    assert error["code"] == "model_load_failed"
    assert api.get(f"/models/{BUNDLED_MODEL_ID}").json()["state"] == "error"
    started = api.put(f"/models/{BUNDLED_MODEL_ID}/start")
    assert started.status_code == 200, started.text
    assert started.json()["state"] == "running"


def test_rope_scaling_stretches_a_context_beyond_the_trained_one_and_a_bad_value_is_named(server, api):
    """`rope_scaling` yarn's factor is by default the context over the trained one (8,192 for the bundled model);
    an unknown type is a 400 naming the field on a start request, and a 409 naming it from a model.json."""
    api.put(f"/models/{BUNDLED_MODEL_ID}/stop").raise_for_status()
    started = api.put(f"/models/{BUNDLED_MODEL_ID}/start", json={"ctx_len": 16384, "n_parallel": 1, "rope_scaling": "yarn"})
    assert started.status_code == 200, started.text
    assert {key: started.json()["metadata"][key] for key in ("ctx_len", "rope_scaling", "rope_scale")} == {
        "ctx_len": 16384, "rope_scaling": "yarn", "rope_scale": 2.0}
    api.put(f"/models/{BUNDLED_MODEL_ID}/stop").raise_for_status()
    for bad in ({"rope_scaling": "ntk"}, {"rope_scaling": "yarn", "rope_scale": 0.5}):
        error = assert_openai_error(api.put(f"/models/{BUNDLED_MODEL_ID}/start", json=bad), 400)
        assert list(bad)[-1] in error["message"] + str(error["param"])
    for name, settings in (("smol-ntk", {"rope_scaling": "ntk"}), ("smol-far", {"rope_scaling": "yarn", "rope_scale": "far"})):
        bundled_copy(server.data_dir, name, {"settings": {"ctx_len": 512, **settings}})
        error = assert_openai_error(api.put(f"/models/{name}/start"), 409)
        assert error["code"] == "model_load_failed" and f"{list(settings)[-1]} {list(settings.values())[-1]!r}" in error["message"]
        api.delete(f"/models/{name}").raise_for_status()  # the session's server lists its models' settings as they are
