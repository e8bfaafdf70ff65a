"""The storage area: attachment files addressed by UUID."""

from .area import ContentType, FileInfo, StorageArea

__all__ = ["ContentType", "FileInfo", "StorageArea"]
