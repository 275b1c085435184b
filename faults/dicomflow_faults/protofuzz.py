"""Protocol fuzz phase: mutated DICOM Upper Layer PDU sequences against a running ``dicomflow scp``.

Each sequence opens a connection, sends its bytes, hangs up its sending
side and reads whatever comes back until the receiver closes. Families
(chosen at random with a seed):

- ``rq-flip`` / ``rq-delete`` / ``rq-insert`` / ``rq-length``: a valid
  A-ASSOCIATE-RQ with bytes changed, cut out, added, or a PDU / item
  length set to 0, 1, off by one, the largest value or past the limit;
- ``rq-non-ascii``: a proposed transfer syntax with bytes >= 0x80 (it once
  raised UnicodeEncodeError while the answer was encoded);
- ``pdata-command`` / ``pdata-dataset``: a valid association, then a
  C-STORE whose command or data set fragments are damaged (garbage, cut,
  wrong context, wrong control bits, PDV lengths 0, 1, max, past max);
- ``wrong-state``: A-RELEASE-RQ before any association or inside a
  message, a second A-ASSOCIATE-RQ, PDUs only a requestor receives;
- ``random-pdu``: any PDU type byte with random contents.

The verdicts: no traceback and no "unexpected" line in the receiver's log,
no receiver crash, its RSS flat from after warm-up to the end, and a
valid association still storing an instance afterwards.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dicomflow_faults.checks import Check
from dicomflow_faults.privstack import PrivateStack
from dicomflow_faults.supervisor import Component, component_env, port_open

CT = b"1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = b"1.2.840.10008.1.2.1"
APP_CONTEXT = b"1.2.840.10008.3.1.1.1"
STUDY = "1.2.826.0.1.3680043.8.498.4242"
#: Largest PDU the receiver reads (what it announces, 1 MiB, plus its slack).
READ_LIMIT = 1024 * 1024 + 16 * 1024
#: The largest PDU length field (32 bits): a length, not DICOM's undefined-length marker.
MAX_U32 = (1 << 32) - 1


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BxH", kind, len(value)) + value


def _pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BxI", kind, len(body)) + body


def associate_rq(syntaxes: tuple[bytes, ...] = (EXPLICIT,), calling: bytes = b"FUZZER") -> bytes:
    """A valid A-ASSOCIATE-RQ proposing CT Image Storage."""
    context = bytes((1, 0, 0, 0)) + _item(0x30, CT) + b"".join(_item(0x40, s) for s in syntaxes)
    user = _item(0x51, struct.pack(">I", 16384)) + _item(0x52, b"1.2.826.0.1.3680043.8.498.1")
    fixed = struct.pack(">H", 1) + b"\x00\x00" + b"DICOMFLOW".ljust(16) + calling.ljust(16) + b"\x00" * 32
    return _pdu(0x01, fixed + _item(0x10, APP_CONTEXT) + _item(0x20, context) + _item(0x50, user))


def _element(tag: int, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00"
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def store_command(sop_uid: bytes, message_id: int = 1) -> bytes:
    body = b"".join([
        _element(0x00000002, CT), _element(0x00000100, struct.pack("<H", 1)),
        _element(0x00000110, struct.pack("<H", message_id)), _element(0x00000700, struct.pack("<H", 0)),
        _element(0x00000800, struct.pack("<H", 0)), _element(0x00001000, sop_uid),
    ])
    return _element(0x00000000, struct.pack("<I", len(body))) + body


def _explicit(tag: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr == b"UI" else b" "
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def dataset(sop_uid: bytes) -> bytes:
    """A small CT data set, Explicit VR Little Endian."""
    return b"".join([
        _explicit(0x00080016, b"UI", CT), _explicit(0x00080018, b"UI", sop_uid),
        _explicit(0x00080020, b"DA", b"20240301"), _explicit(0x00100020, b"LO", b"FUZZ-1"),
        _explicit(0x0020000D, b"UI", STUDY.encode()), _explicit(0x0020000E, b"UI", STUDY.encode() + b".1"),
    ])


def pdata(context: int, control: int, data: bytes) -> bytes:
    return _pdu(0x04, struct.pack(">IBB", len(data) + 2, context, control) + data)


# --------------------------------------------------------------------------- mutations


def _flip(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def _delete(rng: random.Random, data: bytes) -> bytes:
    start = rng.randrange(len(data))
    return data[:start] + data[start + rng.randint(1, 32):]


def _insert(rng: random.Random, data: bytes) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.randbytes(rng.randint(1, 32)) + data[at:]


def _lengths(rng: random.Random) -> list[int]:
    return [0, 1, 2, 5, 0xFFFF, MAX_U32, READ_LIMIT, READ_LIMIT + 1, rng.randrange(1 << 32)]


def _set_length(rng: random.Random, data: bytes) -> bytes:
    """A PDU length (or an item length inside) set to 0, 1, off by one, max or past max."""
    out = bytearray(data)
    if rng.random() < 0.5 or len(out) < 80:
        value = rng.choice([*_lengths(rng), len(data) - 7, len(data) - 5])
        out[2:6] = struct.pack(">I", value & MAX_U32)
    else:
        at = rng.randrange(74, len(out) - 4)  # somewhere in the items
        out[at:at + 2] = struct.pack(">H", rng.choice([0, 1, 0xFFFF, rng.randrange(1 << 16)]))
    return bytes(out)


def _sop(rng: random.Random) -> bytes:
    return f"{STUDY}.1.{rng.randrange(1 << 40)}".encode()


def _damage(rng: random.Random, data: bytes) -> bytes:
    return rng.choice([_flip, _delete, _insert])(rng, data) if data else rng.randbytes(8)


def _pdv_variants(rng: random.Random, fragment: bytes, command: bool) -> bytes:
    """One damaged P-DATA-TF carrying ``fragment``."""
    control = (1 if command else 0) | 2
    choice = rng.randrange(6)
    if choice == 0:
        return pdata(1, control, _damage(rng, fragment))
    if choice == 1:  # wrong presentation context
        return pdata(rng.choice([0, 3, 255]), control, fragment)
    if choice == 2:  # wrong control bits
        return pdata(1, rng.randrange(256), fragment)
    if choice == 3:  # PDV length that lies
        body = struct.pack(">IBB", rng.choice(_lengths(rng)), 1, control) + fragment
        return _pdu(0x04, body)
    if choice == 4:  # never the last fragment, then release
        return pdata(1, control & 1, fragment) + _pdu(0x05, b"\x00" * 4)
    return _pdu(0x04, rng.randbytes(rng.randint(0, 64)))


def sequence(rng: random.Random, family: str) -> bytes:
    """The bytes one fuzz connection sends."""
    rq = associate_rq()
    sop = _sop(rng)
    if family == "rq-flip":
        return _flip(rng, rq)
    if family == "rq-delete":
        return _delete(rng, rq)
    if family == "rq-insert":
        return _insert(rng, rq)
    if family == "rq-length":
        return _set_length(rng, rq)
    if family == "rq-non-ascii":
        bad = b"1.2.840.10008.1.2." + bytes(rng.randrange(128, 256) for _ in range(rng.randint(1, 6)))
        return associate_rq((bad, EXPLICIT) if rng.random() < 0.5 else (bad,))
    if family == "pdata-command":
        return rq + _pdv_variants(rng, store_command(sop), True)
    if family == "pdata-dataset":
        return rq + pdata(1, 3, store_command(sop)) + _pdv_variants(rng, dataset(sop), False)
    if family == "wrong-state":
        release = _pdu(0x05, b"\x00" * 4)
        return rng.choice([
            release, _pdu(0x06, b"\x00" * 4), _pdu(0x02, rq[6:]), _pdu(0x03, b"\x00\x01\x01\x01"),
            rq + rq, rq + pdata(1, 1, store_command(sop)[:20]) + release,
            rq + pdata(1, 3, store_command(sop)) + release, rq + release + release,
            pdata(1, 3, store_command(sop)),
        ])
    return _pdu(rng.randrange(256), rng.randbytes(rng.randint(0, 256)))


FAMILIES = ("rq-flip", "rq-delete", "rq-insert", "rq-length", "rq-non-ascii", "pdata-command", "pdata-dataset",
            "wrong-state", "random-pdu")


def exchange(port: int, payload: bytes, timeout_s: float = 10.0) -> str:
    """Send ``payload``, hang up our side, read until the receiver closes; the first PDU type answered."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                conn.sendall(payload)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the receiver may close before taking it all
            first = b""
            try:
                while chunk := conn.recv(65536):
                    first = first or chunk[:1]
            except ConnectionResetError:
                pass
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return f"error:{type(exc).__name__}"
    return {b"\x02": "AC", b"\x03": "RJ", b"\x04": "P-DATA", b"\x06": "RELEASE-RP", b"\x07": "ABORT",
            b"": "closed"}.get(first, f"0x{first.hex()}")


# --------------------------------------------------------------------------- the phase


@dataclass
class ProtocolFuzzResult:
    """What the protocol fuzz phase measured."""

    sequences: int
    families: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    unexpected: int = 0
    unexpected_lines: list[str] = field(default_factory=list)
    crashes: int = 0
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    bound_mib: float = 30.0
    control_status: int | None = None
    control_stored: bool = False
    seconds: float = 0.0
    lost: int = 0
    duplicates: int = 0

    @property
    def growth_mib(self) -> float:
        return (self.rss_after_kib - self.rss_before_kib) / 1024

    @property
    def checks(self) -> list[Check]:
        hung = self.answers.get("timeout", 0)
        return [
            Check("protocol fuzz: no unexpected exception", self.unexpected == 0,
                  f"{self.unexpected} traceback / unexpected line(s) in the receiver log"
                  + (f": {self.unexpected_lines[0]}" if self.unexpected_lines else "")),
            Check("protocol fuzz: receiver never crashed", self.crashes == 0, f"{self.crashes} crash(es)"),
            Check("protocol fuzz: every sequence answered or closed", hung == 0, f"{hung} left hanging"),
            Check("protocol fuzz: receiver RSS flat", self.growth_mib <= self.bound_mib,
                  f"{self.rss_before_kib / 1024:.1f} -> {self.rss_after_kib / 1024:.1f} MiB "
                  f"(bound {self.bound_mib:.0f} MiB)"),
            Check("protocol fuzz: a valid association stores afterwards", self.control_stored,
                  f"status {self.control_status}"),
        ]


def _count_unexpected(log_path: Path) -> list[str]:
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    markers = ("Traceback", "unexpectedly", "unexpected error")
    return [line for line in text.splitlines() if any(m in line for m in markers)]


def _control(port: int, rng: random.Random) -> int | None:
    """One valid C-STORE over a fresh association; its status (None when no answer came)."""
    sop = _sop(rng)
    payload = associate_rq() + pdata(1, 3, store_command(sop)) + pdata(1, 2, dataset(sop))
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(payload)
        data = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
            marker = data.find(struct.pack("<HHI", 0, 0x0900, 2))
            if marker >= 0 and len(data) >= marker + 10:
                conn.sendall(_pdu(0x05, b"\x00" * 4))
                return int(struct.unpack_from("<H", data, marker + 8)[0])
    return None


def run_protocol_fuzz(stack: PrivateStack, sequences: int, *, seed: int, log_dir: Path, warmup: int = 200,
                      bound_mib: float = 30.0, clients: int = 8,
                      progress: Callable[[int], None] | None = None) -> ProtocolFuzzResult:
    """Start a receiver of its own on the private stack and fuzz it with ``sequences`` connections."""
    rng = random.Random(seed)
    phase = stack.new_phase("protocol")
    env = component_env({**phase.env(), "DICOMFLOW_RECEIVER_IDLE_TIMEOUT_S": "3",
                         "DICOMFLOW_RECEIVER_ARTIM_TIMEOUT_S": "3", "DICOMFLOW_RECEIVER_MAX_ASSOCIATIONS": "64"})
    receiver = Component("receiver-protocol", ["scp"], env, log_dir, cwd=log_dir)
    port = phase.settings.receiver.port
    result = ProtocolFuzzResult(sequences, bound_mib=bound_mib)
    t0 = time.monotonic()
    receiver.start()
    try:
        deadline = time.monotonic() + 60
        while not port_open(port):
            if not receiver.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the receiver did not start: {receiver.log_tail()}")
            time.sleep(0.2)
        plan = [(rng.choice(FAMILIES), rng.randrange(1 << 30)) for _ in range(sequences)]

        def one(item: tuple[str, int]) -> tuple[str, str]:
            family, s = item
            return family, exchange(port, sequence(random.Random(s), family))

        with ThreadPoolExecutor(max_workers=clients) as pool:
            for i, (family, answer) in enumerate(pool.map(one, plan)):
                result.families[family] += 1
                result.answers[answer] += 1
                if i + 1 == min(warmup, sequences):
                    rss = receiver.rss_kib()
                    result.rss_before_kib = rss[0] if rss else 0
                if progress is not None and (i + 1) % 250 == 0:
                    progress(i + 1)
        time.sleep(0.5)
        rss = receiver.rss_kib()
        result.rss_after_kib = rss[0] if rss else 0
        result.control_status = _control(port, rng)
        stored = list(phase.settings.storage.root.rglob("*.dcm"))
        result.control_stored = result.control_status == 0 and len(stored) >= 1
        if not receiver.alive():
            result.crashes += 1
    finally:
        receiver.terminate()
        result.seconds = time.monotonic() - t0
    lines = _count_unexpected(receiver.log_path)
    result.unexpected, result.unexpected_lines = len(lines), lines[:5]
    return result


__all__ = ["FAMILIES", "ProtocolFuzzResult", "associate_rq", "exchange", "run_protocol_fuzz", "sequence"]
