"""The value types a config key can have, and the rules every section shares.

A size, a rate, a duration, a comm name, ``"auto"``: each is an annotated type that parses
the TOML value and says in one phrase what is wrong with it.  :func:`_at` points an error
*below* the key being validated; :class:`_Model` is every section's base (unknown keys
refused, frozen: the config is stored in the trace header and must describe the run
exactly).  The sections are in :mod:`oomactors.config_sections`, the program steps in
:mod:`oomactors.config_steps`, the whole and its loading in :mod:`oomactors.config`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Callable, Literal, Optional, Union

from pydantic import (AfterValidator, AllowInfNan, BaseModel, BeforeValidator, ConfigDict, Field,
                      PlainSerializer, PlainValidator, Strict)
from pydantic_core import PydanticCustomError

from oomactors.kernel.profiles import PROFILES as KERNEL_PROFILES
from oomactors.units import GiB, MiB, Duration, parse_duration, parse_rate, parse_size

PROFILES: tuple[str, ...] = tuple(KERNEL_PROFILES)
"""Kernel behaviour profiles a config may name; later versions add to this tuple."""
HZ_VALUES: tuple[int, ...] = (100, 250, 300, 1000)
CAPABILITIES: tuple[str, ...] = ("CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_SYS_RAWIO",
                                 "CAP_IPC_LOCK", "CAP_KILL")
MAX_MEMORY = 64 * 1024 * GiB  # MAX_PHYSMEM_BITS = 46 with 4-level paging
DMA_ZONE_MAX = 16 * MiB  # arch/x86: MAX_DMA_PFN, the 16 MiB an ISA DMA engine reaches
SEED_MAX = 2 ** 64 - 1  # seeds are stored as msgpack u64
UID_MAX = 2 ** 32 - 2  # uid_t is 32 bits and (uid_t)-1 means "no uid"
TASK_COMM_LEN = 16  # include/linux/sched.h; a comm holds TASK_COMM_LEN - 1 characters

# --- field types -----------------------------------------------------------------------

Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
Float = Annotated[float, Strict(), AllowInfNan(False)]  # strict float still takes a TOML integer (0 -> 0.0)
NonNegInt = Annotated[int, Strict(), Field(ge=0)]


def _dump_duration(d: Duration) -> dict[str, Any]:
    return {"ns": d.ns, "jiffies": d.jiffies}


def _check(ok: Callable[[Any], bool], problem: str) -> AfterValidator:
    """An AfterValidator raising ``ValueError(problem)`` unless ``ok(value)``.

    Checks run *after* type validation so a wrong type still reads "expected an integer",
    and after the items of a collection, so a failing item is not also reported as a
    length problem (pydantic's ``min_length`` does that, adding a spurious "(+1 more)").
    """
    def check(v: Any) -> Any:
        if not ok(v):
            raise ValueError(problem)
        return v
    return AfterValidator(check)


def _size_or(word: str, positive: bool = False):
    """A before-validator accepting ``word`` (``"auto"``/``"all"``) or a size."""
    def parse(v: Any) -> int | str:
        if v == word:
            return word
        n = parse_size(v)
        if positive and n == 0:
            raise ValueError(f"must be greater than 0 (or {word!r})")
        return n
    return parse


def _positive_rate_or_none(v: Any) -> int | None:
    if v is None:
        return None
    n = parse_rate(v)
    if n == 0:
        raise ValueError("must be greater than 0")
    return n


def _check_comm(name: str) -> str:
    if not name:
        raise ValueError("must not be empty")
    if len(name) > TASK_COMM_LEN - 1:
        raise ValueError(f"longer than {TASK_COMM_LEN - 1} characters (TASK_COMM_LEN)")
    if re.search(r"\s", name):
        raise ValueError("must not contain whitespace")
    if not name.isprintable():
        raise ValueError("must not contain control characters")
    return name


def _kbytes_or_auto(lo: int) -> Callable[[Any], int | str]:
    """A before-validator for a kbytes sysctl that is ``"auto"`` (its boot default) or an
    integer of at least ``lo``."""
    def check(v: Any) -> int | str:
        if v == "auto":
            return v
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise ValueError(f"expected an integer >= {lo} (kbytes) or \"auto\"")
        return v
    return check


def _int_or_auto(lo: int, hi: int) -> Callable[[Any], int | str]:
    """A before-validator for a sysctl that is ``"auto"`` (its boot default) or an integer
    in the range the kernel's sysctl handler accepts."""
    def check(v: Any) -> int | str:
        if v == "auto":
            return v
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ValueError(f"expected an integer from {lo} to {hi}, or \"auto\"")
        return v
    return check


KbytesOrAuto = Annotated[Union[int, Literal["auto"]], BeforeValidator(_kbytes_or_auto(0))]


Size = Annotated[int, BeforeValidator(parse_size)]
PositiveSize = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]
SizeOrAuto = Annotated[Union[int, Literal["auto"]], BeforeValidator(_size_or("auto"))]
Rate = Annotated[int, BeforeValidator(parse_rate)]
PositiveRate = Annotated[int, BeforeValidator(parse_rate), Field(gt=0)]
OptRate = Annotated[Optional[int], BeforeValidator(_positive_rate_or_none)]
DurationT = Annotated[Duration, PlainValidator(parse_duration),
                      PlainSerializer(_dump_duration)]
PositiveDuration = Annotated[DurationT, _check(lambda d: not d.is_zero(), "must be greater than 0")]
CommName = Annotated[str, Strict(), AfterValidator(_check_comm)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)



def _at(subpath: tuple, problem: str) -> PydanticCustomError:
    """An error to raise from a validator that points *below* the validated key."""
    return PydanticCustomError("at_path", "{problem}", {"subpath": subpath, "problem": problem})
