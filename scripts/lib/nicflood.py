"""The NIC receive flood of the kdump test: Ethernet frames for QEMU's `-netdev dgram` backend.

QEMU's dgram netdev takes every UDP datagram arriving on its local address as one Ethernet frame for
the guest's NIC. The sender here runs in the harness: it binds 127.0.0.1 on a free port (QEMU's
"remote") and sends to QEMU's local port on 127.0.0.1, never to any other address, at a bounded rate,
a bounded number of frames, for a bounded time.

Every frame is a broadcast Ethernet frame (ethertype 0x88b5, local experimental) whose payload starts
`PCNIC-PRE <token> seq=<N>` until `switch()` is called (the harness calls it when Portcullis logs
`fence raised`, or natively at the panic line), `PCNIC-POST <token> seq=<N>` after it. The capture
kernel counts both in /proc/vmcore: pre frames are the positive control (the scan must find some),
post frames are DMA after the fence (must be none under Portcullis).
"""
import os
import socket
import threading
import time

LOOPBACK = "127.0.0.1"
ETHERTYPE = 0x88B5
FRAME_BYTES = 1024  # above e1000e's copybreak (256): the receive buffer itself goes up the stack
PRE, POST = "PCNIC-PRE", "PCNIC-POST"


def free_udp_port():
    """A UDP port on 127.0.0.1 that nobody holds right now (for QEMU's local end)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def frame(marker, token, seq):
    dst = b"\xff" * 6
    src = bytes.fromhex("020000504e43")  # locally administered
    text = b"%s %s seq=%08d\n" % (marker.encode(), token.encode(), seq)
    body = text + b"\0" * (FRAME_BYTES - 14 - len(text))
    return dst + src + ETHERTYPE.to_bytes(2, "big") + body


class Flood:
    """Frames to QEMU's dgram netdev on 127.0.0.1, in a thread: `start()` once the guest's link is up,
    `switch()` at the fence (or crash), `stop()` at the end (also stops by itself after `max_frames`,
    `max_s` seconds, or `post_s` seconds after the switch)."""

    def __init__(self, token=None, rate=200, max_frames=40000, max_s=240, post_s=8.0):
        self.token = token or os.urandom(6).hex()
        self.rate, self.max_frames, self.max_s, self.post_s = rate, max_frames, max_s, post_s
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.setblocking(False)
        self.local_port = free_udp_port()  # QEMU's
        self.remote_port = self.sock.getsockname()[1]  # ours
        self.sent = {PRE: 0, POST: 0}
        self.switched_at = None
        self.started_at = None
        self._stop = threading.Event()
        self._thread = None

    def netdev(self, ident="n0"):
        """The QEMU -netdev argument for this flood."""
        return (f"dgram,id={ident},local.type=inet,local.host={LOOPBACK},local.port={self.local_port},"
                f"remote.type=inet,remote.host={LOOPBACK},remote.port={self.remote_port}")

    def start(self):
        if self._thread is None:
            self.started_at = time.monotonic()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def switch(self):
        if self.switched_at is None:
            self.switched_at = time.monotonic()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sock.close()

    def _run(self):
        period = 1.0 / self.rate
        seq = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if seq >= self.max_frames or now - self.started_at > self.max_s:
                break
            if self.switched_at is not None and now - self.switched_at > self.post_s:
                break
            marker = POST if self.switched_at is not None else PRE
            try:
                self.sock.sendto(frame(marker, self.token, seq), (LOOPBACK, self.local_port))
                self.sent[marker] += 1
            except OSError:
                pass  # QEMU not listening (yet, or any more): the frame is lost, as on a wire
            try:
                while True:
                    self.sock.recv(2048)  # whatever the guest sends: drained and ignored
            except OSError:
                pass
            seq += 1
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = time.monotonic()

    def summary(self):
        return f"sent {self.sent[PRE]} pre-fence and {self.sent[POST]} post-fence frames (token {self.token})"
