"""Pages reclaim sends to swap (mm/swap_state.c add_to_swap, Linux 5.10): each takes a swap
slot and stays under writeback IO until the reclaimer's wait ends and frees it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..machine import Machine
    from .mmzone import Zone


def add_to_swap(m: "Machine", zone: "Zone", lru: str, nr: int) -> None:
    """``nr`` pages of the zone's ``lru`` counter ("anon" or "shmem") went to swap IO."""
    if nr:
        zone.nr[lru] -= nr
        zone.nr["writeback"] += nr
        m.swap_free -= nr
        m.vmstat["pswpout"] += nr
