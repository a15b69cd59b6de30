"""A linear unmixing as MNE's ``ICA`` object, and ICLabel (mne-icalabel) on it.

:meth:`sepkit.IVAESeparator.to_mne_ica` reads the fitted unmixing, mixing,
mean and whitening off the estimator and hands them to :func:`build_ica`,
which writes them into an ``mne.preprocessing.ICA`` in MNE's own
representation: data are pre-whitened (divided by ``pre_whitener_``),
centred (``pca_mean_``), rotated into ``pca_components_`` and unmixed
(``unmixing_matrix_``, which acts on the first ``n_components_`` PCA
components)::

    sources = unmixing_matrix_ @ pca_components_[:n] @ (x / pre_whitener_ - pca_mean_)

With ``pre_whitener_`` all ones, ``pca_mean_`` the separator's channel mean
and ``unmixing_matrix_ @ pca_components_[:n]`` the separator's unmixing, MNE
computes the separator's sources; ``get_components`` (``pca_components_[:n].T
@ mixing_matrix_``) is its mixing when the mixing's columns lie in the span
of the unmixing's rows, which :func:`build_ica` checks. This module never
imports the estimator: arrays in, an ICA out.

:func:`label_ica` runs ICLabel through mne-icalabel (``pip install
sepkit[eeg]``), imported only when called.
"""

from __future__ import annotations

import warnings

import numpy as np

from .._check import check_option

# The seven ICLabel classes, in the column order of its probabilities
# (mne_icalabel.config.ICALABEL_METHODS_NUMERICAL_TO_STRING["iclabel"]).
ICLABEL_CLASSES = (
    "brain",
    "muscle artifact",
    "eye blink",
    "heart beat",
    "line noise",
    "channel noise",
    "other",
)
# What `sepkit separate --exclude iclabel` removes by default: every artefact
# class ("other" is ICLabel's class for mixtures it cannot name, so it stays).
ICLABEL_EXCLUDE = ("eye blink", "heart beat", "muscle artifact", "line noise", "channel noise")
# ... when ICLabel gives one of them this probability or more: a confident label
# (4 of 5 parts; the most probable class alone is often below 0.5 for mixtures).
ICLABEL_THRESHOLD = 0.8
# ICLabel was trained on components of data band-passed 1-100 Hz and referenced
# to the common average (Pion-Tonachini et al. 2019).
ICLABEL_BAND = (1.0, 100.0)
# ``ica.method`` of an exported separator. MNE fits nothing under this name: like
# its own "imported_eeglab" (mne.preprocessing.read_ica_eeglab) it marks a
# decomposition fitted elsewhere. No MNE computation on a fitted ICA reads it
# (transform, apply, get_components, the plots, find_bads_*), ICA.save writes it
# and read_ica restores it; mne-icalabel reads it only to warn that ICLabel was
# trained on extended infomax decompositions.
ICA_METHOD = "imported_sepkit"
# Largest relative residual of the checks that the ICA reproduces the unmixing
# and mixing: the separator's weights are float32 (relative precision 6e-8).
EXACT_RTOL = 1e-5
INSTALL_HINT = "pip install sepkit[eeg]"


def pca_from_whitening(whitening: np.ndarray, dewhitening: np.ndarray):
    """An orthonormal basis of the channels from a separator's whitening, and its variances.

    Parameters
    ----------
    whitening : ndarray, shape (rank, n_channels)
        Rows: the principal directions of the fitted data, divided by their
        scale (the strongest first).
    dewhitening : ndarray, shape (n_channels, rank)

    Returns
    -------
    components : ndarray, shape (n_channels, n_channels)
        Orthonormal rows: the normalised rows of ``whitening`` first (with
        their signs), then a basis of the directions the data do not span
        (e.g. the one an average reference removes).
    variances : ndarray, shape (n_channels,)
        The variance of the fitted data along each row, as the whitening
        holds it: ``dewhitening @ dewhitening.T`` taken along the rows. Exact
        for the directions the whitening scales by their own variance (the
        ``n_sources`` strongest; every channel with ``whiten=False``); for
        the weaker ones the separator keeps the ``n_sources``-th variance,
        an upper bound; 0 for the null directions.
    """
    rows = whitening / np.linalg.norm(whitening, axis=1, keepdims=True)
    # A complete QR keeps the nested spans of the rows and adds their complement.
    q, _ = np.linalg.qr(rows.T, mode="complete")
    rank = rows.shape[0]
    q[:, :rank] *= np.sign(np.sum(q[:, :rank] * rows.T, axis=0))
    components = q.T
    cov = dewhitening @ dewhitening.T
    variances = np.einsum("ij,jk,ik->i", components, cov, components)
    return components, np.maximum(variances, 0.0)


def pca_from_unmixing(unmixing: np.ndarray, data: np.ndarray, mean: np.ndarray):
    """An orthonormal basis whose first rows span ``unmixing``'s rows, and the variances of
    ``data`` (n_channels, n_times) along each row, about ``mean``."""
    q, _ = np.linalg.qr(unmixing.T, mode="complete")
    components = q.T
    centred = data - mean[:, None]
    variances = ((components @ centred) ** 2).mean(axis=1)
    return components, variances


def build_ica(
    unmixing: np.ndarray,
    mean: np.ndarray,
    info,
    *,
    components: np.ndarray,
    variances: np.ndarray,
    mixing: np.ndarray | None = None,
    exclude=(),
    fit_params: dict | None = None,
    n_iter: int | None = None,
    n_samples: int | None = None,
    reject: dict | None = None,
    epochs: bool = False,
):
    """A fitted ``mne.preprocessing.ICA`` whose sources are ``unmixing @ (x - mean)``.

    Parameters
    ----------
    unmixing : ndarray, shape (n_sources, n_channels)
        Sources per unit of each channel, in the units of the data.
    mean : ndarray, shape (n_channels,)
        Subtracted from the data before ``unmixing`` (``pca_mean_``).
    info : mne.Info
        Of the channels, in the order of ``unmixing``'s columns
        (``ica.info``, ``ica.ch_names``); its projectors are left out, since
        MNE's ICA applies the active ones before unmixing and the separator
        does not.
    components : ndarray, shape (n_channels, n_channels)
        Orthonormal rows (``pca_components_``), the first ``n_sources``
        spanning the rows of ``unmixing``.
    variances : ndarray, shape (n_channels,)
        The data's variance along each row (``pca_explained_variance_``).
    mixing : ndarray, shape (n_channels, n_sources), optional
        The sensor patterns ``get_components`` must give; checked.
    exclude : sequence of int
        ``ica.exclude``.
    fit_params : dict or None
        ``ica.fit_params``: what was fitted (JSON values without ``:`` or
        ``;``, which MNE's file format uses as separators).
    n_iter : int or None
        ``ica.n_iter_``.
    n_samples : int or None
        ``ica.n_samples_``: the samples fitted (None: not set).
    reject : dict or None
        ``ica.reject_``: fit's peak-to-peak rejection (``plot_properties``'
        ``reject="auto"`` reads it).
    epochs : bool
        Fitted on Epochs: ``ica.current_fit`` is ``"epochs"`` (else ``"raw"``).

    Returns
    -------
    ica : mne.preprocessing.ICA
        ``method`` is :data:`ICA_METHOD`; ``n_pca_components`` keeps every
        PCA component in ``apply``.

    Raises
    ------
    ValueError
        Where the rows of ``unmixing`` leave the span of the first
        ``n_sources`` components, or ``mixing`` is not what MNE would
        compute from them (no exact ICA exists).
    """
    import mne

    unmixing = np.asarray(unmixing, dtype=np.float64)
    n_sources, n_channels = unmixing.shape
    basis = components[:n_sources]
    square = unmixing @ basis.T
    _check_exact(unmixing, square @ basis, "the unmixing's rows leave the PCA components' span")
    square_mixing = np.linalg.pinv(square)
    if mixing is not None:
        _check_exact(mixing, basis.T @ square_mixing, "the mixing is not the unmixing's inverse")
    # MNE's constructor (and so read_ica) refuses n_components=1; None there means
    # "as many as fitted", which a fitted ICA of one source is.
    ica = mne.preprocessing.ICA(max_iter=1)
    ica.n_components = n_sources if n_sources > 1 else None
    ica.method = ICA_METHOD
    ica.fit_params = dict(fit_params or {})
    ica.max_iter = None
    ica.n_iter_ = n_iter
    ica.info = _ica_info(info)
    ica.ch_names = list(ica.info["ch_names"])
    ica.pre_whitener_ = np.ones((n_channels, 1))
    ica.pca_mean_ = np.asarray(mean, dtype=np.float64).copy()
    ica.pca_components_ = np.asarray(components, dtype=np.float64).copy()
    ica.pca_explained_variance_ = np.asarray(variances, dtype=np.float64).copy()
    ica.n_components_ = n_sources
    ica.n_pca_components = n_channels
    ica._max_pca_components = None
    ica.unmixing_matrix_ = square
    ica._update_mixing_matrix()
    ica._update_ica_names()
    ica.exclude = [int(k) for k in exclude]
    ica.reject_ = None if reject is None else dict(reject)
    if n_samples is not None:
        ica.n_samples_ = int(n_samples)
    ica.current_fit = "epochs" if epochs else "raw"  # what its repr says it decomposed
    return ica


def _check_exact(want: np.ndarray, got: np.ndarray, what: str) -> None:
    err = np.abs(want - got).max() / max(np.abs(want).max(), np.finfo(float).tiny)
    if not err <= EXACT_RTOL:
        raise ValueError(
            f"The decomposition cannot be written as an MNE ICA exactly: {what} (relative "
            f"residual {err:.2g}, above {EXACT_RTOL:g}). Pass components whose first "
            "n_sources rows span the unmixing's rows (pca_from_unmixing), and as mixing its "
            "pseudo-inverse or None."
        )


def _ica_info(info):
    import mne

    info = mne.pick_info(info, list(range(len(info["ch_names"]))), verbose="error")
    with info._unlock():
        info["projs"] = []
    return info


def unmixing_and_mixing(ica) -> tuple[np.ndarray, np.ndarray]:
    """(unmixing (n_sources, n_channels), mixing (n_channels, n_sources)) of ``ica``
    in the data's units (``pre_whitener_`` folded in)."""
    n = ica.n_components_
    scale = ica.pre_whitener_[:, 0]
    unmixing = ica.unmixing_matrix_ @ ica.pca_components_[:n] / scale[None, :]
    mixing = scale[:, None] * (ica.pca_components_[:n].T @ ica.mixing_matrix_)
    return unmixing, mixing


# ------------------------------------------------------------------ ICLabel
def require_icalabel():
    """mne_icalabel, or an ImportError that says how to install it."""
    try:
        import mne_icalabel
    except ImportError:
        raise ImportError(
            "ICLabel labelling needs the optional package mne-icalabel, which is not "
            f"installed. Install it with: {INSTALL_HINT} (or pip install mne-icalabel)."
        ) from None
    return mne_icalabel


def check_iclabel_classes(classes) -> tuple[str, ...]:
    """``classes`` (a comma-separated string or a sequence) as ICLabel class names."""
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",")]
    names = tuple(str(c).strip().lower() for c in classes)
    unknown = [c for c in names if c not in ICLABEL_CLASSES]
    if unknown or not names:
        raise ValueError(
            f"Invalid ICLabel class(es) {unknown or list(names)}. Allowed classes are "
            f"{', '.join(repr(c) for c in ICLABEL_CLASSES)}, comma-separated, e.g. "
            "'eye blink,heart beat'."
        )
    return names


def select_sources(probabilities: np.ndarray, classes, threshold: float) -> list[int]:
    """Sources whose ICLabel probability of one of ``classes`` is at least ``threshold``."""
    cols = [ICLABEL_CLASSES.index(c) for c in check_iclabel_classes(classes)]
    hit = (np.asarray(probabilities)[:, cols] >= threshold).any(axis=1)
    return [int(k) for k in np.flatnonzero(hit)]


def _is_average_referenced(info) -> bool:
    """The test mne-icalabel makes: an applied average reference, or an active projector."""
    from mne._fiff.proj import _has_eeg_average_ref_proj

    return bool(info["custom_ref_applied"]) or _has_eeg_average_ref_proj(info, check_active=True)


def _average_reference_matrix(info) -> np.ndarray:
    """C with C @ x the channels of ``info`` referenced as ``set_eeg_reference("average")``:
    each good EEG channel minus their mean; bad channels and other types unchanged."""
    import mne

    good = mne.pick_types(info, eeg=True, exclude="bads")
    C = np.eye(len(info["ch_names"]))
    C[np.ix_(good, good)] -= 1.0 / len(good)
    return C


def check_iclabel_channels(info, ch_names) -> None:
    """Refuse channels ICLabel cannot label: no EEG among them, or no positions."""
    import mne

    picked = mne.pick_info(info, [info["ch_names"].index(n) for n in ch_names], verbose="error")
    eeg = mne.pick_types(picked, eeg=True, exclude=[])
    if len(eeg) == 0:
        raise ValueError(
            "ICLabel labels EEG components, but none of the fitted channels is typed EEG "
            f"({list(ch_names)[:5]} ...). Fit the separator on EEG channels."
        )
    pos = np.array([picked["chs"][i]["loc"][:3] for i in eeg])
    if not (np.isfinite(pos).all() and np.abs(pos).sum(axis=1).all()):
        raise ValueError(
            "ICLabel reads each component's map off the electrode positions, but some fitted "
            "EEG channels have none. Set a montage first, e.g. "
            "raw = sepkit.io.apply_montage(raw, 'standard_1020')."
        )


def iclabel_inputs(raw, ica):
    """(inst, ica) for ICLabel: ``raw``'s fitted channels band-passed 1-100 Hz and
    average-referenced, on a copy, with the decomposition re-referenced alike.

    A RuntimeWarning says what was done. Re-referencing the data changes what
    an unmixing fitted on unreferenced data computes, so the maps are
    re-referenced as EEGLAB's ``pop_reref`` does before ICLabel (mixing ``C
    @ A``, unmixing its pseudo-inverse): on the re-referenced data its
    sources are the model's, up to the part of the data the model leaves
    unexplained.
    """
    inst = raw.copy().pick(ica.ch_names).load_data(verbose="error")
    done, ica_out = [], ica
    low, high = ICLABEL_BAND
    nyquist = inst.info["sfreq"] / 2
    l_freq = low if inst.info["highpass"] < low else None
    h_freq = high if min(nyquist, inst.info["lowpass"]) > high else None
    if l_freq is not None or h_freq is not None:
        inst.filter(l_freq, h_freq, verbose="error")
    band = f"{inst.info['highpass']:g}-{inst.info['lowpass']:g} Hz"
    if l_freq is not None or h_freq is not None:
        done.append(f"filtered to {band}")
    if inst.info["highpass"] > low or inst.info["lowpass"] < min(high, nyquist):
        done.append(f"left at {band}, narrower than {low:g}-{high:g} Hz (no filter widens it)")
    if nyquist <= high:
        done.append(
            f"not low-passed at {high:g} Hz (sampled at {2 * nyquist:g} Hz; ICLabel reads "
            f"the spectrum up to {nyquist:g} Hz)"
        )
    if not _is_average_referenced(inst.info):
        inst.del_proj()  # a pending projector: the model reads the data as they are
        C = _average_reference_matrix(inst.info)
        inst.set_eeg_reference("average", projection=False, verbose="error")
        ica_out = _rereferenced(ica, C, inst)
        done.append("re-referenced to the common average, and the separator's maps with it")
    if done:
        warnings.warn(
            "ICLabel expects EEG band-passed 1-100 Hz and referenced to the common average; "
            f"on a copy of the recording, the fitted channels were {'; '.join(done)}.",
            RuntimeWarning,
            stacklevel=4,
        )
    return inst, ica_out


def _rereferenced(ica, C: np.ndarray, inst):
    """``ica`` with its maps referenced by C (mixing C @ A, unmixing pinv(C @ A))."""
    _, mixing = unmixing_and_mixing(ica)
    mixing = C @ mixing
    sv = np.linalg.svd(mixing, compute_uv=False)
    if sv[-1] <= sv[0] * 1e-8:
        n_ref = int(np.linalg.matrix_rank(C))
        raise ValueError(
            "ICLabel needs the recording referenced to the common average, which leaves "
            f"rank {n_ref} to the {len(C)} fitted channels, but the separator has "
            f"n_sources={ica.n_components_}: the average reference merges some of their "
            "maps. Re-reference the recording before fitting "
            f"(raw.set_eeg_reference('average')) and fit at most {n_ref} sources."
        )
    unmixing = np.linalg.pinv(mixing)
    mean = C @ ica.pca_mean_
    components, variances = pca_from_unmixing(unmixing, inst.get_data(), mean)
    return build_ica(
        unmixing,
        mean,
        ica.info,
        components=components,
        variances=variances,
        mixing=mixing,
        fit_params=ica.fit_params,
        n_iter=getattr(ica, "n_iter_", None),
    )


def label_ica(raw, ica, *, backend: str | None = None) -> dict:
    """ICLabel's class probabilities for the components of ``ica`` on ``raw``.

    Parameters
    ----------
    raw : mne.io.Raw
        With the channels of ``ica`` and their positions (a montage).
    ica : mne.preprocessing.ICA
    backend : None, "torch" or "onnx"
        mne-icalabel's network backend; None takes the first installed.

    Returns
    -------
    result : dict
        ``labels`` (list of str, the most probable class per source),
        ``y_pred_proba`` (ndarray, shape (n_sources,), its probability, as
        ``mne_icalabel.label_components``), ``probabilities`` (ndarray,
        shape (n_sources, 7), every class; rows sum to 1) and ``classes``
        (the column names, :data:`ICLABEL_CLASSES`).
    """
    check_option("backend", backend, (None, "torch", "onnx"))
    require_icalabel()
    from mne_icalabel.iclabel import iclabel_label_components

    check_iclabel_channels(raw.info, ica.ch_names)
    # Passed only when chosen: older mne-icalabel releases have no such argument.
    extra = {} if backend is None else {"backend": backend}
    inst, ica = iclabel_inputs(raw, ica)
    with warnings.catch_warnings():
        # Said above, once, with what was done about it.
        for topic in ("is not filtered between", "common average reference"):
            warnings.filterwarnings("ignore", message=f".*{topic}")
        proba = iclabel_label_components(inst, ica, inplace=False, **extra)
    proba = np.asarray(proba, dtype=np.float64)
    best = proba.argmax(axis=1)
    return dict(
        labels=[ICLABEL_CLASSES[k] for k in best],
        y_pred_proba=proba[np.arange(len(best)), best],
        probabilities=proba,
        classes=ICLABEL_CLASSES,
    )
