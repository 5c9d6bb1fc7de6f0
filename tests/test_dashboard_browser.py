"""The dashboard end to end in a real headless browser (Debian's chromium + chromedriver).

A uvicorn server started by the test serves the stored campaign from its embedded
(montydb) store. The tests fail, rather than skip, when the browser is missing, unless
``ALCAMPAIGN_SKIP_BROWSER=1`` (``scripts/setup.sh --browser``, run by ``scripts/test.sh``,
installs it).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest
import uvicorn
from pymatgen.core import Structure
from typer.testing import CliRunner

from alcampaign.cli import app as cli_app
from alcampaign.serve.api import create_app
from alcampaign.store.facade import open_stores

from conftest import headless_chromium

WAIT = 20  # seconds, an upper bound on page loads on a busy machine, not a timing check

if os.environ.get("ALCAMPAIGN_SKIP_BROWSER") == "1":
    pytest.skip("ALCAMPAIGN_SKIP_BROWSER=1", allow_module_level=True)


@pytest.fixture(scope="module")
def server(stored_campaign):
    """``(base URL, store file, campaign name)`` of a live server on a free port."""
    store_file, name = stored_campaign
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(open_stores(store_file)[1], poll_seconds=1)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", store_file, name
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = headless_chromium(
        tmp_path_factory.mktemp("chromium-profile"),
        "--disable-quic",
        "--window-size=1400,1000",
        wait=WAIT,
    )
    yield driver
    driver.quit()


def _wait(driver, condition):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT).until(lambda d: condition(d))


def _css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def _js(driver, script):
    """Read the page in one script: polling may re-render between two WebDriver calls."""
    return driver.execute_script(script)


ROW_IDS = "return [...document.querySelectorAll('#candidates tbody tr')].map(r => r.dataset.id)"


def test_list_shows_the_campaign(server, browser):
    base, _, name = server
    browser.get(base + "/")
    text = _wait(
        browser,
        lambda d: _js(d, f"return document.querySelector('tr[data-name=\"{name}\"]')?.innerText"),
    )
    assert name in text and "stopped" in text and "cuau_fcc" in text
    assert _css(browser, "#error")[0].text == ""


def test_campaign_page_numbers_and_plots(server, browser):
    base, store_file, name = server
    status = json.loads(
        CliRunner().invoke(cli_app, ["status", name, "--json", "--store", str(store_file)]).output
    )
    browser.get(base + "/")
    link = f"document.querySelector('tr[data-name=\"{name}\"] a')"
    _wait(browser, lambda d: _js(d, f"return {link} !== null"))
    _js(browser, f"{link}.click()")
    _wait(browser, lambda d: d.find_element("tag name", "body").get_attribute("data-refreshed"))
    assert browser.current_url.endswith(f"/campaign/{name}")
    cells = _js(
        browser,
        "return Object.fromEntries([...document.querySelectorAll('[data-value]')]"
        ".map(e => [e.id, [JSON.parse(e.dataset.value), e.textContent]]))",
    )
    for key in ("state", "iteration", "n_oracle_calls", "n_candidates", "stop_reason"):
        assert cells[f"field-{key}"][0] == status[key], key
    for key, value in status["metrics"].items():
        shown, text = cells[f"metric-{key}"]
        assert shown == value, key
        if value is not None:  # shown to 4 significant digits
            assert float(text) == pytest.approx(value, rel=1e-3), key
    for plot in ("learning_curve", "calibration", "parity", "hull"):
        svg = _css(browser, f"#plot-{plot}.js-plotly-plot svg.main-svg")
        assert svg, f"plot {plot} not drawn"
    assert len(_css(browser, "#history tbody tr")) == status["iteration"] + 1
    assert len(_css(browser, "#acquisitions tbody tr")) == status["n_oracle_calls"]
    assert _css(browser, "#error")[0].text == ""


def test_paging_searching_and_cif_download(server, browser, tmp_path):
    from selenium.webdriver.support.ui import Select

    base, store_file, name = server
    all_ids = sorted(open_stores(store_file)[1].candidate_ids(name))
    browser.get(f"{base}/campaign/{name}")
    _wait(browser, lambda d: d.find_element("tag name", "body").get_attribute("data-refreshed"))
    Select(_css(browser, "#per-page")[0]).select_by_visible_text("25")
    info = _css(browser, "#page-info")[0]
    _wait(browser, lambda d: info.text.startswith("page 1 of 2"))
    first = _js(browser, ROW_IDS)
    _css(browser, "#next")[0].click()
    _wait(browser, lambda d: info.text.startswith("page 2 of 2"))
    second = _js(browser, ROW_IDS)
    assert first + second == all_ids and len(first) == 25
    assert _css(browser, "#next")[0].get_attribute("disabled") is not None
    # Search by formula part.
    _css(browser, "#search")[0].send_keys("Au3")
    _wait(browser, lambda d: "page 1 of 1" in info.text)
    formulas = _js(
        browser,
        "return [...document.querySelectorAll('#candidates tbody tr')]"
        ".map(r => r.cells[1].textContent)",
    )
    assert formulas and all("Au3" in f for f in formulas)
    # Download a structure through the browser and parse it.
    browser.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)}
    )
    cid = _js(
        browser,
        "const a = document.querySelector('#candidates tbody tr a.cif'); a.click();"
        "return a.closest('tr').dataset.id",
    )
    path = tmp_path / f"{name}_{cid}.cif"
    _wait(browser, lambda d: path.exists() and path.stat().st_size > 0)
    structure = Structure.from_file(path)
    cand = open_stores(store_file)[1].candidate_table(name, ["structure"], {"candidate_id": cid})[0]
    assert structure.composition == Structure.from_dict(cand["structure"]).composition


def test_list_follows_the_store_while_it_changes(server, browser):
    """A campaign created while the page is open appears on the next poll (1 s)."""
    base, store_file, _ = server
    browser.get(base + "/")
    _wait(browser, lambda d: d.find_element("tag name", "body").get_attribute("data-loaded"))
    writer = open_stores(store_file)[1]
    writer.create_campaign("new-arrival", {"system": {"structure": "x/LiCoO2.cif"}})
    try:
        text = _wait(
            browser,
            lambda d: _js(
                d, "return document.querySelector('tr[data-name=\"new-arrival\"]')?.innerText"
            ),
        )
        assert "LiCoO2" in text and "running" in text
    finally:
        writer.campaigns._collection.delete_many({"name": "new-arrival"})
