"""A few Redis calls for the benchmark (standard library only): PING and INFO commandstats
over one short-lived loopback connection, to check the bench's redis-server is up and to
count the commands Causeway sent to it (a cross-check of the store histogram's _count)."""

from __future__ import annotations

import socket


def _command(host: str, port: int, *args: str, timeout: float = 2.0) -> bytes:
    request = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.startswith((b"+", b"-", b":")) and data.endswith(b"\r\n"):
                break
            if data.startswith(b"$"):
                header, _, rest = data.partition(b"\r\n")
                length = int(header[1:])
                if length < 0 or len(rest) >= length + 2:
                    break
    if data.startswith(b"-"):
        raise OSError(f"redis error: {data.decode(errors='replace').strip()}")
    return data


def ping(host: str, port: int) -> bool:
    try:
        return _command(host, port, "PING", timeout=1.0).startswith(b"+PONG")
    except OSError:
        return False


def commandstats(host: str, port: int) -> dict[str, int]:
    """{command: calls} from INFO commandstats (e.g. {"get": 10, "evalsha": 5})."""
    data = _command(host, port, "INFO", "commandstats")
    calls = {}
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("cmdstat_"):
            name, _, fields = line[len("cmdstat_"):].partition(":")
            for item in fields.split(","):
                key, _, value = item.partition("=")
                if key == "calls":
                    calls[name] = int(value)
    return calls


def diff(before: dict[str, int] | None, after: dict[str, int] | None) -> dict[str, int] | None:
    """Commands called between two commandstats, without the ones the benchmark itself sent."""
    if before is None or after is None:
        return None
    out = {k: v - before.get(k, 0) for k, v in after.items() if k not in ("info", "ping")}
    return {k: v for k, v in out.items() if v}
