"""Images: the frames of an instance's pixel data, decoded whatever their transfer syntax, rendered
and encoded as the REST API answers them.

The decoding runs in image processes (worker.py), never in the server: numpy, Pillow and the codecs
would be most of the server's memory at start, and a codec that crashes takes only its process
down. The server keeps numpy out of its own process (see cli.py), since pydicom loads it whenever
it can.
"""

from .service import Images

__all__ = ["Images"]
