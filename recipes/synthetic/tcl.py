"""Time-contrastive learning (TCL; Hyvärinen & Morioka 2016), the recipe's TCL baseline.

TCL learns a feature extractor h(x) by training it, with a multinomial
logistic regression on top, to tell which segment of the recording each
sample came from. For sources whose log-density is modulated by the segment
(here: Gaussian sources with a variance per segment), the paper's Theorem 1
says that at the optimum the last hidden layer is q(s) = (q(s_1), ..., q(s_n))
up to an invertible linear map, where q is the sufficient statistic of the
modulation (s_i^2 for a modulated Gaussian variance); linear ICA of the
features then recovers the q(s_i). TCL therefore identifies each source only
up to that pointwise statistic: its sign is lost. We score it against |s|
(what an absolute-value last layer, the paper's choice, estimates), and say so
in the results table.

The network follows the paper's simulation (Sec. 5): an MLP with maxout units
(pool size 2), as many hidden layers as set, a last layer of n_sources units
followed by the absolute value, and a linear softmax classifier of the
segment index. The optimiser (Adam with the learning-rate schedule of
sepkit's own training loops, instead of the paper's SGD with momentum over
7 x 10^4 steps) and the step budget are ours, chosen on seeds 100-102 so that
a fit costs about what the ELBO network's does. FastICA (scikit-learn) is the
final linear ICA, as in the paper's code.

References
----------
Hyvärinen, Morioka (2016). Unsupervised feature extraction by time-contrastive
learning and nonlinear ICA. NeurIPS.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.decomposition import FastICA
from torch import nn

from sepkit.train import _lr_factor


class _Maxout(nn.Module):
    """A linear layer to pool_size x n_out units, max over each pool."""

    def __init__(self, n_in: int, n_out: int, pool_size: int = 2):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out * pool_size)
        self.pool_size = pool_size

    def forward(self, x):
        out = self.linear(x)
        return out.view(*out.shape[:-1], -1, self.pool_size).amax(-1)


class TCLNet(nn.Module):
    """Feature MLP h(x) (maxout hidden layers, |.| last layer) and the segment classifier."""

    def __init__(self, n_dims: int, n_sources: int, n_segments: int, n_hidden: int, n_layers: int):
        super().__init__()
        layers, width = [], n_dims
        for _ in range(n_layers):
            layers.append(_Maxout(width, n_hidden))
            width = n_hidden
        self.hidden = nn.Sequential(*layers)
        self.last = nn.Linear(width, n_sources)
        self.classifier = nn.Linear(n_sources, n_segments)

    def features(self, x):
        return self.last(self.hidden(x)).abs()

    def forward(self, x):
        return self.classifier(self.features(x))


def fit_tcl(
    X: np.ndarray,
    u: np.ndarray,
    n_sources: int,
    *,
    seed: int,
    n_hidden: int = 64,
    n_layers: int = 3,
    n_steps: int = 5000,
    batch_size: int = 1024,
    lr: float = 0.01,
) -> np.ndarray:
    """TCL features of ``X`` (n_channels, n_times) after FastICA, shape (n_sources, n_times).

    ``u`` holds the segment index of every sample (n_times,). The features
    estimate |s_i| up to permutation and an invertible pointwise map.
    """
    torch.manual_seed(seed)
    x = np.asarray(X, dtype=np.float64).T
    # PCA whitening of the input, as the paper's code does before the MLP.
    x = x - x.mean(0)
    evals, evecs = np.linalg.eigh(np.cov(x.T))
    x = x @ evecs / np.sqrt(evals)
    xt = torch.from_numpy(x.astype(np.float32))
    labels = np.unique(np.asarray(u), return_inverse=True)[1]
    ut = torch.from_numpy(labels.astype(np.int64))
    net = TCLNet(x.shape[1], n_sources, int(ut.max()) + 1, n_hidden, n_layers)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    warmup = max(1, n_steps // 20)
    for step in range(n_steps):
        # Warm-up, then cosine decay to 5 %: sepkit's own training schedule.
        for group in opt.param_groups:
            group["lr"] = lr * _lr_factor(step, n_steps, warmup)
        idx = torch.randint(0, xt.shape[0], (batch_size,), generator=gen)
        loss = nn.functional.cross_entropy(net(xt[idx]), ut[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        feats = net.features(xt).double().numpy()
    ica = FastICA(n_sources, whiten="unit-variance", max_iter=1000, random_state=seed)
    return ica.fit_transform(feats).T
