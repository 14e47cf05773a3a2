"""The DNS server: UDP and TCP on asyncio, answers from a `ClusterZone`, dnspython on the wire.

A reply is rendered by dnspython once per (question, flags that shape it, zone version) and
kept. A later plain query (one question, no EDNS: what stub resolvers in pods send) is read
with dnspython's wire parser only as far as its question, and gets the kept rendering with its
own message ID and its own spelling of the name (same length, the case may differ) copied in:
a name parse and a dictionary lookup instead of a message parse and a render (~4x the
queries per second, bench/dns.py). Everything else takes the full dnspython path.

UDP replies larger than the client's limit (512 bytes, or its EDNS payload size) are truncated
with TC set, and the client asks again over TCP.

Questions outside the cluster's zones go to `upstream` when one is configured; by default
there is none and they are refused: pods never reach resolvers outside the cluster unless the
operator says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.wire

from dockyard.network.dns.records import ClusterZone, key_of

log = logging.getLogger("dockyard.dns")

UDP_DEFAULT_LIMIT = 512  # RFC 1035, without EDNS
OUR_PAYLOAD = 1232  # the EDNS payload size DNS Flag Day 2020 recommends
MAX_RENDERED = 20_000
TCP_IDLE_SECONDS = 10.0
UPSTREAM_TIMEOUT = 2.0

Key = tuple[object, ...]
_SHAPING_FLAGS = dns.flags.RD | dns.flags.CD  # copied into replies: part of the cache key
# QR (a response), any opcode but QUERY (bits 11-14), TC: such messages take the full path.
_NOT_PLAIN = dns.flags.QR | 0x7800 | dns.flags.TC
_NO_RECORDS = bytes(6)  # answer, authority and additional counts all zero


class DnsServer:
    """Answers DNS messages from `zone`; `start()` binds UDP and TCP on one address and port."""

    def __init__(self, zone: ClusterZone, upstream: tuple[str, int] | None = None,
                 upstream_timeout: float = UPSTREAM_TIMEOUT) -> None:
        self.zone = zone
        self.upstream = upstream
        self.upstream_timeout = upstream_timeout
        self.port = 0
        self._rendered: dict[Key, bytes] = {}
        self._version = -1
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.queries = 0

    # -- answering -------------------------------------------------------------------------

    def respond(self, wire: bytes, tcp: bool) -> bytes | dns.message.Message | None:
        """The reply to one message: bytes to send, a query to forward upstream, or None to
        drop it (not a query, or too short to answer)."""
        self.queries += 1
        if self._version != self.zone.version:
            self._rendered.clear()
            self._version = self.zone.version
        reply = self._cached(wire, tcp)
        if reply is not None:
            return reply
        try:
            query = dns.message.from_wire(wire, ignore_trailing=True)
        except dns.exception.DNSException:
            return _format_error(wire)
        if query.flags & dns.flags.QR:
            return None  # a response: never answer those (no loops)
        if query.opcode() != dns.opcode.QUERY:
            return _error(query, dns.rcode.NOTIMP)
        if len(query.question) != 1:
            return _error(query, dns.rcode.FORMERR)
        question = query.question[0]
        if question.rdclass != dns.rdataclass.IN:
            return _error(query, dns.rcode.REFUSED)
        limit = 65535 if tcp else (max(UDP_DEFAULT_LIMIT, query.payload) if query.edns >= 0
                                   else UDP_DEFAULT_LIMIT)
        answer = self.zone.resolve(question.name, question.rdtype)
        if answer.forwardable and self.upstream is not None:
            return query
        response = dns.message.make_response(query, recursion_available=self.upstream
                                             is not None, our_payload=OUR_PAYLOAD)
        response.set_rcode(answer.rcode)
        if answer.authoritative:
            response.flags |= dns.flags.AA
        response.answer = list(answer.answer)
        response.authority = list(answer.authority)
        response.additional = list(answer.additional)
        rendered = response.to_wire(max_size=limit, prefer_truncation=True)
        if query.edns < 0 and not (query.answer or query.authority or query.additional):
            # the shape _cached() recognizes
            if len(self._rendered) >= MAX_RENDERED:
                self._rendered.clear()
            self._rendered[(key_of(question.name), question.rdtype,
                            query.flags & _SHAPING_FLAGS, tcp)] = rendered
        return rendered

    def _cached(self, wire: bytes, tcp: bool) -> bytes | None:
        """The kept rendering for a plain query (one question, nothing else: what stub
        resolvers in pods send), read with dnspython's wire parser rather than a whole
        message. Anything else (EDNS, odd flags, a miss) takes the full path."""
        if len(wire) < 17:
            return None
        _, flags, qdcount, others = struct.unpack_from("!HHH6s", wire)
        if qdcount != 1 or others != _NO_RECORDS or flags & _NOT_PLAIN:
            return None
        try:
            parser = dns.wire.Parser(wire, 12)
            name = parser.get_name()
            rdtype, rdclass = parser.get_struct("!HH")
        except dns.exception.DNSException:
            return None
        if rdclass != dns.rdataclass.IN:
            return None
        rendered = self._rendered.get((key_of(name), rdtype, flags & _SHAPING_FLAGS, tcp))
        if rendered is None:
            return None
        return _with_id_and_question(rendered, wire, name)

    async def forward(self, query: dns.message.Message, tcp: bool) -> bytes:
        """Ask the upstream (UDP, then TCP if truncated); SERVFAIL when it does not answer."""
        assert self.upstream is not None
        host, port = self.upstream
        limit = 65535 if tcp else (max(UDP_DEFAULT_LIMIT, query.payload) if query.edns >= 0
                                   else UDP_DEFAULT_LIMIT)
        try:
            reply = await dns.asyncquery.udp(query, host, port=port,
                                              timeout=self.upstream_timeout,
                                              raise_on_truncation=False)
            if reply.flags & dns.flags.TC and tcp:
                reply = await dns.asyncquery.tcp(query, host, port=port,
                                                 timeout=self.upstream_timeout)
        except (OSError, dns.exception.DNSException) as exc:
            log.debug("upstream %s:%d failed: %s", host, port, exc)
            return _error(query, dns.rcode.SERVFAIL)
        reply.id = query.id
        return reply.to_wire(max_size=limit, prefer_truncation=True)

    # -- transports ------------------------------------------------------------------------

    async def start(self, host: str, port: int = 53, retry_seconds: float = 0.25) -> None:
        """Bind UDP and TCP on host:port. Waits (retrying) while the address does not exist
        yet: the node's bridge gets it when the pod network starts."""
        warned = False
        while True:
            try:
                udp_sock, tcp_sock = _bind(host, port)
                break
            except OSError as exc:
                if exc.errno not in (errno.EADDRNOTAVAIL, errno.EADDRINUSE):
                    raise
                if not warned:
                    log.info("dns: cannot bind %s:%d yet (%s); retrying", host, port,
                             exc.strerror)
                    warned = True
                await asyncio.sleep(retry_seconds)
        loop = asyncio.get_running_loop()
        self.port = udp_sock.getsockname()[1]
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=udp_sock)
        self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp_sock)
        log.info("dns: serving %s:%d (udp, tcp)", host, self.port)

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._tcp.wait_closed(), 1.0)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_tcp(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        """Length-prefixed messages (RFC 1035 4.2.2), several per connection, pipelined."""
        try:
            while True:
                header = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_SECONDS)
                wire = await asyncio.wait_for(
                    reader.readexactly(struct.unpack("!H", header)[0]), TCP_IDLE_SECONDS)
                out = self.respond(wire, tcp=True)
                if isinstance(out, dns.message.Message):
                    out = await self.forward(out, tcp=True)
                if out is None:
                    break
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        out = self.server.respond(data, tcp=False)
        if isinstance(out, bytes):
            assert self.transport is not None
            self.transport.sendto(out, addr)
        elif out is not None:
            self.server.spawn(self._forward(out, addr))

    async def _forward(self, query: dns.message.Message, addr: tuple[str, int]) -> None:
        out = await self.server.forward(query, tcp=False)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(out, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("dns udp: %s", exc)  # an ICMP error for an earlier reply: nothing to do


def _bind(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same address and port (port 0: one free for both)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    tcp = socket.socket(family, socket.SOCK_STREAM)
    try:
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        udp.bind((host, port))
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((host, udp.getsockname()[1]))
        tcp.listen(128)
        udp.setblocking(False)
        tcp.setblocking(False)
    except OSError:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


def _with_id_and_question(rendered: bytes, query: bytes, qname: object) -> bytes | None:
    """A cached rendering with this query's ID and its spelling of the question name, or None
    when the query's name is not spelled out where expected (then render afresh).

    The question starts right after the 12-byte header; both names are the same up to letter
    case (they matched as cache keys), so lengths and compression pointers still hold. Label
    length bytes are below 64, so lowercasing the bytes only folds letters."""
    end = 12 + len(qname.to_wire())  # type: ignore[attr-defined]
    asked = query[12:end]
    if asked == rendered[12:end]:
        return query[:2] + rendered[2:]
    if asked.lower() != rendered[12:end].lower():
        return None
    return query[:2] + rendered[2:12] + asked + rendered[end:]


def _error(query: dns.message.Message, rcode: int) -> bytes:
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    response.answer = []
    return response.to_wire(max_size=UDP_DEFAULT_LIMIT, prefer_truncation=True)


def _format_error(wire: bytes) -> bytes | None:
    """FORMERR for a message whose header is readable (so the client stops waiting)."""
    if len(wire) < 12:
        return None
    (msg_id, flags) = struct.unpack("!HH", wire[:4])
    if flags & dns.flags.QR:
        return None
    response = dns.message.Message(id=msg_id)
    response.flags = dns.flags.QR | (flags & dns.flags.RD)
    response.set_rcode(dns.rcode.FORMERR)
    return response.to_wire()
