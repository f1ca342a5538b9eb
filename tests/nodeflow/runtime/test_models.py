"""The model manager's device residency: LRU offload under a VRAM budget, and size parsing.

There is no GPU here, so the compute and offload devices are both the CPU and the budget is
simulated: where a module is, is the manager's own record, which is what the policy acts on.
"""

from __future__ import annotations

import gc
import logging
import subprocess
import sys

import pytest
import torch
from torch import nn

from nodeflow.runtime import Runtime
from nodeflow.runtime.models import ModelManager, default_budget, module_nbytes, parse_bytes

SIZE = 16 * 16 * 4 + 16 * 4  # an fp32 nn.Linear(16, 16): weight and bias
BUDGET = 2 * SIZE + SIZE // 2  # two of the three fit, not three


class Counted(nn.Linear):
    """A Linear that counts how often it is moved."""

    def __init__(self) -> None:
        super().__init__(16, 16)
        self.moves = 0

    def to(self, *args, **kwargs):  # type: ignore[override]
        self.moves += 1
        return super().to(*args, **kwargs)


@pytest.fixture
def abc() -> tuple[Counted, Counted, Counted]:
    torch.manual_seed(0)
    return Counted(), Counted(), Counted()


def manager(budget: int | None = BUDGET) -> ModelManager:
    return ModelManager(budget_bytes=budget, device="cpu", offload_device="cpu")


def moves(models: ModelManager, a: nn.Module, b: nn.Module, c: nn.Module) -> list[tuple]:
    """The manager's events, with the modules' default labels shown as a, b and c."""
    names = {f"Counted@{id(m):#x}": name for name, m in zip("abc", (a, b, c), strict=True)}
    return [(kind, names.get(label, label)) for kind, label in models.events]


def test_module_nbytes_counts_parameters_buffers_and_shared_storage_once():
    assert module_nbytes(nn.Linear(16, 16)) == SIZE
    norm = nn.BatchNorm1d(8)  # weight, bias; running mean, var (fp32) and a long counter
    assert module_nbytes(norm) == 4 * 8 * 4 + 8
    shared = nn.Linear(16, 16)
    assert module_nbytes(nn.Sequential(shared, shared)) == SIZE
    tied = nn.Sequential(nn.Linear(16, 16, bias=False), nn.Linear(16, 16, bias=False))
    tied[1].weight = tied[0].weight
    assert module_nbytes(tied) == 16 * 16 * 4
    assert module_nbytes(nn.Linear(16, 16).half()) == SIZE // 2


def test_resident_bytes_follow_a_dtype_change_without_a_budget(abc):
    a, b, _ = abc
    models = manager(None)
    models.use(a, b)
    assert models.resident_bytes() == 2 * SIZE
    a.half()  # use() no longer re-measures without a budget; the report still must be right
    models.use(a)
    assert models.resident_bytes() == SIZE + SIZE // 2


def test_a_budget_sees_a_dtype_change_at_the_next_use(abc):
    a, b, c = abc
    models = manager(2 * SIZE)
    models.use(a, b)
    a.half(), b.half(), c.half()
    models.use(a)
    models.use(b)
    models.use(c)  # three halves fit in two fp32 modules' budget only if use re-measured
    assert models.offloads == 0 and models.resident() == [a, b, c]


def test_least_recently_used_module_is_offloaded_to_fit_the_budget(abc):
    a, b, c = abc
    models = manager(BUDGET)
    models.use(a)
    models.use(b)
    assert models.resident() == [a, b] and models.offloads == 0
    models.use(c)
    assert models.resident() == [b, c]
    assert models.offloads == 1 and moves(models, a, b, c) == [("offload", "a")]
    assert models.resident_bytes() == 2 * SIZE

    models.use(a)
    assert models.resident() == [c, a]
    assert moves(models, a, b, c)[1:] == [("offload", "b"), ("load", "a")]
    assert models.offloads == 2


def test_a_module_used_again_while_resident_is_not_moved(abc):
    a, b, c = abc
    models = manager(BUDGET)
    models.use(a)
    models.use(b)
    before = (a.moves, b.moves)
    models.use(b)
    models.use(b)
    models.use(a)
    assert (a.moves, b.moves) == before
    assert models.offloads == 0 and not models.events
    assert models.resident() == [b, a]
    models.use(c)  # b, though used more often, was used less recently than a
    assert moves(models, a, b, c) == [("offload", "b")]
    assert a.moves == before[0]


def test_a_call_over_the_budget_keeps_its_modules_and_warns_once(abc, caplog):
    a, b, c = abc
    models = manager(SIZE + SIZE // 2)
    models.use(a)
    with caplog.at_level(logging.WARNING, logger="nodeflow.runtime.models"):
        models.use(b, c)  # together over the budget: a makes room, b and c stay
        models.use(b, c)
    assert models.resident() == [b, c]
    assert moves(models, a, b, c) == [("offload", "a")]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert f"Counted@{id(b):#x}" in message and f"Counted@{id(c):#x}" in message
    assert f"need {2 * SIZE} B" in message and f"VRAM budget of {SIZE + SIZE // 2} B" in message


def test_no_budget_never_offloads(abc):
    a, b, c = abc
    models = manager(None)
    for module in (a, b, c, a, c, b):
        models.use(module)
    assert models.offloads == 0 and not models.events
    assert models.resident() == [a, c, b]
    assert models.budget_bytes is None


def test_outputs_are_unchanged_after_offload_and_reload(abc):
    a, b, c = abc
    models = manager(BUDGET)
    x = torch.randn(4, 16)
    before = []
    for module in (a, b, c):
        models.use(module)
        before.append(module(x))
    for module in (a, b, c):  # each use offloads another, then reloads this one
        models.use(module)
    assert models.offloads == 4
    after = []
    for module in (a, b, c):
        models.use(module)
        after.append(module(x))
    assert all(torch.equal(x0, x1) for x0, x1 in zip(before, after, strict=True))


def test_modules_are_labelled_and_events_are_bounded():
    models = ModelManager(budget_bytes=0, device="cpu")
    first, second = nn.Linear(2, 2), nn.Linear(2, 2)
    models.use(first)
    models.use(second)
    assert models.events[-1] == ("offload", f"Linear@{id(first):#x}")
    for _ in range(600):
        models.use(first)
        models.use(second)
    assert len(models.events) == models.events.maxlen == 1000
    assert models.offloads == 1201


def test_a_garbage_collected_module_is_forgotten():
    models = manager(BUDGET)
    kept, dropped = nn.Linear(16, 16), nn.Linear(16, 16)
    models.use(dropped)
    models.use(kept)
    assert models.resident_bytes() == 2 * SIZE
    del dropped
    gc.collect()
    assert models.resident() == [kept] and models.resident_bytes() == SIZE
    models.use(nn.Linear(16, 16))  # fits: the dropped module's bytes are no longer counted
    assert models.offloads == 0
    assert len(models._entries) == 2


def test_a_registered_module_on_the_device_counts_before_its_first_use(abc):
    a, b, c = abc
    models = manager(BUDGET)
    models.register(a, label="unet")  # as a loader that put it on the device would
    models.use(b)
    assert models.resident() == [a, b]
    models.use(c)
    assert models.events[-1] == ("offload", "unet")
    assert models.resident() == [b, c]


def test_use_refuses_what_is_not_a_module():
    with pytest.raises(TypeError, match="torch modules"):
        ModelManager(device="cpu").use(torch.zeros(3))  # type: ignore[arg-type]


def test_get_still_loads_once():
    models = ModelManager(budget_bytes="1GB", device="cpu")
    assert models.budget_bytes == 10**9
    assert models.get("k", lambda: [1]) is models.get("k", lambda: [2])
    assert models.loads == 1 and len(models) == 1
    models.clear()
    assert len(models) == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("auto", None),
        (" AUTO ", None),
        ("0", 0),
        ("1048576", 1048576),
        ("100B", 100),
        ("2k", 2000),
        ("512MB", 512 * 10**6),
        ("512mb", 512 * 10**6),
        ("6GB", 6 * 10**9),
        ("6 GB", 6 * 10**9),
        ("6GiB", 6 * 2**30),
        ("1.5G", 1_500_000_000),
        ("1.5GiB", 3 * 2**29),
        ("256MiB", 2**28),
        ("1TB", 10**12),
        (".5GB", 5 * 10**8),
    ],
)
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1GB", "1.5", "6XB", "1e9", "GB", "6 G B", "6GBs"])
def test_parse_bytes_refuses_garbage(text):
    with pytest.raises(ValueError, match="invalid size"):
        parse_bytes(text)


def test_runtime_passes_its_budget_to_its_manager():
    assert Runtime("cpu", vram_budget="6GB").models.budget_bytes == 6 * 10**9
    assert Runtime("cpu", vram_budget=123).models.budget_bytes == 123
    auto = Runtime("cpu")
    assert auto.vram_budget is None and auto.models.budget_bytes is None  # no limit on cpu
    with pytest.raises(ValueError, match="invalid size"):
        Runtime(vram_budget="plenty")
    with pytest.raises(ValueError, match="negative"):
        Runtime(vram_budget=-1)


def test_default_budget_leaves_room_for_activations(monkeypatch):
    gib = 2**30
    assert default_budget(torch.device("cpu")) is None
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * gib, 24 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 2 * gib)
    assert default_budget(cuda) == 12 * gib - int(12 * gib * 0.2)  # 20% is more than 1 GiB
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (3 * gib, 4 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    assert default_budget(cuda) == 2 * gib  # 1 GiB is more than 20%


def test_the_engine_and_a_runtime_manager_do_not_import_torch():
    code = (
        "import sys\n"
        "import nodeflow.cli\n"
        "from nodeflow.runtime import Runtime\n"
        "models = Runtime(vram_budget='6GiB').models\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
