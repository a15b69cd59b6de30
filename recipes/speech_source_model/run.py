"""Speech source-model recipe: a pretrained iVAE source prior for reverberant speech.

Stages:
  1 corpus    apt-get download + dpkg -x the Debian speech packages, decode them to a
              16 kHz FLAC corpus with a speaker-disjoint split (corpus.py)
  2 train     train the convolutional iVAE source model on the train split
  3 prepare   simulate the evaluation rooms (validation speakers and CMU ARCTIC)
  4 fit       separate every mixture with every method; one JSON per fit
  5 report    the results table (EXP/results.md)

Usage (from the repository root):
  python recipes/speech_source_model/run.py
  python recipes/speech_source_model/run.py --config recipes/speech_source_model/conf/tiny.toml
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from corpus import LICENCES, build, read_manifest, summary  # noqa: E402
from evaluate import stage_fit, stage_prepare, stage_report  # noqa: E402
from train_stage import train  # noqa: E402

from sepkit._recipe import load_config, recipe_parser, run_stages  # noqa: E402


def cache_dir(cfg: dict) -> Path:
    return Path(cfg["corpus"]["cache"]).expanduser()


def stage_corpus(cfg: dict, exp: Path) -> None:
    manifest = build(cfg, cache_dir(cfg))
    print(summary(read_manifest(manifest)))


def manifest_path(cfg: dict) -> Path:
    path = cache_dir(cfg) / "corpus16k" / "manifest.csv"
    if not path.exists():
        raise SystemExit(f"[train] no corpus at {path}: run stage 1 first (--stage 1).")
    return path


def stage_train(cfg: dict, exp: Path) -> None:
    rows = read_manifest(manifest_path(cfg))
    files = [r["path"] for r in rows if r["split"] == "train"]
    licences = sorted({r["licence"] for r in rows if r["split"] == "train"})
    config = dict(
        recipe="python recipes/speech_source_model/run.py",
        data=dict(
            packages=sorted(LICENCES),
            licences=licences,
            corpus=summary(rows),
            validation_speakers=cfg["corpus"]["validation_speakers"],
        ),
        input="multichannel audio (any sample rate; resampled to 16 kHz), >= n_sources mics",
    )
    card = (
        (HERE / "MODEL_CARD.template.md").read_text()
        if (HERE / "MODEL_CARD.template.md").exists()
        else ""
    )
    folder = train(cfg, files, exp, card, config)
    print(f"[train] model in {folder}")


def model_dir(cfg: dict, exp: Path) -> Path:
    """The model this run trained (stage 2), or the shipped one of that name."""
    name = cfg["train"]["name"]
    trained = exp / "models" / name
    if trained.is_dir():
        return trained
    shipped = HERE.parent.parent / "pretrained" / name
    if shipped.is_dir():
        print(f"[fit] no model trained in {exp}; evaluating the shipped {shipped}", flush=True)
        return shipped
    raise SystemExit(f"[fit] no model at {trained}: run stage 2 first (--stage 2).")


def main(argv=None) -> int:
    parser = recipe_parser(__doc__, HERE, n_stages=5)
    stages = {
        1: stage_corpus,
        2: stage_train,
        3: lambda cfg, exp: stage_prepare(cfg, exp, read_manifest(manifest_path(cfg))),
        4: lambda cfg, exp: stage_fit(cfg, exp, model_dir(cfg, exp)),
        5: stage_report,
    }
    return run_stages(parser, stages, HERE, argv, load=load_config)


if __name__ == "__main__":
    sys.exit(main())
