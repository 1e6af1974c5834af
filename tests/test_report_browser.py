"""The report in a real browser: headless Chromium from Debian's packages, driven by Selenium.

One browser session for the module. The page is written from runs the real tracker wrote (tests/_report_runs.py:
2 groups x 3 seeds and a failed run); every number the test compares with comes from the runs' stores.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from _browser import console_errors, non_local, requested_urls, start_browser, wait_until
from _report_runs import FAILED, FPS, FRAMES, STEPS, frame_level, write_runs
from opusclip_track import RunStore
from opusclip_track.report import build_report

ALL_VIDEOS_LOADED = ("const v = [...document.querySelectorAll('video')]; "
                     "return v.length > 0 && v.every(x => x.readyState >= 2)")
SETTLED = "return [...document.querySelectorAll('video')].every(x => !x.seeking && x.readyState >= 2)"


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_runs(tmp_path_factory.getbasetemp() / "report-runs")


@pytest.fixture(scope="module")
def page(log_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("page") / "report.html"
    build_report(["*"], out, log_dir=log_dir)
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    driver = start_browser(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


@pytest.fixture
def loaded(browser: WebDriver, page: Path) -> WebDriver:
    """The report, freshly loaded, with its clips ready; the logs so far are drained."""
    browser.get(page.as_uri())
    wait_until(browser, ALL_VIDEOS_LOADED)
    return browser


def test_the_page_renders_with_no_console_error_and_no_request_off_the_machine(browser: WebDriver,
                                                                               page: Path) -> None:
    console_errors(browser), requested_urls(browser)  # drain earlier entries
    browser.get(page.as_uri())
    wait_until(browser, ALL_VIDEOS_LOADED)
    shot = np.asarray(Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB"))
    assert shot.std() > 20 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 50  # text, charts, colours: not blank
    assert console_errors(browser) == []
    urls = requested_urls(browser, page.as_uri())
    assert page.as_uri() in urls  # the log does record requests ...
    assert non_local(urls) == []  # ... and none leaves the machine
    headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h2")]
    assert headings[:3] == ["Alerts (2)", "Runs", "Config diff"]  # alerts on top


def test_the_network_check_catches_a_page_that_loads_from_the_internet(browser: WebDriver, tmp_path: Path) -> None:
    bad = tmp_path / "cdn.html"
    bad.write_text('<html><body><img src="https://cdn.example.invalid/plotly.png"></body></html>')
    requested_urls(browser)
    browser.get(bad.as_uri())
    assert non_local(requested_urls(browser, bad.as_uri())) == ["https://cdn.example.invalid/plotly.png"]
    console_errors(browser)


def test_every_clip_loads_and_lasts_frames_over_fps(loaded: WebDriver, log_dir: Path) -> None:
    clips = loaded.execute_script(
        "return [...document.querySelectorAll('video')].map(v => [v.dataset.run, v.readyState, v.duration, "
        "v.videoWidth, v.videoHeight])")
    assert len(clips) == 7  # every run has a clip at step 10, the last step they share
    for run, ready, duration, width, height in clips:
        (event,) = [e for e in RunStore(log_dir / run).events("video") if e["step"] == 10]
        assert ready >= 2
        expected = event["data"]["frames"] / event["data"]["fps"]
        assert abs(duration - expected) <= 1 / event["data"]["fps"], (run, duration, expected)
        assert (width, height) == (event["data"]["width"], event["data"]["height"])


def _frame_shown(driver: WebDriver, video: object) -> int:
    """Which frame a clip shows, read from its pixels: the reference (lower) half is gray level frame_level(t)."""
    image = np.asarray(Image.open(io.BytesIO(video.screenshot_as_png)).convert("L"), dtype=np.float64)  # type: ignore[attr-defined]
    h, w = image.shape
    level = image[int(h * 0.62):int(h * 0.9), int(w * 0.25):int(w * 0.75)].mean()
    t = round((level - frame_level(0)) / (frame_level(1) - frame_level(0)))
    assert abs(level - frame_level(t)) < 8, (level, t)
    return t


def test_lock_step_play_advances_every_clip_to_the_same_frame(loaded: WebDriver) -> None:
    gallery = loaded.find_element(By.CSS_SELECTOR, ".gallery")
    videos = gallery.find_elements(By.TAG_NAME, "video")
    assert {_frame_shown(loaded, v) for v in videos} == {0}
    play = gallery.find_element(By.CSS_SELECTOR, "button.play")
    play.click()
    wait_until(loaded, "return Number(document.querySelector('.gallery').dataset.frame) >= 3", timeout=15)
    play.click()  # pause
    wait_until(loaded, SETTLED)
    frame = int(gallery.get_attribute("data-frame"))
    times = loaded.execute_script("return [...document.querySelectorAll('.gallery video')].map(v => v.currentTime)")
    assert {math.floor(t * FPS) for t in times} == {frame}
    assert {_frame_shown(loaded, v) for v in videos} == {frame}  # what is on screen, not only the clock
    assert gallery.find_element(By.CSS_SELECTOR, ".frame-label").text == f"frame {frame + 1} / {FRAMES}"

    gallery.find_element(By.CSS_SELECTOR, "button.next").click()
    wait_until(loaded, SETTLED)
    assert {_frame_shown(loaded, v) for v in videos} == {(frame + 1) % FRAMES}
    loaded.execute_script("const s = document.querySelector('.gallery input[type=range]'); s.value = 6; "
                          "s.dispatchEvent(new Event('input'));")
    wait_until(loaded, SETTLED)
    assert {_frame_shown(loaded, v) for v in videos} == {6}
    assert console_errors(loaded) == []


def test_smoothing_and_log_scale_checkboxes_switch_the_curves(loaded: WebDriver) -> None:
    chart = loaded.find_element(By.CSS_SELECTOR, 'figure.chart[data-key="train/loss"]')
    assert chart.get_attribute("data-log") == "1"
    linear, log = (chart.find_element(By.CSS_SELECTOR, f"g.scale-{s}") for s in ("lin", "log"))
    assert linear.is_displayed() and not log.is_displayed()
    loaded.find_element(By.ID, "logy").click()
    assert log.is_displayed() and not linear.is_displayed()
    smooth = chart.find_elements(By.CSS_SELECTOR, "g.scale-log path.smooth")
    assert smooth and smooth[0].is_displayed()
    loaded.find_element(By.ID, "smooth").click()
    assert not smooth[0].is_displayed()
    assert chart.find_element(By.CSS_SELECTOR, "g.scale-log path.raw").value_of_css_property("opacity") == "1"


def _finals(log_dir: Path, key: str) -> dict[str, list[float]]:
    """Each group's finite final values of `key`, straight from the stores."""
    groups: dict[str, list[float]] = {}
    for run_dir in sorted(log_dir.iterdir()):
        store = RunStore(run_dir)
        last = store.last(key)
        if last is not None and math.isfinite(last[1]):
            groups.setdefault(store.meta()["group"], []).append(last[1])
        store.close()
    return groups


def _shown(driver: WebDriver, selector: str) -> list[float]:
    return [float(v) for v in driver.execute_script(
        f"return [...document.querySelectorAll('{selector}')].map(td => td.dataset.value)")]


@pytest.mark.parametrize("key", ["video/psnr", "video/ssim", "train/loss"])
def test_the_statistics_shown_equal_scipy_on_the_stores_values(loaded: WebDriver, log_dir: Path, key: str) -> None:
    groups = _finals(log_dir, key)
    block = f'.metric[data-metric="{key}"]'
    for name, values in groups.items():
        mean, std, low, high = _shown(loaded, f'{block} table.groups tr[data-group="{name}"] td[data-value]')[1:5]
        a = np.array(values)
        interval = stats.t.interval(0.95, a.size - 1, loc=a.mean(), scale=stats.sem(a))
        assert [mean, std, low, high] == pytest.approx([a.mean(), a.std(ddof=1), *interval], rel=1e-9)
    diff, low, high, t, df, p, g = _shown(loaded, f'{block} table.comparisons tr[data-a="transformer"] td[data-value]')
    welch = stats.ttest_ind(groups["transformer"], groups["unet"], equal_var=False)
    ci = welch.confidence_interval(0.95)
    assert [diff, low, high, t, df, p] == pytest.approx(
        [np.mean(groups["transformer"]) - np.mean(groups["unet"]), ci.low, ci.high, welch.statistic, welch.df,
         welch.pvalue], rel=1e-9)
    shown_text = loaded.find_element(By.CSS_SELECTOR, f'{block} table.comparisons td[data-value="{p!r}"]').text
    assert float(shown_text) == pytest.approx(welch.pvalue, rel=1e-3)
    if key == "train/loss":  # the diverged run's NaN is left out, and the page says so
        assert len(groups["unet"]) == 3
        note = loaded.find_element(By.CSS_SELECTOR, f'{block} tr[data-group="unet"]').text
        assert f"excluded (not finite): {FAILED} nan" in note


def test_clips_from_a_sibling_folder_load_by_relative_urls(browser: WebDriver, log_dir: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "shared" / "cmp.html"
    result = build_report(["transformer-*"], out, log_dir=log_dir, media="folder", clip_step=STEPS - 1)
    assert result.media == "folder"
    requested_urls(browser)
    browser.get(out.as_uri())
    wait_until(browser, ALL_VIDEOS_LOADED)
    urls = requested_urls(browser, out.as_uri())
    assert non_local(urls) == []
    clip_urls = [u for u in urls if u.endswith(".mp4")]
    assert len(clip_urls) == 3 and all(u.startswith((tmp_path / "shared" / "cmp_files").as_uri()) for u in clip_urls)
    assert console_errors(browser) == []
