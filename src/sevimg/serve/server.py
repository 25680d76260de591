"""Starting and stopping the server of `sevimg serve`: the bind address, the thread, the handle.

The requests themselves are answered by :class:`sevimg.serve.http.Handler`.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sevimg.problems import SevimgError
from sevimg.serve import jobs as jobsm
from sevimg.serve.files import Served
from sevimg.serve.gate import REQUEST_DEADLINE, Deadlines, Gate
from sevimg.serve.http import Handler
from sevimg.serve.jobs import Board, Job
from sevimg.serve.listener import Config, Event, Log, Server, Server6, one_line
from sevimg.serve.results import SUMMARY, Results

if TYPE_CHECKING:  # httpx is loaded only with --github-issues
    from sevimg.serve.issues import Issues
    from sevimg.serve.kds import KdsCache


@dataclass
class Handle:
    """A running server."""

    url: str
    host: str
    port: int
    config: Config
    _server: Server
    _thread: threading.Thread

    @property
    def board(self) -> Board:
        """The jobs."""
        return self.config.board

    @property
    def events(self) -> list[Event]:
        """Every request answered so far (a copy)."""
        with self.config.lock:
            return list(self.config.events)

    def quiet(self) -> bool:
        """No request is being handled."""
        with self.config.lock:
            return self.config.in_flight == 0

    def stop(self) -> None:
        """Stop accepting requests and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        if self.config.deadlines is not None:
            self.config.deadlines.stop()


def parse_bind(text: str) -> tuple[str, int]:
    """`ADDR:PORT`, `[V6]:PORT` or `:PORT` (127.0.0.1) → (address, port); SevimgError otherwise."""
    # ASCII digits only (\d takes other scripts' digits) and nothing around the value.
    match = re.fullmatch(r"(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]*)):([0-9]{1,5})", text)
    if match is None or int(match[3]) > 65535:
        raise SevimgError(
            f"--bind {text!r}: expected ADDR:PORT, e.g. 127.0.0.1:8080, 0.0.0.0:8080 or [::]:8080"
        )
    host = match[1] or match[2] or "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise SevimgError(f"--bind {text!r}: {host!r} is not an IP address") from None
    return host, int(match[3])


def serve(
    served: Served,
    *,
    bind: tuple[str, int] = ("127.0.0.1", 0),
    path: str = "/dispatch",
    poweroff: Path | None = None,
    results: Results | None = None,
    filer: Issues | None = None,
    clock: jobsm.Clock | None = None,
    log: Log | None = None,
    kds: KdsCache | None = None,
    gate: Gate | None = None,
    deadline: float = REQUEST_DEADLINE,
    status_page: bool = True,
) -> Handle:
    """Start serving the jobs of `served` (:func:`sevimg.serve.files.load_jobs`) on `bind`.

    Port 0 picks a free port. Returns a :class:`Handle` with `.url` and
    `.stop()`. With `results`, reports are saved there and results.json is
    rewritten on every state change. With `kds`, the KDS paths (/kds/…) are
    answered from that cache. `gate` bounds connections (default
    :class:`sevimg.serve.gate.Gate`), `deadline` each request.
    With `status_page`, GET / (and the paths of :mod:`sevimg.serve.status`)
    answer the status page. SevimgError when the address cannot be bound
    (in use, not this machine's, no permission).
    """
    import time  # noqa: PLC0415 - the default clock only

    if not path.startswith("/"):
        raise SevimgError(f"--path {path!r}: must start with /, e.g. /dispatch")
    board = Board(served.jobs, clock or time.time)
    shown_log = log or (lambda _: None)

    def say(text: str) -> None:
        shown_log(one_line(text))  # peers' text (methods, paths, errors) is data, never escapes

    config = Config(path, board, served.identities, poweroff, results, filer, say, kds=kds)
    config.gate = gate or Gate()
    config.deadline = deadline
    if status_page:
        from sevimg.serve.status import StatusSite  # noqa: PLC0415

        config.status = StatusSite(board.snapshot, results, board.clock, dispatch_path=path)
    if results is not None:

        def summary(_: tuple[Job, ...]) -> None:
            try:
                results.write_summary(board.snapshot)
            except OSError as exc:
                say(f"cannot write {results.folder / SUMMARY}: {exc.strerror or exc}")

        board.listeners.append(summary)
        summary(board.jobs)
    host, port = bind
    cls = Server6 if ":" in host else Server
    try:
        server = cls((host, port), Handler, bind_and_activate=False)
    except OSError as exc:
        raise SevimgError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    server.config = config
    try:
        server.server_bind()
        server.server_activate()
    except OSError as exc:
        server.server_close()
        why = exc.strerror or str(exc)
        hint = (
            "another server (dispatch, or a second sevimg serve?) listens there; pick another with --bind"
            if exc.errno == errno.EADDRINUSE
            else "ports below 1024 need privileges; addresses must be this machine's"
        )
        raise SevimgError(f"cannot listen on {host}:{port}: {why}", hint=hint) from None
    actual_port = int(server.server_address[1])
    shown = f"[{host}]" if ":" in host else host
    config.deadlines = Deadlines()
    thread = threading.Thread(
        target=server.serve_forever, args=(0.1,), name="sevimg-serve", daemon=True
    )
    thread.start()
    return Handle(f"http://{shown}:{actual_port}{path}", host, actual_port, config, server, thread)
