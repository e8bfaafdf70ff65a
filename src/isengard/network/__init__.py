"""The DICOM network: the server (scp), its access control (access) and presentation contexts
(presentation), the registry of remote modalities (modalities) and the client side (scu).

Import the modules themselves: this package imports nothing, so that the configuration can
use `modalities` without importing the server.
"""
