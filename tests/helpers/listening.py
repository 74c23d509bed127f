"""Pieces of the listening tests (``stemsep listen``, the report's track pages): a small stem corpus
and headless Chromium driven by Playwright (skipped, naming the install command, where either is missing)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 44100
TRACKS = ("song1", "song2")
STEMS = ("bass", "vocals")
BROWSER_INSTALL = "apt-get update && apt-get install -y chromium && pip install playwright"
# Sets a range input as a user's drag does: the value, then the input event.
SET_SLIDER = "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }"


def write_corpus(root: Path, seconds: float = 1.5) -> Path:
    """``refs/``, ``A/`` (little noise added) and ``B/`` (more): two tracks of two stereo stems."""
    rng = np.random.default_rng(0)
    for track in TRACKS:
        for stem in STEMS:
            clean = 0.2 * rng.standard_normal((round(seconds * SR), 2))
            for system, noise in (("refs", 0.0), ("A", 0.02), ("B", 0.1)):
                folder = root / system / track
                folder.mkdir(parents=True, exist_ok=True)
                wav = clean + noise * rng.standard_normal(clean.shape)
                sf.write(folder / f"{stem}.wav", wav.astype(np.float32), SR, subtype="PCM_16")
    return root


def browser_fixture():
    """A module fixture: headless Chromium (Debian's package) through Playwright, or a skip naming the
    install command (``browser = browser_fixture()`` in a test module)."""

    @pytest.fixture(scope="module")
    def browser():
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            pytest.skip(f"the browser tests need playwright and chromium: {BROWSER_INSTALL}")
        executable = shutil.which("chromium") or shutil.which("chromium-browser")
        if executable is None:
            pytest.skip(f"the browser tests need chromium: {BROWSER_INSTALL}")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                                 args=["--autoplay-policy=no-user-gesture-required", "--mute-audio"])
            yield browser
            browser.close()

    return browser
