#!/usr/bin/env python3
"""Best-level order-flow imbalance, live, from an obrec tap.

Start a recorder that records best prices and serves them:

    obrec record --symbol BTCUSDT,ETHUSDT --streams depth,bookTicker --tap 127.0.0.1:9443

then, in another process:

    python3 examples/ofi.py ws://127.0.0.1:9443 btcusdt ethusdt

Once a second it prints, per symbol, the order-flow imbalance of that second (Cont, Kukanov and
Stoikov's best-level OFI: bid size arriving at or above the best bid, minus ask size arriving at
or below the best ask, summed over every bookTicker update), the number of updates and the mid.
Positive OFI is buying pressure.

The tap speaks Binance's protocol, so the same script runs against wss://fstream.binance.com/public
given a TLS socket. It uses the Python standard library only, with a minimal WebSocket client
(RFC 6455: handshake, masked client frames, fragments, pings), so it needs nothing installed.
"""

import base64
import hashlib
import json
import os
import socket
import struct
import sys
import time
from urllib.parse import urlparse

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
PRINT_EVERY = 1.0  # seconds


class WebSocket:
    """Just enough of a WebSocket client to read a market-data stream."""

    def __init__(self, url):
        parts = urlparse(url)
        if parts.scheme != "ws":
            raise SystemExit(f"{url}: only ws:// URLs (the tap listens on loopback, no TLS)")
        self.sock = socket.create_connection((parts.hostname, parts.port or 80))
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + ("?" + parts.query if parts.query else "")
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise SystemExit(f"upgrade refused: {lines[0]}")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
        if headers.get("sec-websocket-accept") != accept:
            raise SystemExit("upgrade failed: bad Sec-WebSocket-Accept")

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        self.buf += chunk

    def _frame(self):
        """One complete frame from the buffer, or None."""
        if len(self.buf) < 2:
            return None
        b0, b1 = self.buf[0], self.buf[1]
        length, at = b1 & 0x7F, 2
        if length == 126:
            if len(self.buf) < 4:
                return None
            length, at = struct.unpack(">H", self.buf[2:4])[0], 4
        elif length == 127:
            if len(self.buf) < 10:
                return None
            length, at = struct.unpack(">Q", self.buf[2:10])[0], 10
        mask = None
        if b1 & 0x80:  # servers do not mask, but a frame that is masked can still be read
            mask, at = self.buf[at : at + 4], at + 4
        if len(self.buf) < at + length:
            return None
        payload, self.buf = self.buf[at : at + length], self.buf[at + length :]
        if mask:
            payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def send(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def recv(self, timeout):
        """The next text message, or None when `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        message = b""
        while True:
            frame = self._frame()
            if frame is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.sock.settimeout(left)
                try:
                    self._fill()
                except socket.timeout:
                    return None
                continue
            fin, opcode, payload = frame
            if opcode == OP_PING:
                self.send(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                self.send(OP_CLOSE, payload[:2])
                raise ConnectionError("closed by the server")
            elif opcode in (OP_TEXT, OP_BINARY, OP_CONT):
                message += payload
                if fin:
                    return message.decode()


class Ofi:
    """Best-level order-flow imbalance of one symbol."""

    def __init__(self):
        self.last = None  # (bid, bid qty, ask, ask qty)
        self.ofi = 0.0
        self.updates = 0

    def update(self, bid, bid_qty, ask, ask_qty):
        if self.last is not None:
            pb, pqb, pa, pqa = self.last
            e = 0.0
            e += bid_qty if bid >= pb else 0.0
            e -= pqb if bid <= pb else 0.0
            e -= ask_qty if ask <= pa else 0.0
            e += pqa if ask >= pa else 0.0
            self.ofi += e
        self.last = (bid, bid_qty, ask, ask_qty)
        self.updates += 1

    def take(self):
        """This second's OFI and update count; starts the next second."""
        ofi, updates = self.ofi, self.updates
        self.ofi, self.updates = 0.0, 0
        return ofi, updates


def main():
    if len(sys.argv) < 3:
        raise SystemExit("usage: ofi.py ws://HOST:PORT SYMBOL...")
    base, symbols = sys.argv[1].rstrip("/"), [s.lower() for s in sys.argv[2:]]
    streams = "/".join(f"{s}@bookTicker" for s in symbols)
    ws = WebSocket(f"{base}/stream?streams={streams}")
    books = {s.upper(): Ofi() for s in symbols}
    next_print = time.monotonic() + PRINT_EVERY
    while True:
        text = ws.recv(max(0.0, next_print - time.monotonic()))
        if text is not None:
            frame = json.loads(text)
            data = frame.get("data", frame)
            book = books.get(data.get("s"))
            if book is not None and data.get("e") == "bookTicker":
                book.update(float(data["b"]), float(data["B"]), float(data["a"]), float(data["A"]))
        if time.monotonic() >= next_print:
            next_print += PRINT_EVERY
            stamp = time.strftime("%H:%M:%S")
            for symbol, book in books.items():
                ofi, updates = book.take()
                mid = (book.last[0] + book.last[2]) / 2 if book.last else float("nan")
                print(f"{stamp} {symbol} ofi={ofi:+.3f} updates={updates} mid={mid:.2f}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, ConnectionError) as e:
        if isinstance(e, ConnectionError):
            print(f"ofi: {e}", file=sys.stderr)
