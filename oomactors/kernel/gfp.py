"""GFP flags as in include/linux/gfp.h of Linux 5.10: real bit values, real compositions.

A config names a mask the way kernel code does (``"GFP_KERNEL | __GFP_NORETRY"``);
:func:`parse_gfp` turns that into the integer the allocator tests bit by bit, and
:func:`format_gfp` prints it back the way ``%pGg`` does in an OOM report.
"""

from __future__ import annotations

# Zone modifiers and the action modifiers (5.10 bit values).
__GFP_DMA = 0x01
__GFP_HIGHMEM = 0x02
__GFP_DMA32 = 0x04
__GFP_MOVABLE = 0x08
__GFP_RECLAIMABLE = 0x10
__GFP_HIGH = 0x20
__GFP_IO = 0x40
__GFP_FS = 0x80
__GFP_ZERO = 0x100
__GFP_ATOMIC = 0x200
__GFP_DIRECT_RECLAIM = 0x400
__GFP_KSWAPD_RECLAIM = 0x800
__GFP_WRITE = 0x1000
__GFP_NOWARN = 0x2000
__GFP_RETRY_MAYFAIL = 0x4000
__GFP_NOFAIL = 0x8000
__GFP_NORETRY = 0x10000
__GFP_MEMALLOC = 0x20000
__GFP_COMP = 0x40000
__GFP_NOMEMALLOC = 0x80000
__GFP_HARDWALL = 0x100000
__GFP_THISNODE = 0x200000
__GFP_ACCOUNT = 0x400000

__GFP_RECLAIM = __GFP_DIRECT_RECLAIM | __GFP_KSWAPD_RECLAIM
__GFP_BITS_MASK = (1 << 23) - 1  # __GFP_BITS_SHIFT is 23 without lockdep
GFP_ZONEMASK = __GFP_DMA | __GFP_HIGHMEM | __GFP_DMA32 | __GFP_MOVABLE

GFP_ATOMIC = __GFP_HIGH | __GFP_ATOMIC | __GFP_KSWAPD_RECLAIM
GFP_KERNEL = __GFP_RECLAIM | __GFP_IO | __GFP_FS
GFP_KERNEL_ACCOUNT = GFP_KERNEL | __GFP_ACCOUNT
GFP_NOWAIT = __GFP_KSWAPD_RECLAIM
GFP_NOIO = __GFP_RECLAIM
GFP_NOFS = __GFP_RECLAIM | __GFP_IO
GFP_USER = __GFP_RECLAIM | __GFP_IO | __GFP_FS | __GFP_HARDWALL
GFP_DMA = __GFP_DMA
GFP_DMA32 = __GFP_DMA32
GFP_HIGHUSER = GFP_USER | __GFP_HIGHMEM
GFP_HIGHUSER_MOVABLE = GFP_HIGHUSER | __GFP_MOVABLE
GFP_TRANSHUGE_LIGHT = (GFP_HIGHUSER_MOVABLE | __GFP_COMP | __GFP_NOMEMALLOC | __GFP_NOWARN) & ~__GFP_RECLAIM
GFP_TRANSHUGE = GFP_TRANSHUGE_LIGHT | __GFP_DIRECT_RECLAIM

# Names for parsing and printing.  Compositions are listed before single bits and, among
# compositions, larger first, so format_gfp() prints what %pGg prints.
COMPOSITES: dict[str, int] = {
    "GFP_TRANSHUGE": GFP_TRANSHUGE,
    "GFP_TRANSHUGE_LIGHT": GFP_TRANSHUGE_LIGHT,
    "GFP_HIGHUSER_MOVABLE": GFP_HIGHUSER_MOVABLE,
    "GFP_HIGHUSER": GFP_HIGHUSER,
    "GFP_USER": GFP_USER,
    "GFP_KERNEL_ACCOUNT": GFP_KERNEL_ACCOUNT,
    "GFP_KERNEL": GFP_KERNEL,
    "GFP_NOFS": GFP_NOFS,
    "GFP_ATOMIC": GFP_ATOMIC,
    "GFP_NOIO": GFP_NOIO,
    "GFP_NOWAIT": GFP_NOWAIT,
    "GFP_DMA32": GFP_DMA32,
    "GFP_DMA": GFP_DMA,
}
BITS: dict[str, int] = {
    "__GFP_DMA": __GFP_DMA,
    "__GFP_HIGHMEM": __GFP_HIGHMEM,
    "__GFP_DMA32": __GFP_DMA32,
    "__GFP_MOVABLE": __GFP_MOVABLE,
    "__GFP_RECLAIMABLE": __GFP_RECLAIMABLE,
    "__GFP_HIGH": __GFP_HIGH,
    "__GFP_IO": __GFP_IO,
    "__GFP_FS": __GFP_FS,
    "__GFP_ZERO": __GFP_ZERO,
    "__GFP_ATOMIC": __GFP_ATOMIC,
    "__GFP_DIRECT_RECLAIM": __GFP_DIRECT_RECLAIM,
    "__GFP_KSWAPD_RECLAIM": __GFP_KSWAPD_RECLAIM,
    "__GFP_WRITE": __GFP_WRITE,
    "__GFP_NOWARN": __GFP_NOWARN,
    "__GFP_RETRY_MAYFAIL": __GFP_RETRY_MAYFAIL,
    "__GFP_NOFAIL": __GFP_NOFAIL,
    "__GFP_NORETRY": __GFP_NORETRY,
    "__GFP_MEMALLOC": __GFP_MEMALLOC,
    "__GFP_COMP": __GFP_COMP,
    "__GFP_NOMEMALLOC": __GFP_NOMEMALLOC,
    "__GFP_HARDWALL": __GFP_HARDWALL,
    "__GFP_THISNODE": __GFP_THISNODE,
    "__GFP_ACCOUNT": __GFP_ACCOUNT,
}
_ALIASES = {"__GFP_RECLAIM": __GFP_RECLAIM}
NAMES: dict[str, int] = {**COMPOSITES, **BITS, **_ALIASES}


def parse_gfp(text: str) -> int:
    """Parse ``"GFP_KERNEL | __GFP_NORETRY"`` (also ``~__GFP_FS`` to clear a bit).

    Raises ValueError naming the first unknown flag.
    """
    mask = 0
    parts = [p.strip() for p in text.replace("|", " | ").split("|")]
    if not text.strip():
        raise ValueError("empty GFP mask")
    for part in parts:
        if not part:
            raise ValueError(f"malformed GFP mask {text!r}")
        clear = part.startswith("~")
        name = part[1:].strip() if clear else part
        if name.startswith("0x"):
            try:
                value = int(name, 16)
            except ValueError:
                raise ValueError(f"unknown GFP flag {name!r}") from None
        elif name in NAMES:
            value = NAMES[name]
        else:
            raise ValueError(f"unknown GFP flag {name!r}")
        mask = mask & ~value if clear else mask | value
    return mask


# include/trace/events/mmflags.h __def_gfpflag_names (5.10): the order %pGg tries names in.
# Compositions with most bits come first, so GFP_USER is not printed as GFP_KERNEL|__GFP_HARDWALL.
GFPFLAG_NAMES: tuple[tuple[str, int], ...] = (
    ("GFP_TRANSHUGE", GFP_TRANSHUGE), ("GFP_TRANSHUGE_LIGHT", GFP_TRANSHUGE_LIGHT),
    ("GFP_HIGHUSER_MOVABLE", GFP_HIGHUSER_MOVABLE), ("GFP_HIGHUSER", GFP_HIGHUSER),
    ("GFP_USER", GFP_USER), ("GFP_KERNEL_ACCOUNT", GFP_KERNEL_ACCOUNT), ("GFP_KERNEL", GFP_KERNEL),
    ("GFP_NOFS", GFP_NOFS), ("GFP_ATOMIC", GFP_ATOMIC), ("GFP_NOIO", GFP_NOIO),
    ("GFP_NOWAIT", GFP_NOWAIT), ("GFP_DMA", GFP_DMA), ("__GFP_HIGHMEM", __GFP_HIGHMEM),
    ("GFP_DMA32", GFP_DMA32), ("__GFP_HIGH", __GFP_HIGH), ("__GFP_ATOMIC", __GFP_ATOMIC),
    ("__GFP_IO", __GFP_IO), ("__GFP_FS", __GFP_FS), ("__GFP_NOWARN", __GFP_NOWARN),
    ("__GFP_RETRY_MAYFAIL", __GFP_RETRY_MAYFAIL), ("__GFP_NOFAIL", __GFP_NOFAIL),
    ("__GFP_NORETRY", __GFP_NORETRY), ("__GFP_COMP", __GFP_COMP), ("__GFP_ZERO", __GFP_ZERO),
    ("__GFP_NOMEMALLOC", __GFP_NOMEMALLOC), ("__GFP_MEMALLOC", __GFP_MEMALLOC),
    ("__GFP_HARDWALL", __GFP_HARDWALL), ("__GFP_THISNODE", __GFP_THISNODE),
    ("__GFP_RECLAIMABLE", __GFP_RECLAIMABLE), ("__GFP_MOVABLE", __GFP_MOVABLE),
    ("__GFP_ACCOUNT", __GFP_ACCOUNT), ("__GFP_WRITE", __GFP_WRITE), ("__GFP_RECLAIM", __GFP_RECLAIM),
    ("__GFP_DIRECT_RECLAIM", __GFP_DIRECT_RECLAIM), ("__GFP_KSWAPD_RECLAIM", __GFP_KSWAPD_RECLAIM),
)


def format_flags(mask: int) -> str:
    """lib/vsprintf.c format_flags over the GFP name table: every name whose bits are all
    still set, in table order, '|'-separated; leftover bits in hex; nothing for 0."""
    names = []
    rest = mask
    for name, value in GFPFLAG_NAMES:
        if not rest:
            break
        if rest & value == value:
            names.append(name)
            rest &= ~value
    if rest:
        names.append(hex(rest))
    return "|".join(names)


def format_gfp(mask: int) -> str:
    """``0xcc0(GFP_KERNEL)`` style, as the kernel's ``%#x(%pGg)`` prints a mask (``0x0()``
    for a page fault's empty mask).  Every slow path and direct reclaim prints its mask:
    each mask is formatted once."""
    text = _FORMATTED.get(mask)
    if text is None:
        text = f"{mask:#x}({format_flags(mask)})"
        if len(_FORMATTED) < 4096:  # a run meets a handful of masks; any mask is allowed
            _FORMATTED[mask] = text
    return text


_FORMATTED: dict[int, str] = {}


def gfp_zone(mask: int) -> int:
    """The highest zone index an allocation may use (ZONE_DMA=0, DMA32=1, NORMAL=2, MOVABLE=3)."""
    if mask & __GFP_DMA:
        return 0
    if mask & __GFP_DMA32:
        return 1
    if mask & __GFP_MOVABLE and mask & __GFP_HIGHMEM:
        return 3
    return 2


def gfp_zone_bad(mask: int) -> bool:
    """GFP_ZONE_BAD: zone modifiers that name two zones at once (gfp_zone() BUGs on them):
    any two of DMA, DMA32 and HIGHMEM, or MOVABLE with HIGHMEM and a DMA zone."""
    z = mask & (__GFP_DMA | __GFP_HIGHMEM | __GFP_DMA32)
    return bin(z).count("1") > 1


def gfp_problem(mask: int, user_fault: bool) -> str | None:
    """Why a mask makes no sense for a request (None when it is fine): bits gfp.h does not
    define, two zones at once, or a zone modifier on a user page fault (whose mask the
    fault path sets: GFP_HIGHUSER_MOVABLE, never a DMA zone)."""
    if mask & ~__GFP_BITS_MASK:
        return f"undefined GFP bits {mask & ~__GFP_BITS_MASK:#x} (gfp.h defines {__GFP_BITS_MASK:#x})"
    if gfp_zone_bad(mask):
        return "names two zones at once (GFP_ZONE_BAD: gfp_zone() would BUG)"
    if user_fault and mask & (__GFP_DMA | __GFP_DMA32):
        return "a DMA zone modifier on a user page fault (anon and shmem faults use highmem-movable zones)"
    return None


def gfpflags_allow_blocking(mask: int) -> bool:
    return bool(mask & __GFP_DIRECT_RECLAIM)
