"""The index of the DICOM hierarchy (SQLite by default, PostgreSQL for scale-out)."""

from .enums import ChangeType, GlobalProperty, MetadataType
from .index import Index, IndexTransaction, Resource, now_iso, sqlite_url

__all__ = ["ChangeType", "GlobalProperty", "Index", "IndexTransaction", "MetadataType", "Resource", "now_iso", "sqlite_url"]
