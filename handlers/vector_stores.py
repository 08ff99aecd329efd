"""Vector stores: HTTP translation for the vector store operations of the spec (see jan_server.storage.vector_stores,
jan_server.storage.vector_store_files and jan_server.retrieval)."""

from jan_server.handlers import services

from jan_server.storage.paging import Page


def create_vector_store(body=None):
    body = body or {}
    model = services().ingestion.embedding_model(body.get("embedding_model"), services().settings.embedding_model)
    store = services().store.vector_stores.create(body, model)
    services().ingestion.wake()
    return store


def list_vector_stores(limit=20, order="desc", after=None, before=None):
    return services().store.vector_stores.list(Page(limit, order, after, before))


def get_vector_store(vector_store_id):
    return services().store.vector_stores.get(vector_store_id)


def modify_vector_store(vector_store_id, body):
    return services().store.vector_stores.modify(vector_store_id, body)


def delete_vector_store(vector_store_id):
    deleted = services().store.vector_stores.delete(vector_store_id)
    services().search.forget(vector_store_id)
    return deleted


def search_vector_store(vector_store_id, body):
    return services().search.search(vector_store_id, body)


def create_vector_store_file(vector_store_id, body):
    file = services().store.vector_store_files.add(vector_store_id, body)
    services().ingestion.wake()
    return file


def list_vector_store_files(vector_store_id, filter_=None, limit=20, order="desc", after=None, before=None):
    return services().store.vector_store_files.list(vector_store_id, Page(limit, order, after, before), filter_)


def get_vector_store_file(vector_store_id, file_id):
    return services().store.vector_store_files.get(vector_store_id, file_id)


def update_vector_store_file_attributes(vector_store_id, file_id, body):
    return services().store.vector_store_files.update(vector_store_id, file_id, body["attributes"])


def delete_vector_store_file(vector_store_id, file_id):
    return services().store.vector_store_files.delete(vector_store_id, file_id)


def retrieve_vector_store_file_content(vector_store_id, file_id):
    text = services().ingestion.text(vector_store_id, file_id)
    data = [{"type": "text", "text": text}] if text is not None else []
    return {"object": "vector_store.file_content.page", "data": data, "has_more": False, "next_page": None}


def create_vector_store_file_batch(vector_store_id, body):
    batch = services().store.vector_store_files.create_batch(vector_store_id, body)
    services().ingestion.wake()
    return batch


def get_vector_store_file_batch(vector_store_id, batch_id):
    return services().store.vector_store_files.get_batch(vector_store_id, batch_id)


def cancel_vector_store_file_batch(vector_store_id, batch_id):
    return services().store.vector_store_files.cancel_batch(vector_store_id, batch_id)


def list_files_in_vector_store_batch(vector_store_id, batch_id, filter_=None, limit=20, order="desc", after=None, before=None):
    return services().store.vector_store_files.list_batch(vector_store_id, batch_id, Page(limit, order, after, before), filter_)
