"""Fonts for PDF export: find faces by family name in the font packages and the system's folders, choose
one for every script a report uses (a Chinese, Japanese or Korean face by the text), and name what is missing."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import unicodedata
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

from fontTools import ttLib
from platformdirs import user_cache_path

COVERAGE_CACHE = user_cache_path("sala-report") / "font-coverage"
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

LATIN_HINT = (
    "install the Python package fontpkg-noto-sans (`pip install fontpkg-noto-sans`) "
    "or the system's Noto fonts (Debian/Ubuntu: `apt install fonts-noto-core`)"
)
ARABIC_HINT = (
    "install the Python package fontpkg-almarai (`pip install fontpkg-almarai`) "
    "or the system's Noto fonts (Debian/Ubuntu: `apt install fonts-noto-core`)"
)
CJK_HINT = (
    "install sala-report's CJK extra (`pip install 'sala-report[cjk]'`, the package noto-cjk-sans-otc) "
    "or the system's Noto CJK fonts (Debian/Ubuntu: `apt install fonts-noto-cjk`)"
)
NOTO_HINT = (
    "install the Python package manimgx-fonts (`pip install manimgx-fonts`, Noto Emoji, Symbols and other scripts) "
    "or the system's Noto fonts (Debian/Ubuntu: `apt install fonts-noto-core`)"
)
# Folders of font-only packages that do not register with fontpkg; their faces are found by family name.
FONT_PACKAGES = ("manimgx_fonts", "noto_cjk_sans_otc")

BODY_FAMILIES = ("Noto Sans", "DejaVu Sans", "Liberation Sans", "Arial")
MONO_FAMILIES = ("DejaVu Sans Mono",)  # built into typst, so code always has a face
# Typst's own serif, used when no sans face is found at all: Latin text still shows.
BUILTIN_BODY = "Libertinus Serif"
# Noto Sans Arabic draws a letter's dots as separate glyphs, which typst maps back to text wrongly
# (typst issue 4225: copied Arabic comes out garbled); Almarai draws each letter whole.
ARABIC_FAMILIES = ("Almarai", "Amiri", "Noto Sans Arabic", "Noto Naskh Arabic")
CJK_FAMILIES = {
    "SC": ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei", "Microsoft YaHei"),
    "JP": ("Noto Sans CJK JP", "Noto Sans JP", "Source Han Sans JP", "Yu Gothic", "Hiragino Sans"),
    "KR": ("Noto Sans CJK KR", "Noto Sans KR", "Source Han Sans KR", "Malgun Gothic", "Apple SD Gothic Neo"),
}
CJK_MONO_FAMILIES = {region: (f"Noto Sans Mono CJK {region}",) for region in CJK_FAMILIES}
OTHER_FAMILIES = (
    "Noto Sans Hebrew",
    "Noto Emoji",
    "Noto Color Emoji",
    "Noto Sans Symbols",
    "Noto Sans Symbols 2",
    "DejaVu Sans",
    "Symbola",
    "Segoe UI Emoji",
    "Apple Color Emoji",
)
CJK_LANG = {"SC": "zh", "JP": "ja", "KR": "ko"}

# (first, last, what the text is, the font that covers it, how to get it)
_SCRIPT_RANGES = (
    (0x0590, 0x05FF, "Hebrew", "Noto Sans Hebrew", NOTO_HINT),
    (0x0600, 0x08FF, "Arabic", "Almarai", ARABIC_HINT),
    (0xFB50, 0xFDFF, "Arabic", "Almarai", ARABIC_HINT),
    (0xFE70, 0xFEFF, "Arabic", "Almarai", ARABIC_HINT),
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
    """One face by its family name, with the file (and the face's number inside a .ttc) it comes from."""

    family: str
    path: Path
    index: int = 0

    @property
    def label(self) -> str:
        return f"{self.family} ({self.path.name})"


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
    """The faces one document needs and the folders the PDF engine loads them from.

    `body` has the upright face under '' (bold and italic are the same family's other faces);
    `cjk` names the family for each region ('SC', 'JP', 'KR') that exists, `cjk_mono` its code face.
    """

    folders: tuple[Path, ...] = ()
    body: dict[str, FontFace] = field(default_factory=dict)
    mono: tuple[str, ...] = MONO_FAMILIES
    fallbacks: list[FontFace] = field(default_factory=list)
    cjk: dict[str, str] = field(default_factory=dict)
    cjk_mono: dict[str, str] = field(default_factory=dict)
    missing: list[MissingFont] = field(default_factory=list)

    def families(self, region: str = "SC") -> tuple[str, ...]:
        """The font list for text: the body, then the fallbacks, with `region`'s CJK face before the others."""
        body = self.body[""].family if self.body else BUILTIN_BODY
        others = [f.family for f in self.fallbacks if f.family not in self.cjk.values()]
        cjk = [self.cjk[r] for r in (region, "SC", "JP", "KR") if r in self.cjk]
        return tuple(dict.fromkeys([body, *others, *cjk]))

    def mono_families(self, region: str = "SC") -> tuple[str, ...]:
        cjk = [self.cjk_mono[r] for r in (region, "SC", "JP", "KR") if r in self.cjk_mono]
        return tuple(dict.fromkeys([*self.mono, *cjk, *self.families(region)]))


@dataclass(frozen=True)
class FontSources:
    """Where faces are looked for: the Python font packages, then these folders (system fonts)."""

    packages: bool = True
    folders: tuple[Path, ...] = SYSTEM_FONT_DIRS


def cjk_region(text: str) -> str:
    """Which regional CJK face suits `text`: 'JP' with kana, 'KR' with Hangul, else 'SC' (Chinese)."""
    if any("\u3040" <= c <= "\u30ff" or "\u31f0" <= c <= "\u31ff" for c in text):
        return "JP"
    if any("\uac00" <= c <= "\ud7af" or "\u1100" <= c <= "\u11ff" or "\u3130" <= c <= "\u318f" for c in text):
        return "KR"
    return "SC"


def plan_fonts(text: str, sources: FontSources = FontSources()) -> FontPlan:
    """Choose faces so that every character of `text` has a glyph; record the ones that cannot."""
    folders = tuple(
        dict.fromkeys(
            [*(package_font_folders() if sources.packages else ()), *(f for f in sources.folders if f.is_dir())]
        )
    )
    faces = _faces(folders)
    plan = FontPlan(folders=folders)
    plan.cjk = {r: fam for r, names in CJK_FAMILIES.items() if (fam := _first(faces, names))}
    plan.cjk_mono = {r: fam for r, names in CJK_MONO_FAMILIES.items() if (fam := _first(faces, names))}
    body = _first(faces, BODY_FAMILIES)
    if body is None:
        plan.missing.append(MissingFont("Latin", "Aa", "Noto Sans", LATIN_HINT))
        return plan
    plan.body = {"": faces[body]}
    uncovered = {c for c in text if _needs_glyph(c)} - coverage(faces[body])
    for family in _fallback_order(faces, text):
        if not uncovered:
            break
        covered = uncovered & coverage(faces[family])
        if covered:
            plan.fallbacks.append(faces[family])
            uncovered -= covered
    plan.missing = _describe_missing(uncovered)
    return plan


def coverage(face: FontFace) -> frozenset[str]:
    return _coverage(face.path, face.index)


@functools.cache
def _coverage(path: Path, index: int) -> frozenset[str]:
    """The characters a face has glyphs for. Reading a CJK font's map takes a third of a second, so it is
    kept on disk as code point ranges, keyed by the file's path, size and modification time."""
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{index}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    cached = COVERAGE_CACHE / f"{key}.txt"
    try:
        ranges = [line.split("-") for line in cached.read_text(encoding="ascii").split()]
        return frozenset(chr(cp) for lo, hi in ranges for cp in range(int(lo), int(hi) + 1))
    except (OSError, ValueError):
        pass
    points = sorted(ttLib.TTFont(path, fontNumber=index, lazy=True).getBestCmap())
    try:
        COVERAGE_CACHE.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.part")
        partial.write_text("\n".join(f"{lo}-{hi}" for lo, hi in _ranges(points)), encoding="ascii")
        os.replace(partial, cached)
    except OSError:  # a read-only cache only costs time
        pass
    return frozenset(chr(cp) for cp in points)


def _ranges(points: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for cp in points:
        if out and cp == out[-1][1] + 1:
            out[-1] = (out[-1][0], cp)
        else:
            out.append((cp, cp))
    return out


def package_font_folders() -> tuple[Path, ...]:
    """Folders of the installed font packages: fontpkg families (by their entry point) and FONT_PACKAGES."""
    return _package_font_folders()


@functools.cache
def _package_font_folders() -> tuple[Path, ...]:
    folders: list[Path] = []
    for entry in entry_points(group="fontpkg.family"):
        spec = importlib.util.find_spec(entry.value)
        if spec is not None and spec.origin is not None:
            folders.append(Path(spec.origin).parent / "files")
    for package in FONT_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin is not None:
            folders.append(Path(spec.origin).parent)
    return tuple(f for f in folders if f.is_dir())


@functools.cache
def font_book(folders: tuple[Path, ...]):
    """typst's index of the faces in `folders` plus its built-in ones; made once per set of folders."""
    import typst

    return typst.Fonts(include_system_fonts=False, include_embedded_fonts=True, font_paths=[str(f) for f in folders])


@functools.cache
def _faces(folders: tuple[Path, ...]) -> dict[str, FontFace]:
    """Family name to its upright regular face (the first found: package folders come first)."""
    faces: dict[str, FontFace] = {}
    regular: dict[str, bool] = {}
    for info in font_book(folders).fonts():
        if info.path is None:  # typst's built-in faces: used by name, never scanned
            continue
        upright = info.style == "normal" and info.weight == 400
        if info.family not in faces or (upright and not regular[info.family]):
            faces[info.family] = FontFace(info.family, Path(info.path), info.index)
            regular[info.family] = upright
    return faces


def _first(faces: dict[str, FontFace], names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in faces), None)


def _fallback_order(faces: dict[str, FontFace], text: str):
    """Families to try for characters the body lacks: chosen ones first, then every other face found."""
    region = cjk_region(text)
    preferred = [*ARABIC_FAMILIES, *CJK_FAMILIES[region], *OTHER_FAMILIES]
    rest = sorted(f for f in faces if f not in preferred)
    noto = [f for f in rest if f.startswith("Noto ")]
    yield from (f for f in dict.fromkeys([*preferred, *noto, *rest]) if f in faces)


def _needs_glyph(c: str) -> bool:
    """Whitespace, controls and invisible format characters (ZWJ, variation selectors) draw nothing."""
    return (
        not c.isspace()
        and unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp")
        and not 0xFE00 <= ord(c) <= 0xFE0F
    )


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
