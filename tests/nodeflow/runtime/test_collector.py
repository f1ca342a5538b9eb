"""The cycle collector is paused while models load, and comes back as it was (issue 14)."""

from __future__ import annotations

import gc
import threading

import pytest

from nodeflow.runtime import collector
from nodeflow.runtime.models import ModelManager


@pytest.fixture(autouse=True)
def collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


def test_paused_turns_collection_off_for_the_block_and_nests():
    with collector.paused():
        assert not gc.isenabled()
        with collector.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off():
    gc.disable()
    with collector.paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_the_collector_is_back_after_an_exception():
    with pytest.raises(ZeroDivisionError), collector.paused():
        1 / 0  # noqa: B018
    assert gc.isenabled()


def test_overlapping_pauses_in_threads_end_with_the_last():
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with collector.paused():
            first_in.set()
            second_in.wait(5)
        seen["after first"] = gc.isenabled()
        first_out.set()

    def second():
        first_in.wait(5)
        with collector.paused():
            second_in.set()
            first_out.wait(5)
        seen["after second"] = gc.isenabled()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == {"after first": False, "after second": True}


def test_a_big_pause_is_followed_by_one_full_collection(monkeypatch):
    monkeypatch.setattr(collector, "COLLECT_AFTER", 1000)
    collections = []

    def watch(phase, info):
        if phase == "stop":
            collections.append(info["generation"])

    gc.callbacks.append(watch)
    try:
        with collector.paused():
            kept = [[index] for index in range(5000)]  # tracked objects, kept
        assert collections == [2]
        collections.clear()
        with collector.paused():
            small = [[1]]
        assert collections == []
    finally:
        gc.callbacks.remove(watch)
    assert len(kept) == 5000 and small


def test_the_model_manager_loads_with_the_collector_paused():
    manager = ModelManager(budget_bytes=None, device="cpu")
    states = []
    manager.get("a", lambda: states.append(gc.isenabled()) or "model")
    assert states == [False]
    assert gc.isenabled()
    assert manager.get("a", lambda: states.append("again")) == "model" and states == [False]
