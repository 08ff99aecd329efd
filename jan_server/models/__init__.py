"""Models and inference, with no HTTP in it: the models on disk (registry), fetching them (downloads), loading
and stopping them (lifecycle), and decoding many chats at once: the pure-Python scheduler (scheduler, jobs, stops)
over a llama.cpp backend (llama_backend), with prompt formatting apart (prompt); batching.Runner joins the three."""
