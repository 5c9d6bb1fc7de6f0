"""The campaign lease: at most one process drives a campaign at a time.

A lease is the campaign document's ``lease`` field (``owner`` = ``host:pid:token``,
``expires``, ``since``). It is taken and changed atomically: MongoDB's
``find_one_and_update`` across machines; on the embedded store the same update under a
file lock the operating system enforces (:meth:`CampaignStores.lease_mutex`), so two
processes on one database cannot both take it.

* ``alcampaign run`` / ``resume`` hold the lease for the whole run
  (:func:`campaign_lease`); a second process finds it held, says who holds it and
  leaves (exit 0), or waits for it (``--wait``).
* A controller decision takes it too (re-entrant when its process holds it already),
  so controllers run by a workflow manager's workers never decide twice at once.
* While held, a heartbeat thread renews it every ``ttl / 3`` seconds, so a long
  decision or oracle call keeps it; a holder that stops renewing (a hung or partitioned
  host) loses it after ``ttl``. A holder killed on this host (SIGKILL, a crash) is
  recognised at once from its pid and its lease broken.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import uuid4

from alcampaign.errors import CampaignNotFound
from alcampaign.store.facade import CampaignStores

logger = logging.getLogger("alcampaign")

# Renewed every LEASE_TTL / 3 while held; a holder on another host that stopped
# renewing is taken over after LEASE_TTL.
LEASE_TTL = 60.0
# How long a controller waits for a live holder before it skips its decision.
LEASE_WAIT = 120.0
POLL = 0.2

# The leases this process holds: (campaign name, thread id) -> owner. Re-entrant per
# thread: run_locally runs every job in the thread that took the lease.
_HELD: dict[tuple[str, int], str] = {}
_HELD_LOCK = threading.Lock()


class LeaseBusy(RuntimeError):
    """Another live process holds the campaign lease.

    Attributes
    ----------
    holder
        The lease: ``owner`` (``host:pid:token``), ``since``, ``expires``.
    """

    def __init__(self, campaign: str, holder: dict) -> None:
        self.campaign = campaign
        self.holder = holder
        host, pid = owner_host_pid(holder.get("owner", ""))
        super().__init__(
            f"campaign {campaign} is being run by process {pid} on {host} "
            f"(since {holder.get('since')})"
        )


def new_owner(token: str | None = None) -> str:
    """``host:pid:token``: unique per holder, and tells whether the holder lives."""
    return f"{socket.gethostname()}:{os.getpid()}:{token or uuid4().hex[:12]}"


def owner_host_pid(owner: str) -> tuple[str, str]:
    """Host and pid of an owner string."""
    host, _, rest = owner.partition(":")
    return host, rest.partition(":")[0]


def owner_dead(owner: str) -> bool:
    """True when ``owner`` ran on this host in a process that no longer exists."""
    host, pid = owner_host_pid(owner)
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def held_here(campaign: str) -> str | None:
    """The owner under which this thread holds the campaign's lease, if it does."""
    with _HELD_LOCK:
        return _HELD.get((campaign, threading.get_ident()))


def take_lease(
    stores: CampaignStores, name: str, owner: str, wait: float = 0.0, ttl: float = LEASE_TTL
) -> dict | None:
    """Take the lease for ``owner``, waiting up to ``wait`` seconds for a live holder and
    breaking a dead one's. Returns ``None`` when taken, else the live holder's lease."""
    deadline = time.monotonic() + wait
    while True:
        holder = stores.lease_holder(name)
        dead = [holder["owner"]] if holder and owner_dead(holder["owner"]) else []
        if dead:
            logger.warning("breaking the lease of %s (its process is gone)", dead[0])
        if stores.acquire_lease(name, owner, ttl, breakable=dead):
            return None
        holder = stores.lease_holder(name)
        if holder is None:
            if stores.get_campaign(name) is None:
                raise CampaignNotFound(name)
            continue  # given back meanwhile: try again
        if time.monotonic() >= deadline:
            return holder
        time.sleep(POLL if wait <= LEASE_WAIT else 1.0)  # a long wait polls gently


class _Heartbeat(threading.Thread):
    """Renews a lease every ``ttl / 3`` seconds until stopped."""

    def __init__(self, stores: CampaignStores, name: str, owner: str, ttl: float) -> None:
        super().__init__(name=f"lease {name}", daemon=True)
        self.stores, self.campaign, self.owner, self.ttl = stores, name, owner, ttl
        self.stop = threading.Event()
        self.lost = False

    def run(self) -> None:
        stores = self.stores.heartbeat_copy()
        while not self.stop.wait(self.ttl / 3):
            try:
                if not stores.renew_lease(self.campaign, self.owner, self.ttl):
                    self.lost = True
                    logger.error("lost the lease of campaign %s", self.campaign)
                    return
            except Exception as exc:  # a database hiccup: try again next beat
                logger.warning("could not renew the lease of %s: %s", self.campaign, exc)


@contextmanager
def campaign_lease(
    stores: CampaignStores,
    name: str,
    owner: str | None = None,
    wait: float = 0.0,
    ttl: float = LEASE_TTL,
    created: bool = False,
) -> Iterator[str]:
    """Hold the campaign's lease for the ``with`` block, renewed by a heartbeat.

    Re-entrant within a thread: when this thread holds it already, the block runs
    under that lease. ``created``: the caller created the campaign holding the lease
    for ``owner`` (:meth:`CampaignStores.create_campaign_leased`).

    Raises
    ------
    LeaseBusy
        Another live process holds it (after ``wait`` seconds).
    """
    mine = held_here(name)
    if mine is not None:
        yield mine
        return
    owner = owner or new_owner()
    if not created:
        holder = take_lease(stores, name, owner, wait, ttl)
        if holder is not None:
            raise LeaseBusy(name, holder)
    key = (name, threading.get_ident())
    with _HELD_LOCK:
        _HELD[key] = owner
    beat = _Heartbeat(stores, name, owner, ttl)
    beat.start()
    try:
        yield owner
    finally:
        beat.stop.set()
        beat.join()
        with _HELD_LOCK:
            _HELD.pop(key, None)
        stores.release_lease(name, owner)
