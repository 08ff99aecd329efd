"""Models and inference, with no HTTP in it: the models on disk (registry), fetching them (downloads), loading
and stopping them (lifecycle), and decoding many chats at once on llama.cpp (batching)."""
