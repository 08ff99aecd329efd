def list_threads(limit=20):
    return {"object": "list", "data": [], "limit": limit}
