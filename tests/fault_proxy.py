"""A small HTTP proxy that injects faults between saturn and an S3 server (for tests).

Usage: ``python fault_proxy.py UPSTREAM_PORT`` prints ``PORT`` once it listens. Requests
are forwarded to ``127.0.0.1:UPSTREAM_PORT`` one at a time per client connection. The
fault mode is set by ``GET /__fault__?mode=M&rate=R`` (answered by the proxy itself):

- ``ok``: forward everything
- ``503``: answer a share ``R`` of requests with 503 SlowDown
- ``reset``: drop the connection (TCP reset) instead of answering, for a share ``R``
- ``down``: drop every request, like a server that is away

``GET /__fault__`` also returns the counts of forwarded and faulted requests as JSON.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import sys
from urllib.parse import parse_qs, urlsplit

state: dict[str, object] = {"mode": "ok", "rate": 1.0, "forwarded": 0, "faulted": 0}
SLOW_DOWN = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
    b"<Message>Please reduce your request rate.</Message></Error>"
)


async def read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[bytes, dict[str, str], bytes]:
    """One HTTP/1.1 request: head line, lower-cased headers, body (length or chunked)."""
    first, headers = await read_head(reader)
    if headers.pop("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            body += chunk[:-2]
            if size == 0:
                break
        headers.pop("transfer-encoding")
        headers["content-length"] = str(len(body))
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return first, headers, body


async def read_head(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str]]:
    """The first line and the lower-cased headers of an HTTP/1.1 message."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        if b":" in line:
            name, _, value = line.partition(b":")
            headers[name.decode().strip().lower()] = value.decode().strip()
    return lines[0], headers


def encode(first: bytes, headers: dict[str, str], body: bytes) -> bytes:
    lines = [first] + [f"{k}: {v}".encode() for k, v in headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: int) -> None:
    try:
        while True:
            first, headers, body = await read_request(reader, writer)
            target = first.split(b" ")[1].decode()
            if target.startswith("/__fault__"):
                query = parse_qs(urlsplit(target).query)
                if "mode" in query:
                    state["mode"] = query["mode"][0]
                    state["rate"] = float(query.get("rate", ["1"])[0])
                data = json.dumps(state).encode()
                writer.write(encode(b"HTTP/1.1 200 OK", {"content-length": str(len(data))}, data))
                await writer.drain()
                continue
            mode = state["mode"]
            if mode == "down" or (
                mode in ("503", "reset") and random.random() < float(state["rate"])  # type: ignore[arg-type]
            ):
                state["faulted"] = int(state["faulted"]) + 1  # type: ignore[call-overload]
                if mode == "503":
                    writer.write(
                        encode(
                            b"HTTP/1.1 503 Slow Down",
                            {
                                "content-type": "application/xml",
                                "content-length": str(len(SLOW_DOWN)),
                            },
                            SLOW_DOWN,
                        )
                    )
                    await writer.drain()
                    continue
                reset(writer)
                return
            state["forwarded"] = int(state["forwarded"]) + 1  # type: ignore[call-overload]
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
            headers["connection"] = "close"
            up_writer.write(encode(first, headers, body))
            await up_writer.drain()
            status, response_headers, response_body = await read_response(up_reader, first)
            up_writer.close()
            response_headers.pop("connection", None)
            if not first.startswith(b"HEAD "):
                response_headers["content-length"] = str(len(response_body))
            writer.write(encode(status, response_headers, response_body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        writer.close()


async def read_response(
    reader: asyncio.StreamReader, request_line: bytes
) -> tuple[bytes, dict[str, str], bytes]:
    first, headers = await read_head(reader)
    if request_line.startswith(b"HEAD "):
        return first, headers, b""
    if "content-length" in headers:
        return first, headers, await reader.readexactly(int(headers["content-length"]))
    headers.pop("transfer-encoding", None)
    return first, headers, await reader.read()


async def main(upstream: int) -> None:
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, upstream), "127.0.0.1", 0, limit=2**26
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
