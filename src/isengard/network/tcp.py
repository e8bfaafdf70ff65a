"""Socket options of every DICOM connection, inbound and outbound."""

import socket

from pynetdicom import evt


def _set_tcp_nodelay(event: evt.Event) -> None:
    """Send small PDUs at once: with Nagle's algorithm, a peer that waits for delayed ACKs
    (DCMTK does) stalls on each C-STORE response, and transfers crawl at ~11 instances/s."""
    sock = event.assoc.dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# Bound on every association: pynetdicom raises it once the TCP connection is up, before
# the association is negotiated.
TCP_NODELAY_HANDLER = (evt.EVT_CONN_OPEN, _set_tcp_nodelay)
