"""Isengard versus Orthanc 1.10.1: ingest throughput, find latency, memory (`make bench`)."""
