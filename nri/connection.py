"""A multiplexed ttrpc connection: a client on one logical connection, a server on the other.

peapod's side of a plugin connection calls on ``mux.PLUGIN_CONN`` and serves on
``mux.RUNTIME_CONN``. Each call served runs on its own short-lived thread, so a slow
handler never stalls the reading of responses.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from nri.mux import Mux
from nri.ttrpc import Client, Handler, Server


def _thread(work: Callable[[], None]) -> None:
    threading.Thread(target=work, name="nri-call", daemon=True).start()


class Connection:
    """``client`` calls the peer; the peer's calls go to ``handlers``."""

    def __init__(
        self,
        sock: socket.socket,
        client_conn: int,
        server_conn: int,
        handlers: dict[tuple[str, str], Handler],
        on_close: Callable[[str], None],
        thread_name: str = "nri-mux",
    ) -> None:
        self._on_close = on_close
        self.busy_at_close = False  # a call was waiting for its answer when it ended
        self.client = Client(lambda data: self.mux.send(client_conn, data))
        self.server = Server(lambda data: self.mux.send(server_conn, data), handlers, _thread)
        self.mux = Mux(sock, {client_conn: self.client.receive, server_conn: self.server.receive},
                       self._closed, thread_name)

    def start(self) -> None:
        self.mux.start()

    def close(self, reason: str) -> None:
        self.mux.close(reason)

    @property
    def closed(self) -> bool:
        return self.mux.closed

    @property
    def reason(self) -> str:
        return self.mux.reason

    def _closed(self, reason: str) -> None:
        self.busy_at_close = self.client.busy
        self.client.close(reason)
        self._on_close(reason)
