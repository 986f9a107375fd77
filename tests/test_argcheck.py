"""The Python API's argument checks: one-line ConfigErrors naming the argument."""

import pytest

from convscope.argcheck import callback_or_none, config_of, flag
from convscope.errors import ConfigError
from convscope.style.config import StyleConfig
from convscope.vis.explain import ExplainConfig


def test_config_of_passes_the_right_kind_and_names_the_wrong_one():
    c = StyleConfig()
    assert config_of(c, StyleConfig) is c
    with pytest.raises(ConfigError, match=r"^config must be a StyleConfig, not dict; use StyleConfig\(\*\*d\)$"):
        config_of({"size": 64}, StyleConfig)
    with pytest.raises(ConfigError, match=r"^config must be an ExplainConfig or StyleConfig, not int \(see\)$"):
        config_of(3, ExplainConfig, StyleConfig, note=" (see)")


def test_callback_and_flag():
    f = print
    assert callback_or_none(None, "Progress") is None and callback_or_none(f, "Progress") is f
    with pytest.raises(ConfigError, match=r"^callback must be a function taking a Progress \(or None\), not int$"):
        callback_or_none(5, "Progress")
    assert flag(False, "resume") is False
    with pytest.raises(ConfigError, match=r"^resume must be True or False, not 'no'$"):
        flag("no", "resume")
