"""Load generators for the end-to-end section: wrk when installed, else a small asyncio client.

Both talk only to 127.0.0.1, keep connections alive, and are bounded: wrk by duration, the
Python client by request count and a deadline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass(frozen=True)
class Load:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(port: int, header: tuple[str, str], seconds: float, connections: int) -> Load:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-H",
        f"{header[0]}: {header[1]}",
        f"http://127.0.0.1:{port}/",
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return Load(rps, p50, p99, total)


async def _python_load(port: int, header: tuple[str, str], seconds: float, connections: int) -> Load:
    request = (f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{header[0]}: {header[1]}\r\n\r\n").encode("latin-1")
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    budget = 200_000  # bounded request count, whatever the speed

    async def worker() -> None:
        nonlocal budget
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while budget > 0 and time.perf_counter() < deadline:
                budget -= 1
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"unexpected response {head[:40]!r}")
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
                latencies.append((time.perf_counter() - started) * 1000)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Load(
        len(latencies) / elapsed,
        statistics.median(latencies),
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        len(latencies),
    )


def run_load(port: int, header: tuple[str, str], seconds: float, connections: int) -> Load:
    if wrk_path() is not None:
        return run_wrk(port, header, seconds, connections)
    # benchmarks.run calls this from inside its own event loop, where asyncio.run refuses to start a second one:
    # the built-in client gets a loop of its own in a worker thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _python_load(port, header, seconds, connections)).result()
