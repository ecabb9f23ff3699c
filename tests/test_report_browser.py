"""The self-contained HTML report opens in a real browser and shows its tables and plots (headless Chromium
screenshot). Skips, saying so, where no Chromium is installed (`apt-get install chromium`)."""

import shutil
import subprocess

import pytest

from sdft.reporting.report import _plot, render_html

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    import numpy as np
    from PIL import Image

    plot = _plot(tmp_path / "fig.png", {"vanilla": [(0, 0.2), (1, 0.6)], "sdft": [(0, 0.2), (1, 0.4)]},
                 "mix ratio", "safe rate", "a plot")
    blocks = [("h1", "SDFT experiment: browser check"), ("table", ["arm", "gsm8k"], [["seed", "5.0"], ["sdft", "18.8"]]),
              ("img", plot, "fig")]
    page = tmp_path / "report.html"
    page.write_text(render_html(blocks, "browser check"), encoding="utf-8")
    shot = tmp_path / "shot.png"
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={shot}", "--window-size=1000,900", page.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert shot.exists(), r.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (900, 1000)
    dark = (img < 128).mean()  # text, table borders and plot lines: a blank or broken page has ~none
    assert dark > 0.005, f"page looks blank ({dark:.4f} dark pixels)"
    rows_with_ink = (img < 200).any(axis=1).sum()
    assert rows_with_ink > 300  # heading + table + an embedded figure span most of the first screen
