"""The documentation's own tests (``nox -s docs`` runs them after the strict build):

* every tutorial runs as a plain script;
* the built site, served on 127.0.0.1 and opened in headless Chromium (Debian's ``chromium`` and
  ``chromium-driver``), has every page reachable from the home page, no broken internal link or anchor, no image that
  fails to load and no console error; screenshots of the home page and of a neuron-type page are saved in
  ``docs/_build/screenshots/``.
"""

from __future__ import annotations

import functools
import http.server
import os
import runpy
import shutil
import threading
from collections import deque
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import pytest

HERE = Path(__file__).resolve().parent
SITE = HERE / "_build" / "html"
TUTORIALS = sorted((HERE / "tutorials").glob("plot_*.py"))
CHROMIUM_FLAGS = (  # headless, and off the network: the machine's closed network refuses everything else
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,900",
)  # fmt: skip


@pytest.mark.parametrize("script", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_as_a_script(script, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")


@pytest.fixture(scope="module")
def served():
    if not (SITE / "index.html").is_file():
        pytest.fail(f"no built site in {SITE}: run sphinx-build first (nox -s docs)")
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.path.exists(chromium) and os.path.exists(driver_path)):
        pytest.fail("Debian's chromium and chromium-driver are needed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    from selenium.webdriver.chrome.service import Service

    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    yield driver
    driver.quit()


_PAGE_REPORT = """
const internal = [];
for (const a of document.querySelectorAll('a[href]')) internal.push(a.href);
const badImages = [];
for (const img of document.images) if (!img.complete || img.naturalWidth === 0) badImages.push(img.src);
const ids = Array.from(document.querySelectorAll('[id]')).map(e => e.id);
return {links: internal, badImages: badImages, ids: ids};
"""


def test_site_in_headless_chromium(served, browser):
    """Visit every page reachable from the home page; every built page must be among them."""
    root = served
    queue, seen, anchors, problems = deque([root]), set(), {}, []
    links_to_check: list[tuple[str, str]] = []
    while queue:
        url = queue.popleft()
        if url in seen:
            continue
        seen.add(url)
        browser.get(url)
        report = browser.execute_script(_PAGE_REPORT)
        anchors[url] = set(report["ids"])
        problems += [f"{url}: image does not load: {src}" for src in report["badImages"]]
        for entry in browser.get_log("browser"):
            if entry["level"] == "SEVERE":
                problems.append(f"{url}: console error: {entry['message']}")
        for href in report["links"]:
            target, _ = urldefrag(href)
            if not target.startswith(root):
                continue  # external links are not followed (the build is offline)
            links_to_check.append((url, href))
            if target.endswith((".html", "/")) and target not in seen:
                queue.append(target)
    for page, href in links_to_check:
        target, fragment = urldefrag(href)
        path = SITE / urlparse(target).path.lstrip("/")
        if path.is_dir():
            path = path / "index.html"
        if not path.is_file():
            problems.append(f"{page}: broken link {href}")
        elif fragment and target in anchors and fragment not in anchors[target]:
            problems.append(f"{page}: link to a missing anchor {href}")
    built = {urljoin(root, str(p.relative_to(SITE))) for p in SITE.rglob("*.html")}
    indexes = ("genindex.html", "search.html", "py-modindex.html", "_modules/index.html")  # reached by other means
    skipped = {u for u in built if not u.endswith(indexes)} - seen
    skipped -= {u.removesuffix("index.html") for u in seen}
    problems += [f"page not reachable from the home page: {u}" for u in sorted(skipped)]
    assert not problems, "\n".join(problems)

    shots = HERE / "_build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    browser.get(root)
    browser.save_screenshot(str(shots / "home.png"))
    browser.get(urljoin(root, "_generated/neurons/B.html"))
    browser.save_screenshot(str(shots / "neurons-B.png"))
    assert (shots / "home.png").stat().st_size > 10_000 and (shots / "neurons-B.png").stat().st_size > 10_000
