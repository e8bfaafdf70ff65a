"""Isengard: a lightweight, scriptable DICOM server with an Orthanc-compatible REST API."""

__version__ = "0.1.0"

# The Orthanc release whose REST API Isengard implements, and its API level.
ORTHANC_API_VERSION = 16
ORTHANC_VERSION = "1.10.1"
