"""setup_notebook's CPU thread count: measured once (1 thread vs torch's default), overridable by an env var."""

import pytest
import torch

from recursionlab.course import env as course_env


@pytest.fixture
def fresh_choice(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(course_env, "_THREAD_CHOICE", None)
    monkeypatch.delenv(course_env.THREADS_ENV_VAR, raising=False)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("speeds, expected", [({1: 300.0, 4: 40.0}, 1), ({1: 50.0, 4: 200.0}, 4)])
def test_the_faster_thread_count_wins_and_is_measured_once(fresh_choice, monkeypatch, speeds, expected):
    calls = []

    def fake_speed(threads, seconds):
        calls.append(threads)
        return speeds[threads]

    monkeypatch.setattr(course_env, "_steps_per_second", fake_speed)
    torch.set_num_threads(4)  # torch's default on a 4-core machine
    threads, why = course_env.choose_threads()
    assert threads == expected and torch.get_num_threads() == expected
    assert "faster than" in why
    assert course_env.choose_threads()[0] == expected and sorted(calls) == [1, 4]  # cached: no second measurement


def test_env_var_overrides_and_bad_values_are_named(fresh_choice, monkeypatch):
    monkeypatch.setenv(course_env.THREADS_ENV_VAR, "2")
    assert course_env.choose_threads() == (2, f"set by {course_env.THREADS_ENV_VAR}")
    assert torch.get_num_threads() == 2
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(course_env.THREADS_ENV_VAR, bad)
        with pytest.raises(ValueError, match=repr(bad)):
            course_env.choose_threads()


def test_the_workload_runs(fresh_choice):
    assert course_env._steps_per_second(1, seconds=0.02) > 0
