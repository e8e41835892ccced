"""The web app in a real browser: serve.py started as a user starts it, driven by headless Chromium.

Needs Debian's `chromium` and `chromium-driver` (`make test` installs them
where apt can); without them this test skips and says how to get them.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import ARTISTS, ENV, ROOT, encode, picture

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no Chromium/chromedriver: `sudo apt-get install chromium chromium-driver` "
           "(Debian/Ubuntu), or `make browser` as root, to run the browser test")

PAGE_TIMEOUT = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_saved_model, tmp_path_factory):
    """`python serve.py` on a free port; its URL once the model answers."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "w+")
    process = subprocess.Popen(
        [sys.executable, "serve.py", f"--model_dir={tiny_saved_model}", f"--port={port}"],
        cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + PAGE_TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(f"{url}/v1/models/artist", timeout=5):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"serve.py did not start:\n{log.read()}")
            time.sleep(0.5)
    yield url
    process.terminate()
    process.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # No GPU, no sandbox as root, and none of Chromium's own network traffic (this
    # machine's network is closed: each such connection would wait to fail).
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1800",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    # Both paths given: Selenium Manager is not asked to find (or download) anything.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    yield driver
    driver.quit()


def test_upload_two_paintings_and_a_broken_file(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    files = [tmp_path / "sunflowers.jpg", tmp_path / "composition.png", tmp_path / "broken.jpg"]
    files[0].write_bytes(encode(picture(1, 96, 128)))
    files[1].write_bytes(encode(picture(2, 120, 80), "PNG"))
    files[2].write_bytes(b"this is not a painting")

    browser.get(server + "/")
    assert "Who painted it?" in browser.title
    browser.find_element(By.ID, "files").send_keys("\n".join(str(f) for f in files))
    WebDriverWait(browser, PAGE_TIMEOUT).until(
        lambda b: len(b.find_elements(By.CSS_SELECTOR, "section.panel")) == 3)

    panels = {p.find_element(By.TAG_NAME, "h2").text: p
              for p in browser.find_elements(By.CSS_SELECTOR, "section.panel")}
    assert set(panels) == {f.name for f in files}
    for name in ("sunflowers.jpg", "composition.png"):
        panel = panels[name]
        bars = [b.find_element(By.CLASS_NAME, "name").text
                for b in panel.find_elements(By.CLASS_NAME, "bar")]
        assert len(bars) == 5 and set(bars) <= set(ARTISTS)
        for image_class in ("painting", "heatmap"):
            image = panel.find_element(By.CLASS_NAME, image_class)
            assert browser.execute_script("return arguments[0].naturalWidth", image) > 0
        similar = panel.find_elements(By.CSS_SELECTOR, ".similar figure")
        assert len(similar) == 4
        for figure in similar:
            assert browser.execute_script(
                "return arguments[0].naturalWidth", figure.find_element(By.TAG_NAME, "img")) > 0
            assert figure.text.rsplit(" (", 1)[0] in ARTISTS
        card = panel.find_element(By.CLASS_NAME, "card")
        assert card.find_element(By.TAG_NAME, "h3").text == bars[0]
    broken = panels["broken.jpg"]
    assert "error" in broken.get_attribute("class")
    assert "not an image" in broken.find_element(By.CLASS_NAME, "message").text

    screenshot = tmp_path / "webapp.png"
    assert browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("WEBAPP_SCREENSHOT"):  # README's picture: WEBAPP_SCREENSHOT=path.
        shutil.copy(screenshot, os.environ["WEBAPP_SCREENSHOT"])


def test_server_keeps_serving_after_the_page_errors(server):
    request = urllib.request.Request(server + "/panel", data=b"", headers={"X-File-Name": "x"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=60)
    assert error.value.code == 400
    with urllib.request.urlopen(server + "/", timeout=60) as page:
        assert b'id="files"' in page.read()
