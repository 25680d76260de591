"""`sevimg serve` under 200 concurrent hostile connections on loopback: its peak memory.

A real `python -m sevimg serve` process; 200 clients, each from its own
loopback address (127.0.0.2 …), so only the total bound holds them back:
half-open connections, request lines and headers that never end, PUTs that
announce 16 MiB, keep-alive clients asking HEAD after HEAD, and one host
with a real job that PUTs a report of the largest size serve takes. A fixed
number of rounds, each connection doing a bounded amount, then every
socket is closed and serve is stopped: it ends by itself.

Numbers: serve's RSS before the load, its peak RSS (the kernel's VmHWM),
the most threads it had (sampled with every hostile connection open), and
the status of the real host's report (200: taken despite the load).
`python -m tests.bench_serve` runs it alone; `nox -s bench` prints it too.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from tests.artifactkit import make_folder

CLIENTS = 200
ROUNDS = 3
HEADS_PER_CLIENT = 20
REPORT_BYTES = 500 * 1024


def _status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _kb(value: str) -> int:
    return int(value.split(maxsplit=1)[0])


class Serve:
    """The server process, its output read by a thread; `url` once it listens."""

    def __init__(self, work: Path) -> None:
        folder = make_folder(work / "out", ("debian-13",))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sevimg", "serve", "--from", str(folder),
             "--bind", "127.0.0.1:0", "--results", str(work / "results"),
             "--kds-offline", "--kds-cache", str(work / "kds")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=work,
        )  # fmt: skip
        self.listening = threading.Event()
        self.url = ""
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        if not self.listening.wait(120) or not self.url:
            self.proc.kill()
            sys.exit("bench: serve did not start:\n" + "".join(self.lines))
        port = re.search(r":(\d+)/", self.url)
        assert port is not None
        self.port = int(port[1])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            found = re.search(r"listening on (http://\S+)", line)
            if found:
                self.url = found[1]
                self.listening.set()
        self.listening.set()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(60)


def _connect(port: int, n: int) -> socket.socket | None:
    source = f"127.0.{n // 250}.{n % 250 + 2}"
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    except OSError:
        return None


def _hostile(port: int, n: int, held: list[socket.socket]) -> None:
    """One client's bounded misbehaviour; sockets it leaves open go to `held`."""
    sock = _connect(port, n)
    if sock is None:
        return
    kind = n % 4
    try:
        if kind == 0:  # half-open: connects, says nothing
            held.append(sock)
            return
        if kind == 1:  # a request that never ends
            sock.sendall(b"GET /dispatch HTTP/1.1\r\nHost: x\r\nX-Drip: ")
            held.append(sock)
            return
        if kind == 2:  # a PUT announcing 16 MiB, from a client with no job
            sock.sendall(
                b"PUT /dispatch HTTP/1.1\r\nHost: x\r\nContent-Length: 16777216\r\n\r\n"
                + b"x" * 65536
            )
            sock.recv(4096)
            sock.close()
            return
        for _ in range(HEADS_PER_CLIENT):  # keep-alive HEADs (all jobs taken: 404)
            sock.sendall(b"HEAD /dispatch HTTP/1.1\r\nHost: x\r\n\r\n")
            if not sock.recv(4096):
                break
        sock.close()
    except OSError:
        sock.close()


def _once(port: int, request: bytes) -> bytes:
    """One request from the real host (127.0.1.250), its whole answer."""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=60, source_address=("127.0.1.250", 0)
    ) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(1 << 20):
            answer += chunk
        return answer


def _report(port: int) -> int:
    """The real host's PUT of a report of the largest size serve takes; its status.

    Tried again while serve answers 503 (its gate full of hostile clients), as
    the host's reporter does, a bounded number of times.
    """
    text = "\u00e9" * (REPORT_BYTES // 2)  # two bytes each in UTF-8
    body = json.dumps({"title": "bench", "body": text}, ensure_ascii=False).encode()
    request = (
        b"PUT /dispatch HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    status = 0
    for _ in range(100):
        answer = _once(port, request)
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
        if status != 503:
            break
    return status


def serve_numbers() -> dict[str, float | str]:
    """Serve's memory and threads under :data:`CLIENTS` hostile connections, :data:`ROUNDS` times."""
    with tempfile.TemporaryDirectory(prefix="sevimg-bench-serve-") as tmp:
        server = Serve(Path(tmp))
        pid = server.proc.pid
        before = _kb(_status(pid)["VmRSS"])
        threads_peak = 0
        report_status = 0
        statuses: list[int] = []
        reporter = threading.Thread(target=lambda: statuses.append(_report(server.port)))
        try:
            # The real host takes the one job first and boots; it reports during the load.
            _once(server.port, b"GET /dispatch HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            _once(server.port, b"POST /dispatch HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            for round_ in range(ROUNDS):
                held: list[socket.socket] = []
                clients = [
                    threading.Thread(target=_hostile, args=(server.port, n, held))
                    for n in range(CLIENTS)
                ]
                for client in clients:
                    client.start()
                for client in clients:
                    client.join(120)
                threads_peak = max(threads_peak, int(_status(pid)["Threads"]))
                if round_ == 1:
                    reporter.start()
                for sock in held:
                    sock.close()
                if round_ == 1:
                    reporter.join(120)
                    report_status = statuses[0] if statuses else 0
            peak = _kb(_status(pid)["VmHWM"])
        finally:
            code = server.stop()
    return {
        "serve_hostile_connections": CLIENTS,
        "serve_hostile_rounds": ROUNDS,
        "serve_rss_before_mb": round(before / 1024, 1),
        "serve_peak_rss_mb": round(peak / 1024, 1),
        "serve_threads_peak": threads_peak,
        "serve_max_report_put_status": report_status,
        "serve_exit_code": code,
    }


def main() -> None:
    """Print the numbers."""
    numbers = serve_numbers()
    width = max(map(len, numbers))
    for key, value in numbers.items():
        print(f"{key:<{width}}  {value}", flush=True)


if __name__ == "__main__":
    main()
