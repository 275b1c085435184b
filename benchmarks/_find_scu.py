"""A minimal C-FIND SCU for bench_qr.py: blocking socket, no polling, so the latency measured is the server's.

pynetdicom's SCU costs milliseconds per response on a loaded two-core
machine (its reactor thread and queues), more than the servers' own work; it
hid what the servers do. This one sends the A-ASSOCIATE-RQ pynetdicom
encodes, then per query one P-DATA with the C-FIND-RQ and its identifier, and
reads responses until the final one. It speaks only what the benchmark needs.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dicomflow.dicom.values import Values
from dicomflow.dicom.walker import read_elements
from dicomflow.receiver import upperlayer as ul
from tests.integration.qr.qr_support import find_rq
from tests.unit.receiver.test_upperlayer import pynetdicom_rq

IMPLICIT = "1.2.840.10008.1.2"
_STATUS = 0x00000900
_FIELD = 0x00000100


class FindScu:
    """One association proposing ``sop_class`` in implicit VR little endian (context 1)."""

    def __init__(self, port: int, sop_class: str, called: str = "DICOMFLOW") -> None:
        self.sop_class = sop_class
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rq = bytearray(pynetdicom_rq((sop_class, [IMPLICIT]), calling="BENCH", max_length=1 << 20))
        rq[10:26] = called.encode().ljust(16, b" ")[:16]  # called AE title field of the A-ASSOCIATE-RQ
        self.sock.sendall(bytes(rq))
        kind, _ = ul.read_pdu(self.sock, 1 << 22)
        if kind != 0x02:
            raise RuntimeError(f"association refused (PDU type 0x{kind:02X})")
        self.message_id = 0

    def find(self, identifier: bytes) -> tuple[int, int]:
        """(matches, final status) of one C-FIND."""
        self.message_id += 1
        self.sock.sendall(b"".join(ul.encode_pdata(1, ul.COMMAND, find_rq(self.message_id, self.sop_class), 0)
                                   + ul.encode_pdata(1, 0, identifier, 0)))
        matches, command = 0, b""
        while True:
            kind, body = ul.read_pdu(self.sock, 1 << 22)
            if kind != ul.P_DATA_TF:
                raise RuntimeError(f"PDU type 0x{kind:02X} during C-FIND")
            for _cx, control, fragment in ul.iter_pdvs(body):
                if not control & ul.COMMAND:
                    matches += bool(control & ul.LAST_FRAGMENT)
                    continue
                command += bytes(fragment)
                if control & ul.LAST_FRAGMENT:
                    v = Values(read_elements(command, frozenset({_STATUS, _FIELD})), "rsp")
                    status, command = v.unsigned_short(_STATUS) or 0, b""
                    if status not in (0xFF00, 0xFF01):
                        return matches, status

    def close(self) -> None:
        try:
            self.sock.sendall(bytes([0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
            ul.read_pdu(self.sock, 1 << 16)
        except (OSError, ul.ProtocolError, ul.PeerClosed):
            pass
        self.sock.close()
