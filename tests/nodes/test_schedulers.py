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
