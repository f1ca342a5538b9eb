"""The model manager: a model file is loaded once per process and shared by every node and run.

Models are keyed by what identifies their bytes (resolved path, size, mtime) plus how they were
loaded (dtype, device), so editing a file on disk loads the new one, while two nodes (or two
runs) naming the same file share one copy of its weights. Loaded models are owned here, not by
the output cache, whose budget they would otherwise blow.

The manager also decides which torch modules sit on the compute device. A node calls
``use(module, ...)`` right before computing with modules; they are moved to the device if they
are not there, and if the weights on the device then exceed the VRAM budget, the least recently
used other modules are moved to the offload device (the CPU). A workflow whose models together
do not fit (SD + refiner + ControlNets on an 8 GB card) then runs, paying a transfer instead of
failing with an out-of-memory error.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from nodeflow.runtime import collector

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
M = TypeVar("M", bound="torch.nn.Module")

log = logging.getLogger(__name__)

ACTIVATION_RESERVE_FRACTION = 0.2
"""Share of the usable VRAM the automatic budget leaves to activations (not weights)."""
ACTIVATION_RESERVE_MIN = 1 << 30
"""Least VRAM the automatic budget leaves to activations: a 512x512 SD step's attention alone
takes hundreds of MB, so 20% of a small card is not enough."""
EVENTS_KEPT = 1000

_UNITS = {
    "": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]i?)?b?", re.IGNORECASE)
SIZE_HELP = (
    "'auto', a number of bytes, or a number with a unit: KB, MB, GB, TB are powers of 1000 "
    "(the bare K, M, G, T too), KiB, MiB, GiB, TiB powers of 1024; e.g. 6GB, 5.5GiB, 512MB"
)


def parse_bytes(text: str) -> int | None:
    """A size from the command line in bytes, or None for ``auto`` (the device's default).

    Decimal units (GB = 10**9) are what card vendors and most people mean by "an 8 GB card";
    the binary ones (GiB = 2**30) are what ``nvidia-smi`` and torch report, so both are taken.
    """
    stripped = text.strip()
    if stripped.lower() == "auto":
        return None
    match = _SIZE.fullmatch(stripped)
    if match is None:
        raise ValueError(f"invalid size {text!r}: expected {SIZE_HELP}")
    number, unit = match.groups()
    multiplier = _UNITS[(unit or "").lower()]
    if multiplier == 1 and "." in number:
        raise ValueError(f"invalid size {text!r}: a number of bytes must be whole")
    return round(float(number) * multiplier) if "." in number else int(number) * multiplier


def file_identity(path: str | Path) -> tuple[str, int, int]:
    """(resolved path, size, mtime_ns) of a file, or of a folder's newest file."""
    path = Path(path).resolve()
    if path.is_dir():
        size, mtime = 0, 0
        for root, _, files in os.walk(path):
            for name in files:
                stat = os.stat(os.path.join(root, name))
                size += stat.st_size
                mtime = max(mtime, stat.st_mtime_ns)
        return str(path), size, mtime
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns


def module_nbytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers, counting a storage they share only once.

    Whole storages are counted, not tensor sizes: tied weights (an embedding shared with an
    output layer) take memory once, and a view keeps its whole storage on the device.
    """
    seen: set[tuple[int, str]] = set()
    total = 0
    for tensor in chain(module.parameters(), module.buffers()):
        try:
            storage = tensor.untyped_storage()
            pointer, size = storage.data_ptr(), storage.nbytes()
        except (RuntimeError, NotImplementedError, TypeError):  # tensor subclasses, meta
            total += tensor.nelement() * tensor.element_size()
            continue
        if pointer == 0:  # no memory behind it (empty, meta): nothing to share
            total += size
            continue
        key = (pointer, str(tensor.device))
        if key not in seen:
            seen.add(key)
            total += size
    return total


def default_budget(device: torch.device) -> int | None:
    """The automatic VRAM budget for weights on ``device``: None (unlimited) off CUDA.

    On CUDA: what this process can use, i.e. the driver's free memory plus what torch's
    allocator already holds here (mostly the weights of models loaded before the first
    ``use``, which the free memory alone would count against the budget), less a reserve for
    activations of 20% of that or 1 GiB, whichever is larger. On the CPU and MPS weights share
    the system's memory, so moving them elsewhere frees nothing.
    """
    import torch

    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    usable = free + torch.cuda.memory_reserved(device)
    reserve = max(ACTIVATION_RESERVE_MIN, int(usable * ACTIVATION_RESERVE_FRACTION))
    return max(usable - reserve, 0)


@dataclass
class _Entry:
    """What the manager knows of one module: the module itself is only weakly referenced."""

    ref: weakref.ref[Any]
    label: str
    nbytes: int
    on_device: bool


class ModelManager:
    """Loaded models, shared across nodes and runs, and which modules sit on the device.

    ``budget_bytes`` caps the bytes of weights on the compute ``device``: None is unlimited,
    ``"auto"`` (or any size string for ``parse_bytes``) is resolved at the first ``use`` with
    ``default_budget``. ``device`` None or ``"auto"`` means what ``pick_device`` chooses.

    Where a module is, is the manager's own record, not read back from the tensors (except
    once, when it first sees a module): a module is on the device after ``use`` moved it there
    and off it after an offload. That keeps the policy testable on a CPU-only machine with
    ``device="cpu"``, ``offload_device="cpu"`` and a small budget.
    """

    def __init__(
        self,
        budget_bytes: int | str | None = None,
        device: Any = None,
        offload_device: Any = "cpu",
    ) -> None:
        if isinstance(budget_bytes, str):
            parsed = parse_bytes(budget_bytes)
            budget_spec: int | Literal["auto"] | None = "auto" if parsed is None else parsed
        else:
            budget_spec = budget_bytes
        if isinstance(budget_spec, int) and budget_spec < 0:
            raise ValueError(f"budget_bytes must not be negative, got {budget_spec}")
        self._budget_spec = budget_spec
        self._budget: int | None = None
        self._budget_resolved = budget_spec != "auto"
        if self._budget_resolved:
            self._budget = budget_spec  # type: ignore[assignment]
        self._device_spec = device
        self._device: Any = None
        self._offload_spec = offload_device
        self._offload: Any = None

        self._models: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.RLock()
        self.loads = 0
        """How many times a loader actually ran (tests assert sharing with it)."""

        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        """Registered modules by id, least recently used first."""
        self._dead: deque[tuple[int, weakref.ref[Any]]] = deque()
        """Refs whose module was collected; purged under the lock (a GC callback can run in
        the middle of any operation, even one iterating ``_entries`` on this very thread)."""
        self._warned: set[tuple[str, ...]] = set()
        self.offloads = 0
        """How many times a module was moved off the device to make room."""
        self.events: deque[tuple[str, str]] = deque(maxlen=EVENTS_KEPT)
        """Recent moves, oldest first: ("load" | "offload", label)."""

    # --- loading ---------------------------------------------------------------------------

    def get(self, key: Hashable, loader: Callable[[], T]) -> T:
        """The model under ``key``, loading it with ``loader()`` the first time (with the cycle
        collector paused: a load makes long-lived objects, see ``collector``)."""
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        with collector.paused():
            model = loader()
        with self._lock:
            self.loads += 1
            self._models[key] = model
            return model

    def __len__(self) -> int:
        return len(self._models)

    def clear(self) -> None:
        with self._lock:
            self._models.clear()

    # --- device residency ------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """The compute device (resolved, and torch imported, on first access)."""
        with self._lock:
            if self._device is None:
                self._device = _resolve_device(self._device_spec)
            return self._device

    @property
    def offload_device(self) -> torch.device:
        """Where modules go to make room on the compute device."""
        with self._lock:
            if self._offload is None:
                self._offload = _resolve_device(self._offload_spec)
            return self._offload

    @property
    def budget_bytes(self) -> int | None:
        """Bytes of weights allowed on the device (None: unlimited); ``auto`` resolves here."""
        with self._lock:
            if not self._budget_resolved:
                self._budget = default_budget(self.device)
                self._budget_resolved = True
                log.info("VRAM budget for weights on %s: %s", self.device, _size(self._budget))
            return self._budget

    def register(self, module: M, label: str | None = None) -> M:
        """Track ``module`` under a readable ``label`` without moving it; returns it.

        A loader that puts weights straight on the device can register them, so they count
        against the budget before their first ``use``. A new module's place is read from its
        tensors; it becomes the least recently used.
        """
        with self._lock:
            self._purge()
            self._entry(module, label)
            return module

    def use(self, *modules: torch.nn.Module) -> None:
        """Put ``modules`` on the compute device, making room under the budget if needed.

        Called by a node right before it computes with them. Other modules are offloaded,
        least recently used first, until the weights on the device fit the budget; the ones
        named here are never offloaded by their own call, so if they alone exceed the budget
        they stay (with a warning, once per combination) and the run may still fit.
        """
        import torch

        for module in modules:
            if not isinstance(module, torch.nn.Module):
                raise TypeError(f"use() takes torch modules, got {type(module).__name__}")
        with self._lock:
            self._purge()
            device, budget = self.device, self.budget_bytes
            called: dict[int, tuple[torch.nn.Module, _Entry]] = {}
            for module in modules:
                entry = self._entry(module)
                if budget is not None:  # a dtype change alters it; only a budget needs it now
                    entry.nbytes = module_nbytes(module)
                self._entries.move_to_end(id(module))
                called[id(module)] = (module, entry)
            if budget is not None:
                self._make_room(budget, called)
            for module, entry in called.values():
                if not entry.on_device:
                    module.to(device)
                    entry.on_device = True
                    self.events.append(("load", entry.label))

    def resident(self) -> list[torch.nn.Module]:
        """The tracked modules on the compute device, least recently used first."""
        with self._lock:
            self._purge()
            return [
                module
                for entry in self._entries.values()
                if entry.on_device and (module := entry.ref()) is not None
            ]

    def resident_bytes(self) -> int:
        """Bytes of the tracked modules on the compute device, measured now.

        Without a budget ``use`` does not re-measure (walking every tensor of a model on each
        node call cost several percent of a few-step picture), so a report measures here."""
        with self._lock:
            self._purge()
            for entry in self._entries.values():
                module = entry.ref()
                if entry.on_device and module is not None:
                    entry.nbytes = module_nbytes(module)
            return sum(e.nbytes for e in self._entries.values() if e.on_device)

    def _make_room(self, budget: int, called: dict[int, tuple[Any, _Entry]]) -> None:
        """Offload least recently used modules not in ``called`` until the device fits."""
        needed = sum(entry.nbytes for _, entry in called.values())
        needed += sum(
            e.nbytes for key, e in self._entries.items() if e.on_device and key not in called
        )
        for key, entry in list(self._entries.items()):
            if needed <= budget:
                return
            if key in called or not entry.on_device:
                continue
            module = entry.ref()
            if module is not None:
                module.to(self.offload_device)
            entry.on_device = False
            needed -= entry.nbytes
            self.offloads += 1
            self.events.append(("offload", entry.label))
        if needed > budget:
            labels = tuple(sorted(entry.label for _, entry in called.values()))
            if labels not in self._warned:
                self._warned.add(labels)
                log.warning(
                    "%s need %s on %s, over the VRAM budget of %s; keeping them there anyway",
                    ", ".join(labels),
                    _size(needed),
                    self.device,
                    _size(budget),
                )

    def _entry(self, module: Any, label: str | None = None) -> _Entry:
        """The record for ``module``, made on first sight (call with the lock held)."""
        key = id(module)
        entry = self._entries.get(key)
        if entry is not None and entry.ref() is module:
            if label is not None:
                entry.label = label
            return entry
        dead = self._dead

        def forget(ref: weakref.ref[Any], key: int = key) -> None:
            dead.append((key, ref))  # deque.append is atomic: safe from any thread, any time

        entry = _Entry(
            ref=weakref.ref(module, forget),
            label=label or f"{type(module).__name__}@{key:#x}",
            nbytes=module_nbytes(module),
            on_device=_is_on(module, self.device),
        )
        self._entries[key] = entry  # replaces a dead module's record that had the same id
        self._entries.move_to_end(key, last=False)
        return entry

    def _purge(self) -> None:
        """Forget the modules that were garbage collected (call with the lock held)."""
        while self._dead:
            key, ref = self._dead.popleft()
            entry = self._entries.get(key)
            if entry is not None and entry.ref is ref:
                del self._entries[key]


def _resolve_device(spec: Any) -> torch.device:
    """A torch device for ``spec``; a bare ``cuda`` gets the current index, as tensors do."""
    import torch

    from nodeflow.runtime.device import pick_device

    if spec is None or isinstance(spec, str):
        device = pick_device(spec or "auto")
    else:
        device = torch.device(spec)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _is_on(module: Any, device: Any) -> bool:
    """Whether a module's first tensor is on ``device`` (one without tensors is anywhere)."""
    first = next(chain(module.parameters(), module.buffers()), None)
    if first is None:
        return True
    where = first.device
    if where.type != device.type:
        return False
    return where.index is None or device.index is None or where.index == device.index


def _size(nbytes: int | None) -> str:
    if nbytes is None:
        return "unlimited"
    if nbytes >= 2**30:
        return f"{nbytes / 2**30:.2f} GiB"
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes} B"
