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

from corpus import build, read_manifest, summary  # noqa: E402

from sepkit._recipe import load_config, recipe_parser, run_stages  # noqa: E402


def cache_dir(cfg: dict) -> Path:
    return Path(cfg["corpus"]["cache"]).expanduser()


def stage_corpus(cfg: dict, exp: Path) -> None:
    manifest = build(cfg, cache_dir(cfg))
    print(summary(read_manifest(manifest)))


def main(argv=None) -> int:
    parser = recipe_parser(__doc__, HERE, n_stages=1)
    stages = {1: stage_corpus}
    return run_stages(parser, stages, HERE, argv, load=load_config)


if __name__ == "__main__":
    sys.exit(main())
