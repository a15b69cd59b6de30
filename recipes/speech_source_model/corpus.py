"""Stage 1 of the speech source-model recipe: a 16 kHz speech corpus from Debian packages.

Downloads (``apt-get download``, no install) and unpacks (``dpkg -x``) the
packages named in the config into a cache folder, decodes the Asterisk G.722
prompts (PyPI ``g722``) and the Fish Fillets Ogg speech (soundfile), and writes
one 16 kHz mono FLAC per prompt plus ``manifest.csv`` (path, package, language,
speaker, licence, seconds, split). Nothing is committed and nothing comes from
a model hub. The split is speaker-disjoint by the packages' own speaker labels.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

RATE = 16000
# The licence of each package's speech, from its debian/copyright.
LICENCES = {
    "asterisk-core-sounds-en-g722": "CC-BY-SA-3.0 (Digium, Inc.; voice: Allison Smith)",
    "asterisk-core-sounds-es-g722": "CC-BY-SA-3.0 (Digium, Inc.; voice: Allison Smith)",
    "asterisk-core-sounds-ru-g722": "CC-BY-3.0 (voice: Maxim Topal)",
    "fillets-ng-data": "GPL-2+ (Fish Fillets NG data, ALTAR interactive)",
    "fillets-ng-data-cs": "GPL-2+ (Fish Fillets NG Czech speech, ALTAR interactive)",
}
MANIFEST_FIELDS = ("path", "package", "language", "speaker", "licence", "seconds", "split")


def download(packages: list[str], debs: Path) -> dict[str, Path]:
    """``apt-get download`` each package into ``debs`` (kept there: a rerun reuses them)."""
    debs.mkdir(parents=True, exist_ok=True)
    found = {}
    for pkg in packages:
        have = sorted(debs.glob(f"{pkg}_*.deb"))
        if not have:
            if shutil.which("apt-get") is None:
                raise SystemExit(
                    f"[corpus] apt-get is not available to download {pkg}; put its .deb in "
                    f"{debs} (e.g. from packages.debian.org) and rerun stage 1."
                )
            done = subprocess.run(
                ["apt-get", "download", pkg], cwd=debs, capture_output=True, text=True
            )
            have = sorted(debs.glob(f"{pkg}_*.deb"))
            if done.returncode != 0 or not have:
                raise SystemExit(
                    f"[corpus] apt-get download {pkg} failed ({done.stderr.strip()[-200:]}). "
                    "Run `apt-get update` once (as root), or put the .deb in "
                    f"{debs}, and rerun stage 1."
                )
        found[pkg] = have[-1]
    return found


def unpack(deb: Path, root: Path) -> Path:
    """``dpkg -x`` into ``root/<package>`` (once)."""
    dest = root / deb.name.split("_")[0]
    if not (dest / ".done").exists():
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg", "-x", str(deb), str(dest)], check=True)
        (dest / ".done").write_text("")
    return dest


def _to_16k(x: np.ndarray, rate: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if rate != RATE:
        g = gcd(int(rate), RATE)
        x = resample_poly(x, RATE // g, int(rate) // g)
    return x.astype(np.float32)


def _asterisk_items(tree: Path, pkg: str):
    import G722  # PyPI g722: G.722 at 64 kbit/s decodes to int16 at 16 kHz

    for f in sorted(tree.rglob("*.g722")):
        voice = f.relative_to(tree / "usr/share/asterisk/sounds").parts[0]
        codec = G722.G722(RATE, 64000)  # one decoder per file: its state is per stream
        pcm = np.asarray(codec.decode(f.read_bytes()), dtype=np.float32) / 32768.0
        rel = f.relative_to(tree / "usr/share/asterisk/sounds").with_suffix("")
        yield rel, voice.split("_")[0], voice, pcm


def _fillets_items(tree: Path, pkg: str, languages: tuple[str, ...]):
    sound = tree / "usr/share/games/fillets-ng/sound"
    for f in sorted(sound.rglob("*.ogg")):
        lang = f.parent.name
        if lang not in languages:  # sound effects and music live elsewhere
            continue
        parts = f.stem.split("-")
        if len(parts) < 3 or not parts[1]:
            continue
        x, rate = sf.read(f, always_2d=False)
        # Files are <level>-<character>-<line>: the character is the speaker label.
        yield (
            f.relative_to(sound).with_suffix(""),
            lang,
            f"fillets_{lang}_{parts[1]}",
            _to_16k(x, rate),
        )


def build(cfg: dict, cache: Path) -> Path:
    """Download, decode and write the corpus; returns the manifest path (kept if complete)."""
    d = cfg["corpus"]
    out = cache / "corpus16k"
    manifest = out / "manifest.csv"
    if manifest.exists():
        print(f"[corpus] {manifest} exists; delete it to rebuild")
        return manifest
    debs = download(list(d["packages"]), cache / "debs")
    valid = set(d["validation_speakers"])
    rows = []
    for pkg, deb in debs.items():
        tree = unpack(deb, cache / "unpacked")
        if pkg.startswith("asterisk"):
            items = _asterisk_items(tree, pkg)
        else:
            items = _fillets_items(tree, pkg, tuple(d["fillets_languages"]))
        for rel, lang, speaker, pcm in items:
            if pcm.size < RATE * d["min_seconds"] or not np.any(pcm):
                continue
            path = out / pkg / rel.with_suffix(".flac")
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, np.clip(pcm, -1, 1), RATE, subtype="PCM_16")
            rows.append(
                dict(
                    path=str(path.relative_to(out)),
                    package=pkg,
                    language=lang,
                    speaker=speaker,
                    licence=LICENCES.get(pkg, "see the package's debian/copyright"),
                    seconds=round(pcm.size / RATE, 3),
                    split=_split(speaker, valid),
                )
            )
        print(f"[corpus] {pkg}: {sum(r['package'] == pkg for r in rows)} prompts", flush=True)
    tmp = manifest.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(manifest)  # written last: a manifest means a complete corpus
    return manifest


def _split(speaker: str, valid: set[str]) -> str:
    if speaker in valid:
        return "valid"
    # Fish Fillets' minor characters (anyone but the two fish, m and v) are held out.
    if (
        speaker.startswith("fillets_")
        and "*minor*" in valid
        and speaker.split("_")[-1]
        not in (
            "m",
            "v",
        )
    ):
        return "valid"
    return "train"


def read_manifest(path: Path, split: str | None = None) -> list[dict]:
    """The manifest's rows (paths made absolute), optionally of one split."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["path"] = str(path.parent / r["path"])
        r["seconds"] = float(r["seconds"])
    return [r for r in rows if split is None or r["split"] == split]


def summary(rows: list[dict]) -> str:
    """Minutes per split and speaker, for the model card."""
    lines = []
    for split in ("train", "valid"):
        sel = [r for r in rows if r["split"] == split]
        by = {}
        for r in sel:
            by[r["speaker"]] = by.get(r["speaker"], 0.0) + r["seconds"]
        total = sum(by.values()) / 60
        top = ", ".join(f"{k} {v / 60:.1f}" for k, v in sorted(by.items(), key=lambda x: -x[1])[:6])
        lines.append(f"{split}: {total:.1f} min, {len(by)} speakers ({top}, ... min)")
    return "\n".join(lines)
