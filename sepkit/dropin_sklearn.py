"""A drop-in scikit-learn transformer for the linear iVAE, beside FastICA.

:class:`sepkit.IVAESeparator` follows MNE: X has shape (n_channels, n_times)
and its ``fit(X, u)`` reads the auxiliary variable where scikit-learn passes
``y``. :class:`IVAETransformer` wraps its linear model in scikit-learn's own
conventions (X of shape (n_samples, n_features), ``y`` ignored, u a keyword),
as python-picard's ``picard.dropin_sklearn.Picard`` wraps its solver, so that
it can replace :class:`sklearn.decomposition.FastICA` in a pipeline and passes
:func:`sklearn.utils.estimator_checks.check_estimator`.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_array, check_random_state
from sklearn.utils.validation import check_is_fitted

from ._check import check_int, check_option
from .separator import IVAESeparator

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6 has it as a private method

    def validate_data(estimator, X, **kwargs):
        return estimator._validate_data(X, **kwargs)


__all__ = ["IVAETransformer"]

# Relative eigenvalue below which a direction of the feature covariance is a
# numerical zero: the threshold of IVAESeparator's whitening, so that both
# agree on the rank of X.
_RANK_TOL = 1e-10


def _feature_rank(data: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, int]:
    """Mask of the non-constant features of ``data`` (n_samples, n_features), and its rank."""
    centred = data - mean
    # IVAESeparator's test for a flat channel, each feature against its own magnitude
    # (audit: one large-valued column, a timestamp, made the others constant).
    std = centred.std(axis=0)
    keep = std > 1e-12 * np.abs(data).max(axis=0)
    kept = centred[:, keep] / std[keep]
    if not kept.shape[1]:
        return keep, 0
    # On the correlations: the rank does not depend on the features' units (audit: an
    # income beside a ratio read as rank 2 of 3).
    evals = np.linalg.eigvalsh(kept.T @ kept / kept.shape[0])
    return keep, int((evals > evals[-1] * _RANK_TOL).sum())


class IVAETransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Linear iVAE source separation with scikit-learn's conventions (in FastICA's place).

    Fits the noiseless linear limit of the identifiable VAE of Khemakhem et
    al. (2020): ``x = A s + mean``, where the sources s are independent with
    a variance that changes from one segment of the data to the next. Their
    non-stationarity, not their non-Gaussianity as in FastICA, identifies
    them (up to order, sign and scale). The fit is
    :class:`sepkit.IVAESeparator` with ``mixing="linear"``: maximum
    likelihood with L-BFGS on the per-segment covariances of the
    ``n_components`` strongest principal components (the objective of Pham
    and Cardoso's separation of non-stationary sources); seconds, no network.

    The segments are the auxiliary variable u: ``fit(X, u=labels)`` takes one
    label per sample (task blocks, sessions, sleep stages); without u, the
    rows of X are cut into ``n_segments`` consecutive blocks. So the rows
    must be in time order: shuffling them spreads every segment over all
    blocks and removes the non-stationarity the model separates by.
    ``transform`` needs no u: the unmixing is one matrix for all segments.

    Parameters
    ----------
    n_components : int or None, default None
        Number of sources to estimate. None: one per feature, or, where
        features are constant or linearly dependent, one per independent
        direction (the rank of X), with a warning. The data are first reduced
        to their ``n_components`` strongest principal components, as FastICA
        does.
    n_segments : int or "auto", default "auto"
        Consecutive blocks of samples that ``fit`` cuts as segments when it
        gets no u (ignored when it does). "auto": ``4 (2 n_components + 1)``
        segments, more where they would exceed 1000 samples each (the rule of
        IVAESeparator's default windows: Thm. 1 of Khemakhem et al. 2020 needs
        ``2 n_components + 1`` distinct u, and four times that leaves each
        segment's variance room to differ). Either way each segment keeps at
        least ``n_components + 1`` samples: with fewer its covariance is
        singular and the likelihood unbounded, so short data get fewer
        segments, with a warning.
    prior : {"gauss", "extended", "gengauss"}, default "gauss"
        Source distribution within a segment. "gauss": the Gaussian prior of
        the iVAE, fitted on segment covariances (fast). "extended" and
        "gengauss" also separate sources whose variance hardly changes by
        their non-Gaussianity, as ICA does: "extended" with a super- or
        sub-Gaussian factor per source (a few passes over the samples),
        "gengauss" with a learned shape per source (slower: each iteration
        passes over all samples). See ``prior`` of :class:`sepkit.IVAESeparator`.
    random_state : None, int or numpy.random.RandomState, default None
        Accepted so that code written for FastICA runs unchanged; the fit is
        deterministic (L-BFGS from the principal components), so it changes
        nothing.

    Attributes
    ----------
    components_ : ndarray, shape (n_components, n_features)
        The unmixing in the original feature space: ``transform(X)`` is
        ``(X - mean_) @ components_.T``.
    mixing_ : ndarray, shape (n_features, n_components)
        The mixing matrix (sensor patterns), the pseudo-inverse of
        ``components_``: ``inverse_transform(S)`` is ``S @ mixing_.T + mean_``.
    mean_ : ndarray, shape (n_features,)
        The mean of each feature over the fitted samples.
    n_components_ : int
        The number of sources ``n_components`` resolved to.
    n_segments_ : int
        The number of segments (distinct u values) the fit used.
    n_iter_ : int
        L-BFGS iterations run.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str, shape (n_features_in_,)
        Names of the features seen in ``fit``, where X had string column
        names (a pandas DataFrame).

    See Also
    --------
    sepkit.IVAESeparator : The same model (and the nonlinear iVAE), with X of
        shape (n_channels, n_times), MNE Raw and Recording input.
    sklearn.decomposition.FastICA : ICA by non-Gaussianity, same interface.

    Notes
    -----
    The estimated sources have unit variance over the fitted samples. Their
    order and signs are those the fit converged to (deterministic for the
    same data).

    References
    ----------
    Khemakhem, Kingma, Monti, Hyvärinen (2020). Variational autoencoders and
    nonlinear ICA: a unifying framework. AISTATS.

    Pham, Cardoso (2001). Blind separation of instantaneous mixtures of
    nonstationary sources. IEEE Trans. Signal Processing 49(9).

    Examples
    --------
    >>> import numpy as np
    >>> from sepkit.dropin_sklearn import IVAETransformer
    >>> rng = np.random.default_rng(0)
    >>> scales = np.repeat(rng.uniform(0.2, 2.0, size=(30, 3)), 100, axis=0)
    >>> S = rng.laplace(size=(3000, 3)) * scales
    >>> X = S @ rng.normal(size=(3, 3)).T
    >>> ica = IVAETransformer(n_components=3, n_segments=30)
    >>> ica.fit_transform(X).shape
    (3000, 3)
    >>> ica.mixing_.shape
    (3, 3)
    """

    def __init__(
        self,
        n_components: int | None = None,
        *,
        n_segments: int | str = "auto",
        prior: str = "gauss",
        random_state=None,
    ):
        self.n_components = n_components
        self.n_segments = n_segments
        self.prior = prior
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # transform computes in the dtype of X (float32 stays float32, as FastICA).
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    @property
    def _n_features_out(self):
        """Number of output features, for ``get_feature_names_out``."""
        return self.components_.shape[0]

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None, *, u=None):
        """Fit the linear iVAE to X.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
            Training data, rows in time order (see the class docstring).
        y : None
            Ignored; the auxiliary variable is ``u``. Present for the
            scikit-learn API (pipelines pass their y to every step).
        u : None or array-like, shape (n_samples,)
            One segment label per sample (any values ``numpy.unique`` can
            sort). None: ``n_segments`` consecutive blocks of samples. In a
            pipeline, pass it as ``pipe.fit(X, ivaetransformer__u=u)``.

        Returns
        -------
        self : IVAETransformer
        """
        self._check_params()
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        n_samples, n_features = X.shape
        data = np.asarray(X, dtype=np.float64)
        mean = data.mean(axis=0)
        # Constant features carry no source; IVAESeparator refuses them, so
        # they are left out of its fit and get zero weight in components_.
        keep, rank = _feature_rank(data, mean)
        k = self._resolve_n_components(n_features, rank, int((~keep).sum()))
        codes = self._segment_codes(u, n_samples, k)
        n_segments = int(codes.max()) + 1
        # Thm. 1 of Khemakhem et al. (2020): n sources with k = 2 sufficient
        # statistics each (mean and variance) need n k + 1 distinct u.
        need = 2 * k + 1
        if n_segments < need:
            warnings.warn(
                f"The fit uses {n_segments} segments; identifiability of {k} components needs "
                f"at least {need} (2 n_components + 1, Thm. 1 of Khemakhem et al. 2020). Pass "
                "more samples, u with more distinct values, or a smaller n_components.",
                UserWarning,
                stacklevel=2,
            )
        sep = IVAESeparator(n_sources=k, mixing="linear", prior=self.prior, device="cpu")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sep.fit(data[:, keep].T, u=codes)
        for w in caught:
            if "u takes" in str(w.message) and "distinct values" in str(w.message):
                continue  # said above in this estimator's terms (segments, n_components)
            if "without converging" in str(w.message):
                # As scikit-learn's estimators say it (audit: a RuntimeWarning from inside
                # sepkit whose advice, longer windows, this estimator has no setting for).
                warnings.warn(
                    f"IVAETransformer's fit stopped after {sep.history_[-1].get('n_iter', 0)} "
                    "iterations without converging; the components may be off. Check X for "
                    "outliers, or pass fewer n_segments (longer segments) or u with "
                    "longer segments.",
                    ConvergenceWarning,
                    stacklevel=2,
                )
                continue
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        patterns = sep.get_components()  # (n_kept, k), in feature units
        self.mixing_ = np.zeros((n_features, k))
        self.mixing_[keep] = patterns
        # The separator's sources are W P (x - mean), with P its whitening to
        # the k strongest principal components, and its patterns are
        # P^+ W^-1 (columns of P^+ orthogonal): so their pseudo-inverse is
        # exactly that unmixing.
        self.components_ = np.zeros((k, n_features))
        self.components_[:, keep] = np.linalg.pinv(patterns)
        self.mean_ = mean
        self.n_components_ = k
        self.n_segments_ = n_segments
        self.n_iter_ = int(sep.history_[-1].get("n_iter", 0))
        return self

    def _check_params(self):
        if self.n_components is not None:
            check_int("n_components", self.n_components, min_value=1)
        if not (isinstance(self.n_segments, str) and self.n_segments == "auto"):
            if not isinstance(self.n_segments, numbers.Integral):
                raise TypeError(
                    "'n_segments' must be 'auto' or an integer >= 2, got "
                    f"{self.n_segments!r} ({type(self.n_segments).__name__})."
                )
            check_int("n_segments", self.n_segments, min_value=2)
        check_option("prior", self.prior, ("gauss", "extended", "gengauss"))
        check_random_state(self.random_state)  # validated, then unused (see the docstring)

    def _resolve_n_components(self, n_features: int, rank: int, n_flat: int) -> int:
        """``n_components_``: ``n_components``, or for None the rank of X."""
        flat = f", {n_flat} of them constant" if n_flat else ""
        if rank == 0:
            raise ValueError(
                f"X has rank 0: all its {n_features} features are constant, so there is "
                "nothing to separate. Pass data that vary."
            )
        if self.n_components is None:
            if rank < n_features:
                # As many sources as independent directions: more would need
                # whitening by a zero variance.
                warnings.warn(
                    f"X has rank {rank} ({n_features} features{flat}), so n_components=None "
                    f"fits {rank} components, one per independent direction. Pass "
                    "n_components to choose the number.",
                    UserWarning,
                    stacklevel=3,
                )
            return rank
        if self.n_components > n_features:
            raise ValueError(
                f"n_components={self.n_components} is more than the {n_features} features of X. "
                f"Pass n_components <= {n_features}, or None for one per feature."
            )
        if self.n_components > rank:
            raise ValueError(
                f"X has rank {rank} ({n_features} features{flat}), below "
                f"n_components={self.n_components}: only {rank} independent directions can be "
                f"separated. Pass n_components <= {rank}."
            )
        return int(self.n_components)

    def _segment_codes(self, u, n_samples: int, k: int) -> np.ndarray:
        """Segment index 0 .. n_segments - 1 of every sample, from u or consecutive blocks."""
        min_samples = k + 1  # a segment covariance of rank k needs k + 1 samples
        if u is not None:
            u = np.asarray(u)
            if u.ndim != 1 or u.shape[0] != n_samples:
                hint = " Use u.ravel() for a column." if u.ndim == 2 and 1 in u.shape else ""
                raise ValueError(
                    f"u must have shape (n_samples,) = ({n_samples},), one label per sample of "
                    f"X, got {u.shape} instead.{hint}"
                )
            labels, codes, counts = np.unique(u, return_inverse=True, return_counts=True)
            if labels.size < 2:
                raise ValueError(
                    f"u takes a single value ({labels[0]!r}), so the components are not "
                    "identifiable: the iVAE needs the source distribution to change with u. "
                    "Pass u with at least 2 values, or u=None to cut X into n_segments blocks."
                )
            small = labels[counts < min_samples]
            if small.size:
                raise ValueError(
                    f"u label(s) {small[:10].tolist()} cover fewer than n_components + 1 = "
                    f"{min_samples} samples; a segment needs that many for its covariance not "
                    "to be singular (the likelihood is unbounded otherwise). Merge them with "
                    "other labels, or pass a smaller n_components."
                )
            return codes.reshape(-1).astype(np.int64)

        most = n_samples // min_samples
        if most < 2:
            raise ValueError(
                f"X has {n_samples} samples, too few for n_components={k}: the fit needs at "
                f"least 2 segments of n_components + 1 = {min_samples} samples each "
                f"({2 * min_samples} samples). Pass more samples or a smaller n_components."
            )
        if self.n_segments == "auto":
            n_segments = min(max(4 * (2 * k + 1), -(-n_samples // 1000)), most)
        else:
            n_segments = int(self.n_segments)
            if n_segments > most:
                warnings.warn(
                    f"n_segments={n_segments} would leave segments of fewer than n_components "
                    f"+ 1 = {min_samples} samples in the {n_samples} samples of X; using "
                    f"{most} segments instead.",
                    UserWarning,
                    stacklevel=3,
                )
                n_segments = most
        # Equal consecutive blocks (sizes differ by at most one sample).
        return (np.arange(n_samples) * n_segments) // n_samples

    # ------------------------------------------------------------ transform
    def transform(self, X):
        """Estimate the sources of X.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)

        Returns
        -------
        S : ndarray, shape (n_samples, n_components), in the dtype of X
            (float32 or float64).
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return ((X - self.mean_) @ self.components_.T).astype(X.dtype, copy=False)

    def inverse_transform(self, X):
        """Map sources back to the feature space.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_components)
            Sources, as ``transform`` returns them.

        Returns
        -------
        X_original : ndarray, shape (n_samples, n_features), in the dtype of X
            The data where ``n_components`` is the number of features; their
            projection on the ``n_components`` separated directions otherwise.
        """
        check_is_fitted(self)
        S = check_array(X, dtype=[np.float64, np.float32])
        if S.shape[1] != self.n_components_:
            raise ValueError(
                f"X has {S.shape[1]} columns but the transformer has n_components_="
                f"{self.n_components_}. Pass the output of transform."
            )
        return (S @ self.mixing_.T + self.mean_).astype(S.dtype, copy=False)
