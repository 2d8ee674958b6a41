"""What the "does this look like a mammogram?" check refuses: no real film, every other picture.

Every image is decoded as prediction decodes it for a bundle's input size (``--size``, default
320 x 256; uploads as bytes, as the prediction page gets them) and passed to
:func:`bcp_core.imaging.preparation.mammogram_doubt`; the script counts, per kind of image, how
many are refused and how many pass, lists the reasons, and times the check (decoding excluded).
The kinds:

* real films: every image under the folders given (only read, never copied);
* the synthetic demo films (``bcp_demo``): the small demo dataset at 1024 px and at the tests'
  96 px, written to a temporary folder (or ``--demo-root`` for one already written);
* pictures that are no mammogram, made on the fly or shipped by the pinned packages: featureless
  grey blobs and half-discs on black (sizes, grey levels, blur), scikit-learn's two sample
  photographs (colour, grey, crops), rendered text pages, uniform, noise, gradients and
  patterns, synthetic radiographs of other body parts (chest, hand, limb, skull) and pydicom's
  test images of other modalities (CT, MR, ultrasound, a segmentation mask).

    .venv/bin/python bench/bench_mammogram_check.py /work/films/data/malignant \\
        /work/films/data/benign

Results: stdout (a Markdown table) and ``bench/results/bench_mammogram_check.json`` (every
refusal and, with ``--show-passed``, every non-mammogram that passed).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bcp_core.config import DemoConfig, PreprocessSpec  # noqa: E402
from bcp_core.errors import UserError  # noqa: E402
from bcp_core.imaging.decode import decode_image  # noqa: E402
from bcp_core.imaging.preparation import decode_size, mammogram_doubt  # noqa: E402
from bcp_core.inference.inputs import expand_inputs  # noqa: E402

#: One picture: its name and its source (a path, or the bytes of an encoded file).
Item = tuple[str, "Path | bytes"]
SIZES = ((640, 640), (1024, 832), (240, 200))
RESULTS = ROOT / "bench" / "results" / "bench_mammogram_check.json"


# --- Pictures that are no mammogram ---------------------------------------------------------------


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(arr: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(img, sigma) if sigma > 0 else img


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian noise low-passed at ``sigma`` pixels, scaled to unit standard deviation."""
    noise = _blur(rng.normal(size=shape), sigma)
    return noise / max(float(noise.std()), 1e-9)


def blobs() -> Iterator[Item]:
    """Featureless grey ellipses on black, in the middle and off it: sizes, grey levels, blur."""
    for h, w in SIZES:
        yy, xx = np.mgrid[0:h, 0:w]
        for radius in (0.15, 0.3, 0.45):
            for level in (0.35, 0.65, 0.95):
                for blur in (0.0, 0.03):
                    for cy, cx in ((0.5, 0.5), (0.35, 0.6)):
                        inside = ((yy - cy * h) / (radius * h)) ** 2 + (
                            (xx - cx * w) / (0.8 * radius * w)
                        ) ** 2 < 1
                        img = _blur(inside * level, blur * h)
                        name = f"blob {h}x{w} r{radius} g{level} b{blur} c{cy},{cx}"
                        yield name, (_jpeg if blur else _png)(_u8(img))
    for h, w in SIZES[:2]:  # smooth radial falloff, no edge at all
        yy, xx = np.mgrid[0:h, 0:w]
        for sigma in (0.1, 0.2):
            img = 0.8 * np.exp(-((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (2 * (sigma * h) ** 2))
            yield f"gaussian blob {h}x{w} s{sigma}", _png(_u8(img))


def half_blobs() -> Iterator[Item]:
    """Featureless grey half-discs against a side edge, where a breast would be."""
    for h, w in SIZES:
        yy, xx = np.mgrid[0:h, 0:w]
        for radius in (0.3, 0.45):
            for level in (0.35, 0.65, 0.95):
                for blur in (0.0, 0.03):
                    inside = (xx / (1.6 * radius * w)) ** 2 + ((yy - h / 2) / (radius * 2 * h)) ** 2
                    img = _blur((inside < 1) * level, blur * h)
                    for side, arr in (("left", img), ("right", img[:, ::-1])):
                        name = f"half blob {side} {h}x{w} r{radius} g{level} b{blur}"
                        yield name, _png(_u8(np.ascontiguousarray(arr)))


def photos() -> Iterator[Item]:
    """scikit-learn's sample photographs: in colour, in grey, grey crops and a grey inversion."""
    import sklearn.datasets

    folder = Path(sklearn.datasets.__file__).parent / "images"
    for path in sorted(folder.glob("*.jpg")):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        grey = np.asarray(Image.fromarray(rgb).convert("L"))
        yield f"{path.name} colour", path
        yield f"{path.name} grey", _jpeg(grey)
        yield f"{path.name} grey inverted", _jpeg(255 - grey)
        h, w = grey.shape
        for i, (top, left) in enumerate(((0, 0), (0, w // 3), (h // 3, 0), (h // 3, w // 3))):
            crop = grey[top : top + 2 * h // 3, left : left + 2 * w // 3]
            yield f"{path.name} grey crop {i}", _jpeg(np.ascontiguousarray(crop))
        # The photograph's middle on black, as a picture cut out of a page.
        cut = np.zeros_like(grey)
        middle = (slice(h // 5, 4 * h // 5), slice(w // 4, 3 * w // 4))
        cut[middle] = grey[middle]
        yield f"{path.name} grey on black", _png(cut)


_WORDS = (
    "Patient information leaflet. Screening mammography is offered every two years to women "
    "aged 50 to 69. Please bring your previous films and a list of medicines. The examination "
    "takes about ten minutes; each breast is compressed for a few seconds. Results are sent by "
    "post within two weeks. Questions: call the radiology desk between 8 and 16 o'clock."
).split()


def _page(h: int, w: int, size: int, paper: int, ink: int, seed: int, table: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = Image.new("L", (w, h), paper)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=size)
    margin, y = w // 10, h // 12
    draw.text((margin, y), "RADIOLOGY REPORT", fill=ink, font=ImageFont.load_default(size=size * 2))
    y += size * 4
    while y < h - h // 8:
        line, words = "", list(rng.choice(_WORDS, 40))
        while words and draw.textlength(line + " " + words[0], font=font) < w - 2 * margin:
            line = (line + " " + words.pop(0)).strip()
        draw.text((margin, y), line, fill=ink, font=font)
        y += int(size * 1.6)
        if table and rng.random() < 0.2:
            draw.line((margin, y, w - margin, y), fill=ink, width=max(1, size // 10))
            y += size // 2
    return np.asarray(img)


def text_pages() -> Iterator[Item]:
    """Rendered text pages: dark on white, white on black, grey paper, forms with rules."""
    cases = [
        ((1100, 850), 14, 255, 0, False),
        ((1100, 850), 24, 255, 0, True),
        ((1100, 850), 40, 255, 20, False),
        ((640, 640), 12, 255, 0, True),
        ((640, 640), 20, 235, 40, False),
        ((1100, 850), 18, 200, 30, True),
        ((1100, 850), 18, 0, 255, False),
        ((640, 640), 24, 0, 230, True),
        ((640, 640), 40, 10, 200, False),
        ((300, 400), 10, 255, 0, False),
    ]
    for i, ((h, w), size, paper, ink, table) in enumerate(cases):
        page = _page(h, w, size, paper, ink, i, table)
        yield f"page {h}x{w} font {size} paper {paper} ink {ink}", (_jpeg if i % 2 else _png)(page)


def plain() -> Iterator[Item]:
    """Uniform grey, noise (white and smooth), gradients, stripes and a checkerboard."""
    rng = np.random.default_rng(0)
    h, w = 640, 512
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    for level in (0.0, 0.5, 1.0):
        yield f"uniform {level}", _png(_u8(np.full((h, w), level)))
    yield "white noise", _png(_u8(rng.random((h, w))))
    yield "gaussian noise on grey", _png(_u8(0.5 + 0.15 * rng.normal(size=(h, w))))
    for sigma in (2, 8, 32):
        yield f"smooth noise s{sigma}", _png(_u8(0.5 + 0.15 * _smooth_noise(rng, (h, w), sigma)))
    yield "gradient vertical", _png(_u8(yy))
    yield "gradient horizontal", _png(_u8(xx))
    yield "gradient dark to grey", _png(_u8(0.6 * xx))
    yield "radial gradient", _png(_u8(1 - np.hypot(yy - 0.5, xx - 0.5)))
    yield "stripes", _png(_u8(0.2 + 0.6 * ((xx * 12).astype(int) % 2)))
    yield "checkerboard", _png(_u8(0.2 + 0.6 * (((xx * 8).astype(int) + (yy * 8).astype(int)) % 2)))


def _chest(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    body = ((xx - 0.5) / 0.52) ** 2 + ((yy - 0.62) / 0.75) ** 2 < 1
    img = body * (0.55 + 0.08 * _smooth_noise(rng, (h, w), h / 40))
    for cx in (0.3, 0.7):  # the lungs: dark, with vessels
        lung = ((xx - cx) / 0.16) ** 2 + ((yy - 0.5) / 0.3) ** 2 < 1
        img = np.where(lung, 0.18 + 0.05 * _smooth_noise(rng, (h, w), h / 100), img)
    for k in range(8):  # ribs
        arc = np.abs(yy - (0.28 + 0.07 * k) - 0.15 * (xx - 0.5) ** 2 * 4) < 0.012
        img = np.where(arc & body, img + 0.15, img)
    img = np.where(np.abs(xx - 0.5) < 0.05, 0.8, img) * body  # the spine and mediastinum
    heart = ((xx - 0.55) / 0.13) ** 2 + ((yy - 0.68) / 0.14) ** 2 < 1
    return np.clip(_blur(np.where(heart, 0.7, img), 1.5), 0, 1)


def _hand(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    img = Image.new("F", (w, h), 0.0)
    draw = ImageDraw.Draw(img)
    palm = (w * 0.3, h * 0.5, w * 0.72, h * 1.1)
    draw.rounded_rectangle(palm, radius=w * 0.08, fill=0.45)
    for x, length in ((0.34, 0.3), (0.44, 0.38), (0.54, 0.4), (0.64, 0.34)):
        draw.rounded_rectangle(
            (w * x - w * 0.04, h * (0.52 - length), w * x + w * 0.04, h * 0.6),
            radius=w * 0.04,
            fill=0.45,
        )
        for j in range(3):  # phalanges: brighter bones with joints between them
            top = h * (0.52 - length) + j * h * length / 3 + h * 0.02
            draw.rounded_rectangle(
                (w * x - w * 0.018, top, w * x + w * 0.018, top + h * length / 3 - h * 0.03),
                radius=w * 0.015,
                fill=0.8,
            )
        draw.rectangle((w * x - w * 0.02, h * 0.56, w * x + w * 0.02, h), fill=0.78)  # metacarpal
    draw.rounded_rectangle((w * 0.12, h * 0.55, w * 0.32, h * 0.68), radius=w * 0.05, fill=0.45)
    arr = np.asarray(img) + 0.04 * _smooth_noise(rng, (h, w), 3) * (np.asarray(img) > 0)
    return np.clip(_blur(arr, 1.0), 0, 1)


def _limb(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    soft = np.abs(xx - 0.5) < 0.28 + 0.06 * np.sin(yy * 3)
    bone = np.abs(xx - 0.5) < 0.09 + 0.08 * np.exp(-(((yy - 0.5) / 0.08) ** 2))
    img = soft * 0.35 + bone * 0.4 - (np.abs(xx - 0.5) < 0.04) * bone * 0.15
    img = img + 0.03 * _smooth_noise(rng, (h, w), 2) * soft
    return np.clip(_blur(img, 1.5), 0, 1)


def _skull(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    r = ((xx - 0.5) / 0.4) ** 2 + ((yy - 0.48) / 0.42) ** 2
    img = (r < 1) * 0.4 + ((r > 0.85) & (r < 1)) * 0.45
    img = img + 0.05 * _smooth_noise(rng, (h, w), h / 60) * (r < 1)
    return np.clip(_blur(img, 1.0), 0, 1)


def radiographs() -> Iterator[Item]:
    """Synthetic radiographs of other body parts: chest, hand (upright and from a side), limb,
    skull."""
    rng = np.random.default_rng(1)
    for h, w in ((640, 640), (1024, 832), (300, 240)):
        chest = _chest(rng, h, w)
        yield f"chest {h}x{w}", _png(_u8(chest))
        yield f"chest {h}x{w} inverted", _jpeg(_u8(1 - chest))
        hand = _hand(rng, h, w)
        yield f"hand {h}x{w}", _png(_u8(hand))
        yield f"hand {h}x{w} from the left", _png(_u8(np.ascontiguousarray(np.rot90(hand, -1))))
        yield f"hand {h}x{w} from the right", _png(_u8(np.ascontiguousarray(np.rot90(hand))))
        yield f"limb {h}x{w}", _png(_u8(_limb(rng, h, w)))
        yield f"skull {h}x{w}", _jpeg(_u8(_skull(rng, h, w)))


#: pydicom's test images of other modalities (greyscale ones; its colour test patterns aside).
PYDICOM_IMAGES = (
    "CT_small.dcm",
    "MR_small.dcm",
    "693_J2KI.dcm",
    "J2K_pixelrep_mismatch.dcm",
    "image_dfl.dcm",
    "liver_1frame.dcm",
    "examples_overlay.dcm",
    "examples_jpeg2k.dcm",
    "examples_rgb_color.dcm",
    "examples_ybr_color.dcm",
    "examples_palette.dcm",
)


def pydicom_images() -> Iterator[Item]:
    """pydicom's bundled test images: CT and MR slices, ultrasound, a mask, a test pattern."""
    import pydicom

    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    for name in PYDICOM_IMAGES:
        if (folder / name).is_file():
            yield name, folder / name


OTHER_KINDS: dict[str, Callable[[], Iterator[Item]]] = {
    "featureless blobs on black": blobs,
    "featureless half-discs at a side edge": half_blobs,
    "photographs (scikit-learn's samples)": photos,
    "text pages": text_pages,
    "uniform, noise, gradients, patterns": plain,
    "radiographs of other body parts (synthetic)": radiographs,
    "other modalities (pydicom's test images)": pydicom_images,
}


# --- Measuring ------------------------------------------------------------------------------------


def check(items: list[Item], spec: PreprocessSpec) -> dict:
    """Refusals, passes, unreadable files and the check's time per image for ``items``."""
    refused, passed, unreadable, times = [], [], [], []
    for name, source in items:
        try:
            decoded = decode_image(source, min_size=decode_size(spec), name=name)
        except UserError as exc:
            unreadable.append({"file": name, "error": str(exc)})
            continue
        start = time.perf_counter()
        doubt = mammogram_doubt(
            decoded.gray, decoded.colour, str(decoded.header.get("photometric", ""))
        )
        times.append(time.perf_counter() - start)
        (refused if doubt else passed).append({"file": name, "reason": doubt})
    ms = np.array(times) * 1000 if times else np.zeros(1)
    return {
        "images": len(items) - len(unreadable),
        "refused": refused,
        "passed": passed,
        "unreadable": unreadable,
        "ms_median": float(np.median(ms)),
        "ms_p95": float(np.percentile(ms, 95)),
        "ms_max": float(ms.max()),
    }


def _reasons(found: dict) -> str:
    """The commonest reasons, shortened to their first words."""
    counts = Counter(r["reason"].split("(")[0].split(";")[0].strip() for r in found["refused"])
    return "; ".join(f"{reason} ({n})" for reason, n in counts.most_common(3))


def _demo_items(demo_root: Path | None, work: Path) -> dict[str, list[Item]]:
    from bcp_demo.writer import write_demo_dataset

    roots = {}
    if demo_root is not None:
        roots["demo films (given folder)"] = demo_root
    else:
        for height in (1024, 96):
            root = work / f"demo{height}"
            write_demo_dataset(root, DemoConfig(scale="small", image_height=height), workers=1)
            roots[f"demo films, {height} px high"] = root
    return {
        kind: [(str(p.relative_to(root)), p) for p in expand_inputs([root])]
        for kind, root in roots.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, help="folders of real films")
    parser.add_argument("--size", nargs=2, type=int, default=(320, 256), metavar=("H", "W"))
    parser.add_argument("--demo-root", type=Path, help="a demo dataset already written")
    parser.add_argument("--show-passed", action="store_true", help="list non-films that pass")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    spec = PreprocessSpec(*args.size)
    kinds: dict[str, list[Item]] = {}
    for folder in args.folders:
        kinds[f"real films: {folder}"] = [(str(p), p) for p in expand_inputs([folder])]
    with tempfile.TemporaryDirectory() as work:
        kinds.update(_demo_items(args.demo_root, Path(work)))
        for kind, make in OTHER_KINDS.items():
            kinds[kind] = list(make())
        results = {"size": list(args.size), "kinds": {k: check(v, spec) for k, v in kinds.items()}}
    print(f"Input size {args.size[0]} x {args.size[1]}.\n")
    print("| images | n | refused | passed | check, ms per image (median / p95) | reasons |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind, found in results["kinds"].items():
        print(
            f"| {kind} | {found['images']} | {len(found['refused'])} | {len(found['passed'])} | "
            f"{found['ms_median']:.2f} / {found['ms_p95']:.2f} | {_reasons(found)} |"
        )
    for kind, found in results["kinds"].items():
        films = kind.startswith(("real films", "demo films"))
        listed = found["refused"] if films else (found["passed"] if args.show_passed else [])
        for item in listed:
            print(f"  {kind}: {Path(item['file']).name}: {item['reason'] or 'passed'}")
        for item in found["unreadable"]:
            print(f"  {kind}: unreadable: {item['error']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
