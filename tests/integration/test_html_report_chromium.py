"""The HTML run report rendered by a real headless Chromium (Debian's `chromium`): it renders, the timeline has
a bar per stage and per service's work, and a screenshot is not blank. The report comes from a real run."""

from __future__ import annotations

import dataclasses
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from pipeline.core.config import Config, load_config
from pipeline.core.paths import ROOT
from pipeline.release.html_report import HISTORY_FILE
from tests.observe_support import ToolStage, run_observed

pytestmark = pytest.mark.slow

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("Debian's chromium is not installed; run: python3 -m pipeline.machine.bootstrap --tests")
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120, check=True)


def png_pixels(path: Path) -> tuple[int, int, int, list[bytes]]:
    """Width, height, bytes per pixel and unfiltered scanlines of an 8-bit RGB/RGBA PNG (PNG spec, filter types 0-4)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = bpp = 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and ctype in (2, 6)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + n
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            pred = {0: 0, 1: a, 2: b, 3: (a + b) // 2}.get(f)
            if pred is None:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
            line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return dataclasses.replace(load_config(ROOT / "pipeline.toml", check_files=False), state_dir=tmp_path / "state")


def test_the_report_renders_in_headless_chromium_with_a_bar_per_stage(cfg: Config, tmp_path: Path) -> None:
    stages = [ToolStage("build"), ToolStage("scan"), ToolStage("push"), ToolStage("deploy", skip="no cluster")]
    run_dir = run_observed(cfg, stages, report=True)
    html = run_dir / "report.html"
    assert html.is_file() and (run_dir.parent / HISTORY_FILE).is_file()
    assert "http://" not in html.read_text().replace("http://www.w3.org/2000/svg", "")   # no network, no CDN

    dom = chromium(tmp_path, "--dump-dom", html.as_uri()).stdout
    stage_bars = re.findall(r'<rect class="bar stage" data-stage="([^"]+)"', dom)
    assert stage_bars == ["build", "scan", "push", "deploy"]
    service_bars = re.findall(r'<rect class="bar service" data-stage="([^"]+)" data-service="([^"]+)"', dom)
    names = [s.name for s in cfg.services]
    assert sorted(service_bars) == sorted((st, n) for st in ("build", "scan", "push") for n in names)
    assert "veza-backend-api" in dom and "Timeline" in dom

    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,900", "--hide-scrollbars", html.as_uri())
    width, height, bpp, rows = png_pixels(shot)
    assert (width, height) == (1200, 900)
    colors = {row[i:i + 3] for row in rows[::3] for i in range(0, len(row), bpp * 3)}
    assert len(colors) > 5, f"the screenshot looks blank ({len(colors)} colours)"
    # the stage bars' green is on screen (status ok: #2e9e5b)
    assert any(abs(c[0] - 0x2E) < 12 and abs(c[1] - 0x9E) < 12 and abs(c[2] - 0x5B) < 12 for c in colors)

    history = chromium(tmp_path, "--dump-dom", (run_dir.parent / HISTORY_FILE).as_uri()).stdout
    assert run_dir.name in history and history.count('class="bar run"') == 4
