"""Storage: the database engine and migrations (db), the tables (tables), the queries per resource (threads,
messages, assistants, responses, conversations, on the shared transaction and lookup helpers of queries, gathered by store), the objects'
shapes and input rules (records) and cursor paging (paging). No HTTP in it."""
