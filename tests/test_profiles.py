import pytest

from recursionlab import profiles
from recursionlab.profiles import (
    PROFILES,
    UnknownProfileError,
    active_profile,
    by_profile,
    check_profile,
    use_profile,
)


def test_env_var_selects_profile(monkeypatch):
    for name in PROFILES:
        monkeypatch.setenv("RECURSIONLAB_PROFILE", name.upper())
        assert active_profile() == name


def test_unknown_profile_names_value_and_choices(monkeypatch):
    monkeypatch.setenv("RECURSIONLAB_PROFILE", "huge")
    with pytest.raises(UnknownProfileError) as err:
        active_profile()
    assert "'huge'" in str(err.value)
    for name in PROFILES:
        assert name in str(err.value)


def test_hardware_default(monkeypatch):
    monkeypatch.delenv("RECURSIONLAB_PROFILE", raising=False)
    monkeypatch.setattr(profiles, "_cuda_available", lambda: True)
    assert active_profile() == "gpu"
    monkeypatch.setattr(profiles, "_cuda_available", lambda: False)
    assert active_profile() == "laptop"


def test_by_profile_and_context():
    assert by_profile(1, 2, 3, profile="smoke") == 1
    assert by_profile(1, 2, 3, profile="gpu") == 3
    with use_profile("laptop"):
        assert by_profile(1, 2, 3) == 2
    with pytest.raises(UnknownProfileError):
        check_profile("paper-scale")
