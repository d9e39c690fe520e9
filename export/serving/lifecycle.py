"""uvicorn with a shutdown that no client sees as a broken connection.

On SIGTERM or SIGINT (legacy_eager.signals, the project's one signal mechanism):
1. draining, for --drain-seconds: the status endpoints answer 503 (a load balancer stops
   sending), predictions are still answered;
2. closing: every new request is answered 503 with `Connection: close`; the connections
   already waiting in the listen queue are accepted one last time, then the port is closed
   (later connection attempts are refused, never reset); a connection that has not sent its
   request yet gets up to GRACE_SECONDS to send it (and read its 503); requests in flight finish;
   the gRPC server (if any) refuses new calls and finishes those in flight;
3. the batchers finish, and the process exits 0.
A second SIGINT ends the wait (uvicorn's force exit).
"""
import asyncio
import contextlib
import os
import socket
import time

import uvicorn

from legacy_eager.signals import signals_handled

GRACE_SECONDS = 2.0  # the most a connection is given to send its request (the wait ends when all have)


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
        accepted = []
        for server in self.servers:
            for listener in server.sockets or ():
                accepted += _accept_waiting(listener)
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
