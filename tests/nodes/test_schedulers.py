"""The Scheduler node's few-step options: chosen timesteps and eta, refused where they mean
nothing, with the message naming the scheduler."""

from __future__ import annotations

import pytest

from nodes.schedulers import make_scheduler, parse_timesteps
from nodes.tiny import family_config

SD1 = family_config("sd1", "scheduler")


@pytest.mark.parametrize(
    "text, expected", [("", ()), ("22, 0", (22, 0)), ("999,500,3", (999, 500, 3))]
)
def test_chosen_timesteps_are_read_in_order(text, expected):
    assert parse_timesteps(text) == expected


@pytest.mark.parametrize("text", ["0, 22", "22, 22", "22; 0", "a", "5, -1"])
def test_timesteps_that_no_scheduler_can_run_are_refused(text):
    with pytest.raises(ValueError, match="timesteps"):
        parse_timesteps(text)


def test_chosen_timesteps_set_the_step_count():
    recipe = make_scheduler("lcm", SD1, steps=20, timesteps=(999, 499, 259))
    assert recipe.steps == 3 and recipe.timesteps == (999, 499, 259)


def test_a_scheduler_without_chosen_timesteps_says_so():
    with pytest.raises(ValueError, match=r"'pndm'.*chosen timesteps"):
        make_scheduler("pndm", SD1, steps=4, timesteps=(999, 0))


@pytest.mark.parametrize("name", ["ddim", "tcd"])
def test_eta_is_kept_where_the_step_takes_it(name):
    assert make_scheduler(name, SD1, steps=4, eta=0.3).eta == 0.3


@pytest.mark.parametrize("name", ["lcm", "tcd", "euler", "ddim"])
def test_keys_the_scheduler_ignores_are_dropped_once_not_warned_about_per_picture(
    name, monkeypatch
):
    """SD's PNDM config carries ``skip_prk_steps``, which ``lcm`` and ``tcd`` do not take:
    ``from_config`` ignores it but logged a warning on every ``create`` (once per picture).
    Dropped when the recipe is made, the scheduler built is the same."""
    import inspect

    import diffusers
    from diffusers import configuration_utils

    assert "skip_prk_steps" in SD1
    recipe = make_scheduler(name, SD1, 4)
    warned: list[str] = []
    monkeypatch.setattr(configuration_utils.logger, "warning", lambda m, *a, **k: warned.append(m))
    made = recipe.create()
    assert warned == []
    monkeypatch.undo()
    straight = recipe.cls.from_config(SD1)
    assert recipe.cls is getattr(diffusers, type(straight).__name__)
    taken = set(inspect.signature(recipe.cls.__init__).parameters) - {"self", "kwargs"}
    assert {k: made.config[k] for k in taken} == {k: straight.config[k] for k in taken}
    made.set_timesteps(4)
    straight.set_timesteps(4)
    assert made.timesteps.tolist() == straight.timesteps.tolist()
