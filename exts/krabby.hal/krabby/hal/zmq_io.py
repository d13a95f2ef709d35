"""Multipart send and receive for the HAL's hot loops, without pyzmq's per-frame enum work.

Measured on pyzmq 27 (one 3-frame message, inproc): ``send_multipart`` + ``recv_multipart`` cost ~9 us,
the loops below ~3.3 us. pyzmq's versions build a ``zmq.Flag`` for ``SNDMORE | flags`` on every frame
but the last, and ask ``getsockopt(RCVMORE)`` after every frame, which constructs a ``SocketOption``
enum each time; here the flags are plain ints and ``Frame.more`` says whether a frame follows. The
messages on the wire are the same.

``drain`` receives everything a socket that poll() just reported readable holds. Receiving until
``zmq.Again`` ended every drain in a raised exception (~4 us against ~2 us for a ``ZMQ_EVENTS`` query);
here the first receive trusts poll and each later one asks ``ZMQ_EVENTS``; ``zmq.Again`` still ends the
drain should either be stale.

``Doorbell`` wakes a thread blocked in ``zmq.Poller.poll`` from another thread (``close()``, a control
tick) at once, instead of at the poll's next timeout.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any, Iterator, Sequence

import zmq

_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
_POLLIN = int(zmq.POLLIN)

IDLE_POLL_MS = 250  # poll timeout of a thread that a Doorbell wakes: a safety net only, nothing waits on it


def send_frames(sock: zmq.Socket, frames: Sequence[Any], flags: int = 0, copy: bool = True) -> None:
    """``sock.send_multipart(frames, flags, copy=copy)``; raises what the first frame's send raises."""
    flags = int(flags)
    more = flags | _SNDMORE
    for frame in frames[:-1]:
        sock.send(frame, more, copy=copy)
    sock.send(frames[-1], flags, copy=copy)


def recv_frames(sock: zmq.Socket, flags: int = 0) -> list:
    """``sock.recv_multipart(flags, copy=False)``: the message's frames as ``zmq.Frame``."""
    flags = int(flags)
    frame = sock.recv(flags, copy=False)
    frames = [frame]
    while frame.more:
        frame = sock.recv(flags, copy=False)
        frames.append(frame)
    return frames


def drain(sock: zmq.Socket) -> Iterator[list]:
    """Yield each waiting multipart message (frames as ``zmq.Frame``) until none waits."""
    while True:
        try:
            yield recv_frames(sock, _NOBLOCK)
        except zmq.Again:
            return
        if not int(sock.get(zmq.EVENTS)) & _POLLIN:
            return


class Doorbell:
    """Wakes a polling thread from any thread: ``ring()`` sends an empty message on an inproc PUSH; the
    polling thread polls the PULL that ``receiver()`` made for it alongside its other sockets.

    ZeroMQ sockets are not thread-safe: the ringing side never touches the polling thread's sockets, and
    the PUSH is only used under a lock (a mutex is the full memory barrier libzmq asks for when a socket
    changes threads), so a control tick and ``close()`` may both ring. A ring that finds ``hwm`` rings
    still unread is dropped: the thread wakes for those anyway.
    """

    def __init__(self, context: zmq.Context, name: str, hwm: int = 1):
        self.context, self.hwm = context, hwm
        self.endpoint = f"inproc://krabby-{name}-doorbell-{uuid.uuid4().hex}"
        self._lock = threading.Lock()
        push = context.socket(zmq.PUSH)
        push.linger = 0
        push.sndhwm = hwm
        push.bind(self.endpoint)
        self._push: zmq.Socket | None = push

    def receiver(self) -> zmq.Socket:
        """A PULL for the polling thread, which owns (and closes) it. Connect it before anyone rings:
        a ring while no receiver is connected is lost."""
        pull = self.context.socket(zmq.PULL)
        pull.linger = 0
        pull.rcvhwm = self.hwm
        pull.connect(self.endpoint)
        return pull

    def ring(self) -> None:
        """Wake the polling thread (never blocks; a no-op after ``close()``)."""
        with self._lock:
            if self._push is None:
                return
            try:
                self._push.send(b"", _NOBLOCK)
            except zmq.Again:
                pass  # rings are pending: the thread wakes anyway

    def close(self) -> None:
        with self._lock:
            if self._push is not None:
                self._push.close(linger=0)
                self._push = None
