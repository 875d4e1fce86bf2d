# Copyright: onprem.ray maintainers
# Apache License 2.0 (see LICENSE)
"""Address expansion: a worker_ips entry (IP, hostname, range or CIDR block) -> addresses."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

MAX_ADDRESSES_PER_ENTRY = 4096
_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DNS_NAME_RE = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def expand_address(entry: str) -> list[str]:
    """One worker_ips entry -> addresses: an IP, a hostname, `first-last` or a CIDR block.

    Raises ValueError with the reason when the entry is none of these.
    """
    odd = sorted(set(re.sub(r"[A-Za-z0-9.:/%-]", "", entry)))
    if odd:
        raise ValueError("not an address: contains " + " ".join(repr(c) for c in odd))
    if "/" in entry:
        return _expand_cidr(entry)
    first, dash, last = entry.partition("-")
    if dash and is_ip(first) and is_ip(last):
        return _expand_range(ipaddress.ip_address(first), ipaddress.ip_address(last))
    if is_ip(entry):
        if "%" in entry:
            raise ValueError("scoped IPv6 addresses (with %zone) are not supported")
        return [str(ipaddress.ip_address(entry))]
    if len(entry) <= 253 and DNS_NAME_RE.fullmatch(entry) and re.search("[A-Za-z]", entry):
        return [entry]
    if dash and is_ip(first):
        raise ValueError("not an address; a range names two full addresses, "
                         "e.g. 10.0.0.5-10.0.0.20")
    raise ValueError("not an IP address, a hostname, a range (10.0.0.5-10.0.0.20) or a "
                     "CIDR block (10.0.0.0/24)")


def _expand_cidr(entry: str) -> list[str]:
    try:
        network = ipaddress.ip_network(entry)
    except ValueError as err:
        try:
            loose = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"not a CIDR block ({err})") from None
        raise ValueError(f"host bits are set; the block is {loose}") from None
    if network.num_addresses > MAX_ADDRESSES_PER_ENTRY:
        raise ValueError(f"{network.num_addresses} addresses, more than the "
                         f"{MAX_ADDRESSES_PER_ENTRY} one entry may expand to")
    return [str(address) for address in network.hosts()]


def _expand_range(first: Any, last: Any) -> list[str]:
    if first.version != last.version:
        raise ValueError("a range cannot mix IPv4 and IPv6")
    count = int(last) - int(first) + 1
    if count < 1:
        raise ValueError("the range is empty: its first address is above its last")
    if count > MAX_ADDRESSES_PER_ENTRY:
        raise ValueError(f"{count} addresses, more than the {MAX_ADDRESSES_PER_ENTRY} one "
                         "entry may expand to")
    return [str(first + offset) for offset in range(count)]


def address_key(address: str) -> str:
    return address if is_ip(address) else address.lower()  # DNS names ignore case


def address_order(address: str) -> tuple[int, int, int, str]:
    """Sort key: addresses in numeric order (10.0.0.9 before 10.0.0.10), then hostnames."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return (1, 0, 0, address)
    return (0, parsed.version, int(parsed), address)
