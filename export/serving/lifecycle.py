"""uvicorn with a shutdown that no client sees as a broken connection.

On SIGTERM or SIGINT (legacy_eager.signals, the project's one signal mechanism):
1. draining, for --drain-seconds: the status endpoints answer 503 (a load balancer stops
   sending), predictions are still answered;
2. closing: every new request is answered 503 with `Connection: close`; on Linux the
   listening socket stops answering SYNs (a socket filter: a client that tries now retries
   after a second and is refused), the handshakes under way complete, the connections
   waiting in the listen queue are accepted one last time, then the port is closed (later
   connection attempts are refused, never reset); a connection that has not sent its
   request yet gets up to GRACE_SECONDS to send it (and read its 503); requests in flight finish;
   the gRPC server (if any) refuses new calls and finishes those in flight;
3. the batchers finish, and the process exits 0.
A second SIGINT ends the wait (uvicorn's force exit).
"""
import asyncio
import contextlib
import ctypes
import os
import socket
import struct
import sys
import time

import uvicorn

from legacy_eager.signals import signals_handled

GRACE_SECONDS = 2.0  # the most a connection is given to send its request (the wait ends when all have)
HANDSHAKE_SECONDS = 0.2  # after the SYN filter, for the handshakes under way to reach the queue


class DrainingServer(uvicorn.Server):
    def __init__(self, config, phase, drain_seconds=0.0, log=None):
        super().__init__(config)
        self.phase, self.drain_seconds = phase, drain_seconds
        self.log = log or (lambda line: None)
        self._drain_until = None

    @contextlib.contextmanager
    def capture_signals(self):
        # uvicorn's own re-raises the signal after shutdown; a drained server exits 0.
        with signals_handled(self.handle_exit):
            yield

    async def on_tick(self, counter):
        if not await super().on_tick(counter):
            return False
        if self.force_exit:
            return True
        if self._drain_until is None:
            self.phase.name = "draining"
            self._drain_until = time.monotonic() + self.drain_seconds
            self.log(f"shutting down: not ready for {self.drain_seconds:g} s, still answering")
        return time.monotonic() >= self._drain_until

    async def shutdown(self, sockets=None):
        self.phase.name = "closing"
        loop = asyncio.get_running_loop()
        # gRPC: new calls refused (UNAVAILABLE), those in flight finish, beside HTTP's close
        closers = [loop.create_task(close()) for close in self.phase.on_close]
        listeners = [sock for server in self.servers for sock in server.sockets or ()]
        filtered = [_drop_new_connections(sock) for sock in listeners]
        if any(filtered):
            await asyncio.sleep(HANDSHAKE_SECONDS)
        accepted = [conn for sock in listeners for conn in _accept_waiting(sock)]
        for server in self.servers:
            server.close()  # from here on a connection attempt is refused
        for conn in accepted:
            await loop.connect_accepted_socket(self._protocol, conn)
        deadline = loop.time() + GRACE_SECONDS
        while loop.time() < deadline and any(
                getattr(c, "cycle", True) is None for c in self.server_state.connections):
            await asyncio.sleep(0.01)
        await asyncio.gather(*closers)
        await super().shutdown(sockets)

    def _protocol(self):
        return self.config.http_protocol_class(config=self.config, server_state=self.server_state,
                                               app_state=self.lifespan.state)


# Classic BPF, run on each packet that reaches a TCP socket, from its TCP header:
# load the flags byte; if SYN is set, drop the packet, else keep it.
_DROP_SYN = [(0x30, 0, 0, 13),          # ldb [13]
             (0x45, 0, 1, 0x02),        # jset #SYN, next, keep
             (0x06, 0, 0, 0),           # ret #0 (drop)
             (0x06, 0, 0, 0xFFFFFFFF)]  # keep: ret #-1 (the whole packet)
_SO_ATTACH_FILTER = 26  # Linux's value; Python's socket module does not name it


def _drop_new_connections(listener):
    """Linux: attach a filter that drops every SYN reaching `listener`, so that no new
    connection joins its queue between the last accept and the close (closing resets the
    ones queued). False where that is not available: there the window stays open."""
    if not sys.platform.startswith("linux"):
        return False
    program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in _DROP_SYN))
    fprog = struct.pack("HL", len(_DROP_SYN), ctypes.addressof(program))  # struct sock_fprog
    try:
        listener.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    except OSError:
        return False
    return True


def _accept_waiting(listener):
    """Accept every connection waiting in `listener`'s queue, without blocking: closing a
    listening socket resets the ones still queued."""
    dup = socket.socket(fileno=os.dup(listener.fileno()))
    accepted = []
    try:
        dup.setblocking(False)
        while True:
            try:
                conn, _ = dup.accept()
            except (BlockingIOError, InterruptedError):
                break
            conn.setblocking(False)
            accepted.append(conn)
    finally:
        dup.close()
    return accepted
