"""The ``[source_model]`` form of ``python -m sepkit.train``: a speech source prior.

Trains a :class:`~sepkit.models.SpeechSourcePrior` on clean single-source
windows of a corpus (:class:`sepkit.data.WindowCorpus`) and writes it as a
model folder that ``IVAESeparator(source_model=...)`` loads::

    out = "models/ivae-speech-16k-v2"   # a new model folder (never overwritten)

    [data]
    corpus = {files = ["a.flac", "b.flac"], window_seconds = 2.0, hop_seconds = 0.5,
              sample_rate = 16000, channels = "mean"}

    [source_model]
    n_fft = 4096          # STFT frame (the model's input is n_fft // 2 + 1 bins)
    hop = 1024
    segment_seconds = 1.0 # u: the segment of every frame
    n_latent = 16
    n_hidden = 128
    kernel_size = 5
    batch_size = 16
    n_steps = 4000
    lr = 2e-3
    seed = 0

Under ``torchrun`` each rank reads its own shard of the corpus (the corpus
reads the rank from the process group) and DistributedDataParallel averages
the gradients; rank 0 writes the folder. The recipe
``recipes/speech_source_model`` adds reverberation augmentation, which needs
pyroomacoustics; this form trains on the windows as they are.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..data import WindowCorpus
from ..models import SpeechSourcePrior
from ..pretrained import check_model_name, export_source_model
from ..train.source_prior import train_source_prior

__all__ = ["SOURCE_MODEL_KEYS", "check_source_model", "run"]

# [source_model] keys and their defaults (those of recipes/speech_source_model).
SOURCE_MODEL_KEYS = dict(
    n_fft=4096,
    hop=1024,
    segment_seconds=1.0,
    n_latent=16,
    n_hidden=128,
    kernel_size=5,
    batch_size=16,
    n_steps=4000,
    lr=2e-3,
    seed=0,
)


def check_source_model(cfg: dict, config: Path) -> dict:
    """[source_model] with defaults filled in; its corpus and out, checked before training."""
    spec = cfg["source_model"]
    unused = [key for key in ("checkpoint_dir", "resume", "overwrite") if key in cfg]
    if unused:  # the [model] form's keys: a source model trains in one go, never over
        raise ValueError(
            f"{unused} in {config} apply to the [model] form; the [source_model] form keeps "
            "no checkpoints and never overwrites a model folder. Drop them."
        )
    unknown = sorted(set(spec) - set(SOURCE_MODEL_KEYS))
    if unknown:
        raise ValueError(
            f"[source_model] of {config} has unknown key(s) {unknown}; allowed are "
            f"{sorted(SOURCE_MODEL_KEYS)}."
        )
    if "corpus" not in cfg["data"] or "sample_rate" not in cfg["data"]["corpus"]:
        raise ValueError(
            f"[source_model] in {config} trains on windows of a corpus at one rate: give "
            "[data] corpus = {files = [...], window_seconds = 2.0, sample_rate = 16000, "
            'channels = "mean"}.'
        )
    out = config.parent / cfg["out"]
    if not out.parent.is_dir():  # as the [model] form: no folder is made for 'out'
        raise FileNotFoundError(
            f"The folder {out.parent} of 'out' in {config} does not exist. Create it first."
        )
    try:  # the folder's name is the model's: checked now, not after training
        check_model_name(out.name)
    except ValueError as err:
        raise ValueError(f"'out' in {config}: {err}") from None
    if out.exists():
        raise FileExistsError(
            f"'out' in {config} ({out}) exists, and a model folder is never overwritten. "
            "Name a new folder (e.g. the next -vN)."
        )
    settings = {**SOURCE_MODEL_KEYS, **spec}
    for key in ("n_fft", "hop", "n_latent", "n_hidden", "kernel_size", "batch_size", "n_steps"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"{key} in [source_model] of {config} must be an integer >= 1, got {value!r}."
            )
    seed = settings["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(
            f"seed in [source_model] of {config} must be an integer >= 0, got {seed!r}."
        )
    for key in ("lr", "segment_seconds"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(
                f"{key} in [source_model] of {config} must be a number > 0, got {value!r}."
            )
    if settings["hop"] > settings["n_fft"]:
        raise ValueError(
            f"hop ({settings['hop']}) in [source_model] of {config} must be at most n_fft "
            f"({settings['n_fft']}), or frames would skip samples."
        )
    return settings


def run(cfg: dict, config: Path, paths: list[Path], s: dict) -> int:
    """Train the source prior of ``cfg`` on ``paths`` (checked files); rank 0 writes it.

    ``s``: the settings :func:`check_source_model` returned.
    """
    corpus_args = {k: v for k, v in cfg["data"]["corpus"].items() if k != "files"}
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        torch.distributed.init_process_group(backend="gloo")
    try:
        try:
            corpus = WindowCorpus(paths, seed=s["seed"], n_epochs=None, **corpus_args)
        except (TypeError, ValueError) as err:
            raise type(err)(f"'corpus' in [data] of {config}: {err}") from None
        if corpus.dataset.n_channels != 1:
            raise ValueError(
                f"The corpus of {config} has {corpus.dataset.n_channels} channels; a source model "
                'learns single sources: add channels = "mean" to the corpus table.'
            )
        torch.manual_seed(s["seed"])  # the same initial weights on every rank
        model = SpeechSourcePrior(
            s["n_fft"] // 2 + 1, s["n_latent"], s["n_hidden"], s["kernel_size"]
        )
        loader = torch.utils.data.DataLoader(corpus, batch_size=s["batch_size"])
        rate = float(corpus.dataset.sample_rate)
        segment_frames = max(1, round(s["segment_seconds"] * rate / s["hop"]))
        history = train_source_prior(
            model,
            (batch["window"][:, 0] for batch in loader),
            n_fft=s["n_fft"],
            hop=s["hop"],
            segment_frames=segment_frames,
            n_steps=s["n_steps"],
            lr=s["lr"],
            seed=s["seed"] + rank,
        )
        if rank == 0:
            out = config.parent / cfg["out"]
            export_source_model(
                model,
                out.name,
                root=out.parent,
                sample_rate=rate,
                n_fft=s["n_fft"],
                hop=s["hop"],
                segment_frames=segment_frames,
                config={"recipe": f"python -m sepkit.train {config.name}", "training": s},
                card=f"# {out.name}\n\nA speech source model trained by `python -m sepkit.train "
                f"{config.name}`; sha256 {{sha256}}.\n",
            )
            print(f"saved {out} ({history[-1]['step']} steps, world size {world})")
        if world > 1:
            # Every rank leaves together: one that tears its group down while rank 0
            # still writes the model could abort in gloo's teardown.
            torch.distributed.barrier()
    finally:
        if world > 1:
            torch.distributed.destroy_process_group()
    return 0
