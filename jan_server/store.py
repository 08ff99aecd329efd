"""Placeholder: replaced by the SQLAlchemy store."""


class Store:
    @classmethod
    def open(cls, url):
        return cls()

    def close(self):
        pass
