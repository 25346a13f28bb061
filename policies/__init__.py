"""Kill policies: who the OOM killer picks, and userspace OOM killers.

``BUILTIN`` maps each built-in policy's name to its class; :mod:`policies.registry`
also finds third-party policies (entry-point group ``oomactors.policies``) and
``package.module:Name`` specs.  The API is :mod:`policies.api`.
"""

from .linux import Linux, Linux24, Linux310, Linux414, Linux419, Linux510, Linux2636
from .lmk import LmkAdjLevels
from .simple import AllocatingTask, LargestRss, Youngest
from .earlyoom import Earlyoom
from .systemd_oomd import SystemdOomd
from .oomd import Oomd
from .lmkd import Lmkd

BUILTIN: dict[str, type] = {p.name: p for p in (
    Linux, Linux24, Linux2636, Linux310, Linux414, Linux419, Linux510, AllocatingTask, LargestRss, Youngest,
    LmkAdjLevels, Earlyoom, SystemdOomd, Oomd, Lmkd)}

__all__ = ["BUILTIN", "Linux"]
