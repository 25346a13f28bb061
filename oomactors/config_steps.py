"""A task's program: the step models (``{ op = "alloc", size = "64MiB" }`` ...).

A program is a tuple of steps told apart by their ``op`` (pydantic's discriminated
union); ``fork`` and ``repeat`` steps hold programs of their own.  :data:`STEP_TYPES`
maps each op to its model (the docs' step reference is generated from it).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BeforeValidator, Field, PrivateAttr, field_validator, model_validator

from oomactors.kernel.gfp import gfp_problem, parse_gfp

from .config_types import (Bool, CommName, DurationT, Int, OptRate, PositiveSize, Str, _at, _check, _Model,
                           _size_or)


class AllocStep(_Model):
    """Allocate ``size`` bytes in ``chunk``-page pieces (paced by ``rate`` if given)."""

    op: Literal["alloc"]
    size: PositiveSize
    gfp: Str = "GFP_HIGHUSER_MOVABLE"
    order: Int = Field(0, ge=0, le=10)
    rate: OptRate = None
    kind: Literal["anon", "shmem", "kernel"] = "anon"
    chunk: Int = Field(32, ge=1, le=4096)
    on_fail: Literal["exit", "retry", "continue"] = "exit"
    _gfp_mask: int = PrivateAttr(0)

    @field_validator("gfp")
    @classmethod
    def _valid_gfp(cls, text: str) -> str:
        parse_gfp(text)  # raises ValueError("unknown GFP flag ...")
        return text

    def model_post_init(self, context: Any) -> None:
        self._gfp_mask = parse_gfp(self.gfp)

    @model_validator(mode="after")
    def _sensible_gfp(self) -> AllocStep:
        problem = gfp_problem(parse_gfp(self.gfp), user_fault=self.kind != "kernel")
        if problem is not None:
            raise _at(("gfp",), f"{self.gfp!r}: {problem}")
        return self

    @property
    def gfp_mask(self) -> int:
        """The parsed ``gfp`` text as the integer mask the allocator tests."""
        # read from pydantic's private store directly: its __getattr__ is a slow path,
        # and every alloc step asks for its mask
        return self.__pydantic_private__["_gfp_mask"]  # type: ignore[index]


class TouchFileStep(_Model):
    """Read (or write, ``dirty``) ``size`` bytes of a file into the page cache."""

    op: Literal["touch_file"]
    size: PositiveSize
    dirty: Bool = False
    mapped: Bool = True
    rate: OptRate = None


class AccessStep(_Model):
    """A working set the task touches again and again: ``size`` bytes (whole pages) of
    ``kind`` memory (its own mapping), swept ``repeat`` times (omitted: until the task ends) at ``rate``
    bytes per second (omitted: as fast as the CPU allows).  The first sweep faults the pages
    in; later sweeps reference the resident ones and fault back those reclaim took: swap-in
    for anon, a read from disk for page cache (docs/thrashing.md)."""

    op: Literal["access"]
    size: PositiveSize
    kind: Literal["anon", "file", "shmem"] = "anon"
    rate: OptRate = None
    repeat: Optional[Int] = Field(None, ge=1)
    chunk: Int = Field(64, ge=1, le=4096)
    on_fail: Literal["exit", "retry", "continue"] = "exit"  # mmap refused with -ENOMEM


class FreeStep(_Model):
    """Free ``size`` bytes (or ``"all"``) of the process's anonymous memory."""

    op: Literal["free"]
    size: Annotated[Union[int, Literal["all"]], BeforeValidator(_size_or("all", positive=True))]


class ForkStep(_Model):
    """Start a child process (``clone_vm``: a thread-like child sharing the mm)."""

    op: Literal["fork"]
    comm: Optional[CommName] = None  # None: the parent's name
    clone_vm: Bool = False
    program: tuple[Step, ...] = ()
    on_fail: Literal["exit", "retry", "continue"] = "continue"  # fork refused with -ENOMEM


class ExitStep(_Model):
    op: Literal["exit"]
    code: Int = Field(0, ge=0, le=255)


class SleepStep(_Model):
    """Interruptible sleep (TASK_INTERRUPTIBLE)."""

    op: Literal["sleep"]
    time: DurationT


class ComputeStep(_Model):
    """Burn CPU for ``time`` (runnable the whole while)."""

    op: Literal["compute"]
    time: DurationT


class BlockStep(_Model):
    """Uninterruptible sleep (TASK_UNINTERRUPTIBLE), by default holding mmap_lock."""

    op: Literal["block"]
    time: DurationT
    hold_mmap_lock: Bool = True


class SetOomScoreAdjStep(_Model):
    op: Literal["set_oom_score_adj"]
    value: Int = Field(ge=-1000, le=1000)


class WriteStep(_Model):
    """Write to ``size`` bytes of the process's anonymous memory: pages still shared
    copy-on-write with its fork parent get private copies (each a new page)."""

    op: Literal["write"]
    size: PositiveSize
    chunk: Int = Field(32, ge=1, le=4096)


class RepeatStep(_Model):
    """Run ``steps`` ``times`` times (``None``, i.e. the key omitted: forever)."""

    op: Literal["repeat"]
    times: Optional[Int] = Field(None, ge=1)
    steps: Annotated[tuple[Step, ...], _check(bool, "must not be empty")]


Step = Annotated[Union[AllocStep, TouchFileStep, AccessStep, FreeStep, ForkStep, ExitStep, SleepStep,
                       ComputeStep, BlockStep, SetOomScoreAdjStep, RepeatStep, WriteStep],
                 Field(discriminator="op")]
STEP_TYPES: dict[str, type[_Model]] = {
    cls.model_fields["op"].annotation.__args__[0]: cls  # type: ignore[union-attr]
    for cls in (AllocStep, TouchFileStep, AccessStep, FreeStep, ForkStep, ExitStep, SleepStep,
                ComputeStep, BlockStep, SetOomScoreAdjStep, RepeatStep, WriteStep)
}
OPS: tuple[str, ...] = tuple(STEP_TYPES)
ForkStep.model_rebuild()
RepeatStep.model_rebuild()
