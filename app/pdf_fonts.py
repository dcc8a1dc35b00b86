"""Fonts for PDF export: pick a face for every script a report uses, from the font packages we depend
on (Noto) or the system's fonts, cut each down to the characters used, and name what is missing."""

from __future__ import annotations

import functools
import importlib.util
import io
import logging
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from fontTools import subset, ttLib
from fontTools.pens.cu2quPen import Cu2QuPen
from fontTools.pens.ttGlyphPen import TTGlyphPen
from fontTools.varLib import instancer

SYSTEM_FONT_DIRS = (
    Path("/usr/share/fonts"),
    Path("/usr/local/share/fonts"),
    Path.home() / ".local/share/fonts",
    Path.home() / ".fonts",
    Path("/Library/Fonts"),
    Path("/System/Library/Fonts"),
    Path.home() / "Library/Fonts",
    Path("C:/Windows/Fonts"),
)

CJK_HINT = (
    "install the Python package noto-cjk-sans-otc (`pip install noto-cjk-sans-otc`) "
    "or the system's Noto CJK fonts (Debian/Ubuntu: `apt install fonts-noto-cjk`)"
)
NOTO_HINT = (
    "install the Python package manimgx-fonts (`pip install manimgx-fonts`) "
    "or the system's Noto fonts (Debian/Ubuntu: `apt install fonts-noto-core`)"
)
# (first, last, what the text is, the font that covers it, how to get it)
_SCRIPT_RANGES = (
    (0x0590, 0x05FF, "Hebrew", "Noto Sans Hebrew", NOTO_HINT),
    (0x0600, 0x08FF, "Arabic", "Noto Sans Arabic", NOTO_HINT),
    (0xFB50, 0xFDFF, "Arabic", "Noto Sans Arabic", NOTO_HINT),
    (0xFE70, 0xFEFF, "Arabic", "Noto Sans Arabic", NOTO_HINT),
    (0x1100, 0x11FF, "Chinese, Japanese or Korean", "Noto Sans CJK", CJK_HINT),
    (0x2E80, 0x9FFF, "Chinese, Japanese or Korean", "Noto Sans CJK", CJK_HINT),
    (0xA960, 0xA97F, "Chinese, Japanese or Korean", "Noto Sans CJK", CJK_HINT),
    (0xAC00, 0xD7AF, "Chinese, Japanese or Korean", "Noto Sans CJK", CJK_HINT),
    (0xF900, 0xFAFF, "Chinese, Japanese or Korean", "Noto Sans CJK", CJK_HINT),
    (0xFF00, 0xFFEF, "Chinese, Japanese or Korean", "Noto Sans CJK", CJK_HINT),
    (0x20000, 0x3FFFF, "Chinese, Japanese or Korean", "Noto Sans CJK", CJK_HINT),
    (0x2190, 0x2BFF, "symbols", "Noto Sans Symbols", NOTO_HINT),
    (0x1F000, 0x1FAFF, "emoji", "Noto Emoji", NOTO_HINT),
)


@dataclass(frozen=True)
class FontFace:
    """One face: a file, the face's number inside a .ttc collection, and variable axes to pin."""

    path: Path
    index: int = 0
    axes: tuple[tuple[str, float], ...] = ()

    @property
    def label(self) -> str:
        return self.path.name if not self.index else f"{self.path.name}#{self.index}"


@dataclass(frozen=True)
class MissingFont:
    """Characters no available font can draw, with the font that would and how to get it."""

    script: str
    sample: str
    font: str
    hint: str

    def message(self) -> str:
        return f"No font for {self.script} text (e.g. {self.sample!r}): {self.font} is missing; {self.hint}."


@dataclass
class FontPlan:
    """The faces one document needs: body styles ('', 'B', 'I', 'BI'), code, and fallbacks for other scripts."""

    body: dict[str, FontFace] = field(default_factory=dict)
    mono: FontFace | None = None
    fallbacks: list[FontFace] = field(default_factory=list)
    missing: list[MissingFont] = field(default_factory=list)


@dataclass(frozen=True)
class FontSources:
    """Where faces are looked for: the Python font packages, then these folders (system fonts)."""

    packages: bool = True
    folders: tuple[Path, ...] = SYSTEM_FONT_DIRS


def plan_fonts(text: str, sources: FontSources = FontSources()) -> FontPlan:
    """Choose faces so that every character of `text` has a glyph; record the ones that cannot."""
    files = _available_files(sources)
    plan = FontPlan()
    regular = _variable_or_static(files, "NotoSans[wght].ttf", 400, ("NotoSans-Regular.ttf", "DejaVuSans.ttf",
                                  "LiberationSans-Regular.ttf", "Arial.ttf", "arial.ttf"))
    if regular is None:
        plan.missing.append(MissingFont("Latin", "Aa", "Noto Sans", NOTO_HINT))
        return plan
    bold = _variable_or_static(files, "NotoSans[wght].ttf", 700, ("NotoSans-Bold.ttf", "DejaVuSans-Bold.ttf",
                               "LiberationSans-Bold.ttf", "Arial Bold.ttf", "arialbd.ttf")) or regular
    italic = _variable_or_static(files, "NotoSans-Italic[wght].ttf", 400, ("NotoSans-Italic.ttf",
                                 "DejaVuSans-Oblique.ttf", "LiberationSans-Italic.ttf", "ariali.ttf")) or regular
    bold_italic = _variable_or_static(files, "NotoSans-Italic[wght].ttf", 700, ("NotoSans-BoldItalic.ttf",
                                      "DejaVuSans-BoldOblique.ttf", "LiberationSans-BoldItalic.ttf")) or bold
    plan.body = {"": regular, "B": bold, "I": italic, "BI": bold_italic}

    needed = {c for c in text if _needs_glyph(c)}
    uncovered = needed - coverage(regular)
    cjk_files = [files["NotoSansCJK-Regular.ttc"]] if "NotoSansCJK-Regular.ttc" in files else []
    if cjk_files:
        plan.mono = FontFace(cjk_files[0], _cjk_face(cjk_files[0], text, mono=True))
    else:
        plan.mono = next((FontFace(files[n]) for n in ("DejaVuSansMono.ttf", "NotoSansMono-Regular.ttf",
                          "LiberationMono-Regular.ttf", "consola.ttf") if n in files), regular)
    for face in _fallback_candidates(files, text, cjk_files):
        if not uncovered:
            break
        covered = uncovered & coverage(face)
        if covered:
            plan.fallbacks.append(face)
            uncovered -= covered
    plan.missing = _describe_missing(uncovered)
    return plan


def coverage(face: FontFace) -> frozenset[str]:
    return _coverage(face.path, face.index)


@functools.cache
def _coverage(path: Path, index: int) -> frozenset[str]:
    font = ttLib.TTFont(path, fontNumber=index, lazy=True)
    return frozenset(chr(cp) for cp in font["cmap"].getBestCmap())


def prepare(faces: list[FontFace], text: str, out_dir: Path) -> dict[FontFace, Path]:
    """Write small static TrueType fonts holding the glyphs `text` needs (and their shaping closure).

    Cutting first keeps the PDF engine fast on 20 MB CJK collections; pinning variable axes gives
    real bold; CFF outlines become TrueType ones, which every PDF reader (and text extractor) maps
    back to Unicode the same way. Faces from one file share one cut, the slow part.
    """
    out: dict[FontFace, Path] = {}
    by_file: dict[tuple[Path, int], list[FontFace]] = {}
    for face in dict.fromkeys(faces):
        by_file.setdefault((face.path, face.index), []).append(face)
    for (path, index), group in by_file.items():
        cut = io.BytesIO()
        _subset(path, index, text).save(cut)
        for face in group:
            font = ttLib.TTFont(io.BytesIO(cut.getvalue()), recalcTimestamp=False)
            if "fvar" in font:
                location = {axis.axisTag: axis.defaultValue for axis in font["fvar"].axes}
                location.update({tag: value for tag, value in face.axes if tag in location})
                font = instancer.instantiateVariableFont(font, location, static=True)
            if "CFF " in font:
                _cff_to_truetype(font)
            target = out_dir / f"font{len(out)}.ttf"
            font.save(str(target))
            out[face] = target
    return out


def _subset(path: Path, index: int, text: str) -> ttLib.TTFont:
    # fontTools warns about every table it drops (FFTM, ...); none of them matter in a PDF.
    logging.getLogger("fontTools.subset").setLevel(logging.ERROR)
    font = ttLib.TTFont(path, fontNumber=index, recalcTimestamp=False)
    options = subset.Options()
    options.layout_features = ["*"]
    options.name_IDs = ["*"]
    options.name_languages = ["*"]
    options.notdef_outline = True
    options.hinting = False
    subsetter = subset.Subsetter(options)
    subsetter.populate(text=text + " ")
    subsetter.subset(font)
    return font


def _cff_to_truetype(font: ttLib.TTFont) -> None:
    """Replace cubic CFF outlines with quadratic `glyf` ones (1 font unit of error at most)."""
    order = font.getGlyphOrder()
    glyph_set = font.getGlyphSet()
    glyf = ttLib.newTable("glyf")
    glyf.glyphOrder = order
    glyf.glyphs = {}
    for name in order:
        pen = TTGlyphPen(glyph_set)
        glyph_set[name].draw(Cu2QuPen(pen, max_err=1.0, reverse_direction=True))
        glyf[name] = pen.glyph()
    font["glyf"] = glyf
    font["loca"] = ttLib.newTable("loca")
    maxp = ttLib.newTable("maxp")
    maxp.tableVersion = 0x00010000
    maxp.numGlyphs = len(order)
    maxp.maxZones = 1
    for key in ("maxTwilightPoints", "maxStorage", "maxFunctionDefs", "maxInstructionDefs",
                "maxStackElements", "maxSizeOfInstructions", "maxComponentElements"):
        setattr(maxp, key, 0)
    font["maxp"] = maxp
    font["head"].glyphDataFormat = 0
    font["post"].formatType = 3.0
    for tag in ("CFF ", "VORG"):
        if tag in font:
            del font[tag]
    font.sfntVersion = "\x00\x01\x00\x00"


def _needs_glyph(c: str) -> bool:
    """Whitespace, controls and invisible format characters (ZWJ, variation selectors) draw nothing."""
    return not c.isspace() and unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp") \
        and not 0xFE00 <= ord(c) <= 0xFE0F


def _describe_missing(chars: set[str]) -> list[MissingFont]:
    by_script: dict[tuple[str, str, str], list[str]] = {}
    for c in sorted(chars):
        cp = ord(c)
        match = next(((s, f, h) for lo, hi, s, f, h in _SCRIPT_RANGES if lo <= cp <= hi), None)
        if match is None:
            script = unicodedata.name(c, f"U+{cp:04X}").split(" ")[0].title()
            match = (script, f"Noto Sans {script}", NOTO_HINT)
        by_script.setdefault(match, []).append(c)
    return [MissingFont(s, "".join(cs[:8]), f, h) for (s, f, h), cs in by_script.items()]


def _fallback_candidates(files: dict[str, Path], text: str, cjk_files: list[Path]):
    """Faces to try, in order: the packaged Noto faces, then common system fonts."""
    for name, path in sorted(files.items()):
        if path.parent.name == "manimgx_fonts" and not name.startswith("NotoSans[") \
                and not name.startswith("NotoSans-Italic"):
            yield FontFace(path, 0, (("wght", 400),))
    for path in cjk_files:
        yield FontFace(path, _cjk_face(path, text))
    for name in ("NotoSansArabic-Regular.ttf", "NotoNaskhArabic-Regular.ttf", "NotoSansHebrew-Regular.ttf",
                 "DejaVuSans.ttf", "NotoSansSymbols-Regular.ttf", "NotoSansSymbols2-Regular.ttf",
                 "NotoEmoji-Regular.ttf", "Symbola.ttf", "wqy-microhei.ttc", "wqy-zenhei.ttc",
                 "DroidSansFallbackFull.ttf", "msyh.ttc", "YuGothR.ttc", "malgun.ttf", "seguiemj.ttf",
                 "PingFang.ttc", "Hiragino Sans GB.ttc", "AppleSDGothicNeo.ttc"):
        if name in files:
            yield FontFace(files[name])


def _cjk_face(path: Path, text: str, *, mono: bool = False) -> int:
    """Pick the collection's regional face: Japanese with kana, Korean with Hangul only, else Simplified Chinese."""
    has_kana = any("\u3040" <= c <= "\u30ff" for c in text)
    has_hangul = any("\uac00" <= c <= "\ud7af" for c in text)
    has_han = any("\u4e00" <= c <= "\u9fff" for c in text)
    region = "JP" if has_kana else "KR" if has_hangul and not has_han else "SC"
    names = _collection_names(path)
    wanted = f"Noto Sans {'Mono ' if mono else ''}CJK {region}"
    return next((i for i, n in enumerate(names) if n == wanted), 0)


@functools.cache
def _collection_names(path: Path) -> tuple[str, ...]:
    if path.suffix.lower() not in (".ttc", ".otc"):
        return ()
    collection = ttLib.TTCollection(path, lazy=True)
    return tuple(str(font["name"].getDebugName(4)) for font in collection.fonts)


def _variable_or_static(files: dict[str, Path], variable: str, weight: int, static: tuple[str, ...]) -> FontFace | None:
    if variable in files:
        return FontFace(files[variable], 0, (("wght", weight),))
    return next((FontFace(files[name]) for name in static if name in files), None)


def _available_files(sources: FontSources) -> dict[str, Path]:
    """Font file names to paths; the packaged fonts win over system fonts of the same name."""
    files: dict[str, Path] = {}
    for folder in sources.folders:
        files.update({k: v for k, v in _scan(folder).items() if k not in files})
    if sources.packages:
        files.update(_packaged_files())
    return files


@functools.cache
def _packaged_files() -> dict[str, Path]:
    files: dict[str, Path] = {}
    for package in ("manimgx_fonts", "noto_cjk_sans_otc"):
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        folder = Path(spec.origin).parent
        files.update({p.name: p for p in folder.iterdir() if p.suffix.lower() in (".ttf", ".otf", ".ttc")})
    return files


@functools.cache
def _scan(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    if not folder.is_dir():
        return files
    for root, _dirs, names in os.walk(folder):
        for name in names:
            if name.lower().endswith((".ttf", ".otf", ".ttc")):
                files.setdefault(name, Path(root) / name)
    return files


def package_versions() -> dict[str, str | None]:
    """Installed versions of the font packages (for `sala-report doctor`)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for dist in ("manimgx-fonts", "noto-cjk-sans-otc"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out
