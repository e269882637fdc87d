"""Refuse every connection that leaves this machine, in this process: what the offline tests
use instead of proxy variables, which NO_PROXY=* or a client that ignores proxies would lift.
sitecustomize.py calls it in every process started with BLOCKED_NETWORK=1 and this folder on
PYTHONPATH (a stage under `dvc repro`, and its children)."""

import ipaddress
import socket

LOCAL_NAMES = {"localhost", "localhost.localdomain", ""}


def _local(address) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths and abstract sockets
        return True
    host = address[0]
    if isinstance(host, bytes):
        host = host.decode()
    if host in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:  # a host name: connect() takes addresses, so a name is not local
        return False


def _refused(address):
    return ConnectionRefusedError(111, f"network blocked in this test: {address!r}")


def refuse_connections(patch=setattr) -> None:
    """Patch ``socket`` so that connecting anywhere but the loopback fails at once, and a name
    other than localhost is not looked up (no DNS query leaves either). ``patch``: setattr, or
    a pytest monkeypatch's (undone after the test)."""
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex
    create_connection, getaddrinfo = socket.create_connection, socket.getaddrinfo

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host is not None and not _local((host,)):
            raise socket.gaierror(socket.EAI_NONAME, f"network blocked in this test: {host!r}")
        return getaddrinfo(host, *args, **kwargs)

    def guarded_connect(sock, address):
        if sock.family != socket.AF_UNIX and not _local(address):
            raise _refused(address)
        return connect(sock, address)

    def guarded_connect_ex(sock, address):
        if sock.family != socket.AF_UNIX and not _local(address):
            return 111  # ECONNREFUSED
        return connect_ex(sock, address)

    def guarded_create_connection(address, *args, **kwargs):
        if not _local(address):
            raise _refused(address)
        return create_connection(address, *args, **kwargs)

    patch(socket.socket, "connect", guarded_connect)
    patch(socket.socket, "connect_ex", guarded_connect_ex)
    patch(socket, "create_connection", guarded_create_connection)
    patch(socket, "getaddrinfo", guarded_getaddrinfo)
