"""The page in a real headless browser (Debian's chromium + chromedriver, driven by selenium),
against a live server with the real LiteMedSAM: open a test-made image, drag a box with real
mouse events, read the overlay's pixels off a screenshot, refine with a background click, and run
a small volume (box, propagate, download) whose downloaded label map equals what
``medsamkit segment --boxes-file`` makes from the downloaded prompts; two objects in their colours
with names, hide/show, opacity, pan, undo/redo/clear; a propagation cancelled from its progress
bar, run again, and a slice corrected with a click.

One browser and one server for the whole module. Skipped, with the reason, where no chromium or
chromedriver can be found (CI installs them with apt-get).
"""

from __future__ import annotations

import io
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ball_volume, disc_image

from medsamkit.cli.main import main
from medsamkit.io import read_volume, write_volume
from medsamkit.io.geometry import Geometry

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="no chromium + chromedriver on PATH (Debian: apt-get install chromium "
                                       "chromium-driver)")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra")

GREEN = (0x3D, 0xDC, 0x97)  # the page's colour of label 1
RED = (0xFF, 0x6B, 0x6B)  # ... and of label 2


class Live(str):
    """The server's address, with its app (the tests reach its engine)."""

    def __new__(cls, url, app):
        live = super().__new__(cls, url)
        live.app = app
        return live


@pytest.fixture(scope="module")
def server(base_predictor):
    """A live server on a free loopback port, in a background thread."""
    import uvicorn

    from medsamkit.server.app import create_app
    from medsamkit.server.config import ServerConfig
    from medsamkit.server.engine import Engine

    config = ServerConfig(max_sessions=4)
    app = create_app(config, Engine(base_predictor, config.cache_bytes, "litemedsam"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not uv.started and time.time() < deadline:
        time.sleep(0.05)
    assert uv.started
    yield Live(f"http://127.0.0.1:{port}/", app)
    uv.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="medsamkit-chromium-")
    downloads = Path(tempfile.mkdtemp(prefix="medsamkit-downloads-"))
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", "--window-size=1280,800", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)
    shutil.rmtree(downloads, ignore_errors=True)


def wait_idle(driver, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if driver.execute_script("return !!window.medsamkit && window.medsamkit.idle"):
            return
        time.sleep(0.1)
    raise AssertionError("the page did not finish its work in time")


def screenshot(driver) -> np.ndarray:
    png = driver.get_screenshot_as_png()
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]  # RGB


def canvas_point(driver, x, y):
    """Page pixel (CSS px, = screenshot px at scale 1) of image pixel (x, y)'s centre."""
    return driver.execute_script(
        "const v = window.medsamkit.viewer, r = v.canvas.getBoundingClientRect();"
        "const s = v.toScreen(arguments[0] + 0.5, arguments[1] + 0.5);"
        "return [r.left + s.x, r.top + s.y, r.width, r.height];", x, y)


def move_to(driver, actions, x, y):
    """Move the mouse onto image pixel (x, y) of the canvas."""
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "view")
    px, py, w, h = canvas_point(driver, x, y)
    rect = canvas.rect
    return actions.move_to_element_with_offset(canvas, px - rect["x"] - w / 2, py - rect["y"] - h / 2)


def open_file(driver, server, path):
    from selenium.webdriver.common.by import By

    driver.get(server)
    wait_idle(driver)
    driver.find_element(By.ID, "file-input").send_keys(str(path))
    deadline = time.time() + 120
    while not driver.execute_script("return !!(window.medsamkit.info && window.medsamkit.view)"):
        assert time.time() < deadline, "the image did not open"
        time.sleep(0.1)
    wait_idle(driver)


def drag_box(driver, x0, y0, x1, y1):
    from selenium.webdriver.common.action_chains import ActionChains

    actions = move_to(driver, ActionChains(driver), x0, y0).click_and_hold()
    actions = move_to(driver, actions, (x0 + x1) / 2, (y0 + y1) / 2)
    move_to(driver, actions, x1, y1).release().perform()
    wait_idle(driver)


def sample(image, driver, x, y):
    px, py, _, _ = canvas_point(driver, x, y)
    return image[int(py), int(px)].astype(int)


def test_box_then_background_click_on_a_2d_image(server, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    path = tmp_path / "disc.png"
    cv2.imwrite(str(path), disc_image()[:, :, ::-1])  # disc centre (60, 50), radius 24
    open_file(browser, server, path)
    assert browser.find_element(By.ID, "drop").get_attribute("hidden") is not None
    assert "disc.png" in browser.find_element(By.ID, "image-title").text
    before = screenshot(browser)

    drag_box(browser, 30, 20, 90, 80)
    view = browser.execute_script("return window.medsamkit.view")
    assert [(o["label"], o["box"]) for o in view["objects"]] == [(1, [30, 20, 90, 80])]
    boxed = screenshot(browser)
    # inside the mask the screen shows label 1's green blended at the mask opacity; outside, the image
    alpha = round(browser.execute_script("return window.medsamkit.viewer.opacity") * 255) / 255
    for x, y in ((52, 58), (66, 44), (60, 62)):
        expected = sample(before, browser, x, y) * (1 - alpha) + np.array(GREEN) * alpha
        assert np.abs(sample(boxed, browser, x, y) - expected).max() <= 4, (x, y)
    for x, y in ((110, 85), (10, 10), (100, 20)):
        assert np.abs(sample(boxed, browser, x, y) - sample(before, browser, x, y)).max() <= 3, (x, y)
    mask_area = browser.execute_script("return window.medsamkit.viewer.labels.data.reduce((a, v) => a + (v > 0), 0)")
    assert 0.8 * np.pi * 24 ** 2 < mask_area < 1.3 * np.pi * 24 ** 2

    # a background click (right button) in the disc refines object 1: its mask changes
    move_to(browser, ActionChains(browser), 60, 50).context_click().perform()
    wait_idle(browser)
    view = browser.execute_script("return window.medsamkit.view")
    assert view["objects"][0]["points"] == [[60, 50, 0]]
    clicked = screenshot(browser)
    new_area = browser.execute_script("return window.medsamkit.viewer.labels.data.reduce((a, v) => a + (v > 0), 0)")
    assert new_area != mask_area
    assert not np.array_equal(clicked, boxed)

    # undo (Ctrl+Z) brings the box-only mask back
    ActionChains(browser).key_down("\ue009").send_keys("z").key_up("\ue009").perform()
    wait_idle(browser)
    assert browser.execute_script("return window.medsamkit.view.objects[0].points") == []
    area = browser.execute_script("return window.medsamkit.viewer.labels.data.reduce((a, v) => a + (v > 0), 0)")
    assert area == mask_area


def test_a_volume_box_propagate_download_equals_the_cli(server, browser, tmp_path, capsys, cli_shares_the_model):
    from selenium.webdriver.common.by import By

    geometry = Geometry(spacing=(4.0, 0.9, 0.8), origin=(5.0, -3.0, 12.0))
    path = tmp_path / "ball.nii.gz"
    write_volume(path, ball_volume(), geometry)
    open_file(browser, server, path)
    info = browser.execute_script("return window.medsamkit.info")
    assert info["volume"] and browser.execute_script("return window.medsamkit.index") == 2
    drag_box(browser, 16, 12, 56, 52)
    view = browser.execute_script("return window.medsamkit.view")
    assert view["stale"] and view["objects"][0]["z_range"] == [2, 2]
    browser.find_element(By.ID, "propagate").click()
    time.sleep(0.2)
    wait_idle(browser, timeout=300)
    assert "Done" in browser.find_element(By.ID, "progress-text").text
    view = browser.execute_script("return window.medsamkit.view")
    assert not view["stale"] and view["objects"][0]["z_range"] == view["objects"][0]["target"]

    for button, name in (("download-labels", "ball_labels.nii.gz"), ("download-prompts", "ball_prompts.json")):
        browser.find_element(By.ID, button).click()
        target = browser.downloads / name
        deadline = time.time() + 30
        while not target.exists():
            assert time.time() < deadline, f"{name} was not downloaded"
            time.sleep(0.1)
        wait_idle(browser)
    time.sleep(0.3)  # let the browser finish writing
    web, web_geometry = read_volume(browser.downloads / "ball_labels.nii.gz")
    assert web_geometry.same_as(geometry) and web[1:4].any()
    prompts = browser.downloads / "ball_prompts.json"
    out = tmp_path / "cli.nii.gz"
    assert main(["-q", "segment", str(path), "--boxes-file", str(prompts), "-o", str(out)]) == 0
    capsys.readouterr()
    cli, _ = read_volume(out)
    np.testing.assert_array_equal(cli, web)
    # the slider shows another slice of the propagated mask
    browser.execute_script("window.medsamkit.setSlice(1)")
    wait_idle(browser)
    shown = browser.execute_script("return Array.from(window.medsamkit.viewer.labels.data)")
    assert np.array_equal(np.array(shown).reshape(64, 72), web[1])


def test_drop_a_file_zoom_with_the_wheel_and_window_presets(server, browser):
    from selenium.webdriver.common.action_chains import ActionChains, ScrollOrigin
    from selenium.webdriver.common.by import By

    browser.get(server)
    wait_idle(browser)
    # a file dropped on the page opens (the drop event the browser fires for a file from the desktop)
    browser.execute_script("""
        // a CT-like slice as an .npy file: air (-1000 HU) around a 30 x 25 block of soft tissue (40 HU)
        let header = "{'descr': '<i2', 'fortran_order': False, 'shape': (60, 80), }";
        header = header.padEnd(Math.ceil((header.length + 11) / 64) * 64 - 11, " ") + "\\n";
        const pixels = new Int16Array(60 * 80).fill(-1000);
        for (let y = 15; y < 40; y++) for (let x = 20; x < 50; x++) pixels[y * 80 + x] = 40;
        const head = new Uint8Array(10 + header.length);
        head.set([0x93, 78, 85, 77, 80, 89, 1, 0, header.length & 255, header.length >> 8]);
        for (let i = 0; i < header.length; i++) head[10 + i] = header.charCodeAt(i);
        const data = new DataTransfer();
        data.items.add(new File([head, pixels.buffer], "dropped.npy"));
        window.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true }));""")
    deadline = time.time() + 120
    while not browser.execute_script("return !!(window.medsamkit.info && window.medsamkit.info.name === 'dropped.npy')"):
        assert time.time() < deadline, "the dropped file did not open"
        time.sleep(0.1)
    wait_idle(browser)
    # the wheel zooms about the pointer
    canvas = browser.find_element(By.ID, "view")
    zoom = browser.execute_script("return window.medsamkit.viewer.zoom")
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(canvas), 0, -300).perform()
    time.sleep(0.2)
    assert browser.execute_script("return window.medsamkit.viewer.zoom") > zoom * 1.2
    browser.find_element(By.ID, "zoom-fit").click()
    assert abs(browser.execute_script("return window.medsamkit.viewer.zoom") - zoom) < 1e-6
    # grey data in Hounsfield units has window/level with the CT presets
    presets = [b.text.lower() for b in browser.find_elements(By.CSS_SELECTOR, "#presets button")]
    assert presets[:2] == ["default", "full"] and {"abdomen", "lung", "bone"} <= set(presets)
    browser.find_element(By.CSS_SELECTOR, "#presets button:nth-child(2)").click()
    assert browser.execute_script("return window.medsamkit.viewer.window") == [-1000, 40]
    browser.find_element(By.XPATH, "//div[@id='presets']/button[text()='lung']").click()
    assert browser.execute_script("return window.medsamkit.viewer.window") == [-1350, 150]


def press(driver, *keys, modifier=None):
    from selenium.webdriver.common.action_chains import ActionChains

    actions = ActionChains(driver)
    if modifier:
        actions = actions.key_down(modifier)
    for key in keys:
        actions = actions.send_keys(key)
    if modifier:
        actions = actions.key_up(modifier)
    actions.perform()
    wait_idle(driver)


def blended(before, driver, x, y, colour):
    alpha = round(driver.execute_script("return window.medsamkit.viewer.opacity") * 255) / 255
    return sample(before, driver, x, y) * (1 - alpha) + np.array(colour) * alpha


def objects(driver):
    return driver.execute_script("return window.medsamkit.view.objects")


def test_two_objects_names_hide_opacity_pan_redo_and_clear(server, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    image = disc_image(h=112, w=160, centre=(45, 55), radius=20)
    cv2.circle(image, (115, 55), 20, (160, 200, 230), -1)
    path = tmp_path / "two.png"
    cv2.imwrite(str(path), image[:, :, ::-1])
    open_file(browser, server, path)
    before = screenshot(browser)
    drag_box(browser, 22, 32, 68, 78)
    press(browser, "n")  # the next gesture starts a new object
    drag_box(browser, 92, 32, 138, 78)
    assert [(o["label"], o["name"]) for o in objects(browser)] == [(1, "Object 1"), (2, "Object 2")]
    shot = screenshot(browser)
    for (x, y), colour in (((45, 55), GREEN), ((115, 55), RED)):  # each object in its colour
        assert np.abs(sample(shot, browser, x, y) - blended(before, browser, x, y, colour)).max() <= 4

    # rename the second object in its panel row
    name = browser.find_elements(By.CSS_SELECTOR, "#objects li input.name")[1]
    name.send_keys(Keys.CONTROL, "a")
    name.send_keys("cyst", Keys.ENTER)
    wait_idle(browser)
    assert objects(browser)[1]["name"] == "cyst"

    # the eye hides the first object (its pixels show the image again), and shows it back
    eye = browser.find_elements(By.CSS_SELECTOR, "#objects li")[0].find_elements(By.CSS_SELECTOR, "button.icon")[0]
    eye.click()
    hidden = screenshot(browser)
    assert np.abs(sample(hidden, browser, 45, 55) - sample(before, browser, 45, 55)).max() <= 3
    assert np.abs(sample(hidden, browser, 115, 55) - blended(before, browser, 115, 55, RED)).max() <= 4
    browser.find_elements(By.CSS_SELECTOR, "#objects li")[0].find_elements(By.CSS_SELECTOR, "button.icon")[0].click()

    # "]" raises the mask opacity; the overlay follows
    opacity = browser.execute_script("return window.medsamkit.viewer.opacity")
    press(browser, "]")
    assert browser.execute_script("return window.medsamkit.viewer.opacity") == pytest.approx(opacity + 0.1)
    shot = screenshot(browser)
    assert np.abs(sample(shot, browser, 45, 55) - blended(before, browser, 45, 55, GREEN)).max() <= 4

    # the pan tool (H) moves the image with the mouse, without prompting
    press(browser, "h")
    pan = browser.execute_script("return window.medsamkit.viewer.pan")
    move_to(browser, ActionChains(browser), 80, 90).click_and_hold().move_by_offset(20, 10) \
        .move_by_offset(20, 15).release().perform()
    wait_idle(browser)
    moved = browser.execute_script("return window.medsamkit.viewer.pan")
    assert moved == pytest.approx([pan[0] + 40, pan[1] + 25], abs=1.5) and len(objects(browser)) == 2
    press(browser, "s")

    # undo, redo, clear all (one undoable step)
    press(browser, "z", modifier=Keys.CONTROL)
    assert [o["label"] for o in objects(browser)] == [1]
    ActionChains(browser).key_down(Keys.CONTROL).key_down(Keys.SHIFT).send_keys("z").key_up(Keys.SHIFT) \
        .key_up(Keys.CONTROL).perform()
    wait_idle(browser)
    assert [(o["label"], o["name"]) for o in objects(browser)] == [(1, "Object 1"), (2, "cyst")]
    browser.find_element(By.ID, "clear").click()
    wait_idle(browser)
    assert objects(browser) == []
    assert not browser.execute_script("return window.medsamkit.viewer.labels.data.some((v) => v > 0)")
    press(browser, "z", modifier=Keys.CONTROL)
    assert [o["label"] for o in objects(browser)] == [1, 2]


def test_a_volume_propagation_cancelled_then_run_then_a_slice_edited(server, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    path = tmp_path / "ball9.nii.gz"
    write_volume(path, ball_volume(nz=9), Geometry(spacing=(3.0, 1.0, 1.0)))
    open_file(browser, server, path)
    assert browser.execute_script("return window.medsamkit.index") == 4
    drag_box(browser, 16, 12, 56, 52)
    engine = server.app.state.medsamkit.engine
    with engine.lock:  # the model is busy elsewhere: the propagation waits in its first slice
        press_p = ActionChains(browser).send_keys("p")
        press_p.perform()
        deadline = time.time() + 30
        while not browser.execute_script("return window.medsamkit.running"):
            assert time.time() < deadline, "the propagation did not start"
            time.sleep(0.05)
        assert browser.find_element(By.ID, "progress").is_displayed()
        browser.find_element(By.ID, "cancel").click()
        time.sleep(0.3)
    wait_idle(browser, timeout=300)
    assert "cancelled" in browser.find_element(By.ID, "toast").text.lower()
    view = browser.execute_script("return window.medsamkit.view")
    assert view["stale"] and view["objects"][0]["z_range"] == [4, 4]

    browser.find_element(By.ID, "propagate").click()
    time.sleep(0.2)
    wait_idle(browser, timeout=300)
    view = browser.execute_script("return window.medsamkit.view")
    assert not view["stale"] and view["objects"][0]["z_range"] == view["objects"][0]["target"]

    # two slices up, a background click in the ball corrects that slice (and beyond, as far as it changes)
    press(browser, "\ue013", "\ue013")  # arrow up, twice
    assert browser.execute_script("return window.medsamkit.index") == 6
    labels = "return Array.from(window.medsamkit.viewer.labels.data)"
    before = np.array(browser.execute_script(labels))
    assert before.any()
    move_to(browser, ActionChains(browser), 36, 32).context_click().perform()
    wait_idle(browser, timeout=300)
    assert browser.execute_script("return window.medsamkit.view.objects[0].points") == [[36, 32, 6, 0]]
    after = np.array(browser.execute_script(labels))
    assert not np.array_equal(after, before)
    # V hides the selected object's mask, V shows it again
    press(browser, "v")
    assert browser.execute_script("return [...window.medsamkit.viewer.hidden]") == [1]
    press(browser, "v")
    assert browser.execute_script("return [...window.medsamkit.viewer.hidden]") == []
