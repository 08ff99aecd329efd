"""Storage: the database engine and migrations (db), the tables (tables), the queries per resource (store),
the objects' shapes and input rules (records) and cursor paging (paging). No HTTP in it."""
