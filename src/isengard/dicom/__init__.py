"""The DICOM model: identifiers, resource levels, main tags and parsing of instances."""
