"""The Responses API's domain: input items and the context they make (items), one response's generation and
its object (generation), and the service that starts, stores, runs in the background and cancels responses
(service), and compacting a context or counting its tokens (compaction). No HTTP in it; jan_server.web.responses streams a generation as OpenAI's events."""
