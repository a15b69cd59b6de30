"""sepkit._lazy: a module imported on the first attribute read, and not before."""

import copy

import pytest

from sepkit._lazy import LazyModule


def test_the_module_is_imported_on_first_attribute_read():
    stand_in = LazyModule("json")
    assert repr(stand_in) == "<LazyModule 'json' (not loaded)>"
    assert stand_in.dumps({"a": 1}) == '{"a": 1}'
    assert repr(stand_in) == "<LazyModule 'json' (loaded)>"


def test_probes_do_not_import_and_a_missing_module_fails_on_use():
    stand_in = LazyModule("sepkit_no_such_module")
    # copy and hasattr probe dunder names: they must not import anything.
    assert not hasattr(stand_in, "__wrapped__")
    copy.copy(stand_in)
    assert repr(stand_in) == "<LazyModule 'sepkit_no_such_module' (not loaded)>"
    with pytest.raises(ModuleNotFoundError, match="No module named 'sepkit_no_such_module'"):
        _ = stand_in.anything


def test_an_instance_made_without_init_fails_plainly():
    bare = LazyModule.__new__(LazyModule)
    with pytest.raises(AttributeError, match="dumps"):
        _ = bare.dumps
