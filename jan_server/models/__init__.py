"""Models and inference, with no HTTP in it: the models on disk (registry), fetching files over HTTP (transfer)
and models with them (downloads), how a model loads and its share of the threads (loading), the model service
that owns every model operation and the lifecycle (lifecycle), and decoding many chats at once: the pure-Python
scheduler (scheduler, jobs, stops) over a llama.cpp backend (llama_backend), with prompt formatting apart
(prompt); batching.Runner joins the three."""
