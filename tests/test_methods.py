"""sepkit.methods: the families by name, and the domain choice before any family is loaded."""

import numpy as np
import pytest

from sepkit.io import Recording
from sepkit.methods import FAMILIES, load_family, resolve_domain


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_loads_by_name_and_implements_the_protocol(name):
    family = load_family(name)
    assert family.NAME == name
    assert {"n_sources", "device"} <= set(family.PARAMS)
    for attr in ("fit", "from_state", "check_fit_params"):
        assert callable(getattr(family, attr))


def test_an_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Unknown model family 'pca'; the families are \["):
        load_family("pca")


def test_resolve_domain_without_measuring():
    eeg = Recording(np.zeros((3, 100), np.float32), 100.0, ("a", "b", "c"), "eeg")
    assert resolve_domain("auto", "recording", eeg) == ("time", None)
    assert resolve_domain("auto", "raw", None) == ("time", None)
    assert resolve_domain("tf", "recording", eeg) == ("tf", None)
    with pytest.raises(ValueError, match=r"init= fine-tunes a time-domain model, but domain='tf'"):
        resolve_domain("tf", "recording", eeg, init=object())


def test_every_family_says_which_fit_keywords_it_honours():
    from sepkit.methods import FAMILIES, load_family

    hooks = {name: load_family(name).HOOKS for name in FAMILIES}
    assert all(h <= {"device", "resume", "callback"} for h in hooks.values())
    # The torch families train in steps on a device; the others run on the CPU at once.
    assert hooks["network"] == hooks["flow"] == {"device", "resume", "callback"}
    assert not hooks["linear"] and not hooks["tf"] and not hooks["tf_pretrained"]


def test_every_mixing_names_a_family_that_resolves_its_prior():
    # The one list of mixings (audit: the estimator, the file schema and the command
    # line each kept their own). A family chosen by a mixing says what "auto" means
    # for its prior and whether it is fitted by exact likelihood (EXACT: the words of
    # the error about an option that needs the ELBO network).
    from sepkit.cli import build_parser
    from sepkit.methods import MIXINGS
    from sepkit.serialization import _MIXINGS

    assert set(MIXINGS.values()) <= set(FAMILIES)
    assert _MIXINGS == tuple(MIXINGS)
    separate = build_parser()._subparsers._group_actions[0].choices["separate"]
    mixing = next(a for a in separate._actions if a.dest == "mixing")
    assert tuple(mixing.choices) == ("auto", *MIXINGS)
    for name in set(MIXINGS.values()):
        family = load_family(name)
        exact = family.EXACT
        assert exact is None or set(exact) == {"priors", "prior", "decoder_u", "fit", "does"}
        for is_eeg in (False, True):
            prior, posterior = family.resolve_prior("auto", "auto", is_eeg)
            assert prior != "auto" and posterior in ("diag", "full")
    assert load_family("linear").resolve_prior("auto", "auto", True) == ("extended", "diag")
    assert load_family("network").resolve_prior("auto", "auto", True) == ("laplace", "diag")
    assert load_family("network").resolve_prior("auto", "auto", False) == ("gauss", "full")
    assert load_family("network").EXACT is None
