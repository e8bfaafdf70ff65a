"""Images: the frames of an instance's pixel data, decoded whatever their transfer syntax.

numpy, Pillow and the codecs load with the first image, not with the server (numpy alone is
about a third of a server's memory at start).
"""

from .decode import decode_frame, frame_count

__all__ = ["decode_frame", "frame_count"]
