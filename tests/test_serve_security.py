"""The served app keeps secrets and refuses foreign pages (issue 21's probes, each one).

* a foreign ``Host`` is refused on every route (DNS rebinding), ``--allowed-host`` adds;
* secret values are not served by any route (by key and by value), absolute paths
  are shown relative; the log filter cleans messages;
* every page is capped (``0`` is not "all"); bad field and sort names get a JSON 400;
* every response has a Content-Type, ``nosniff`` and a CSP; ``/docs`` is not served;
* ``/api/candidates/`` from the table agrees with a read of the collection;
* in a real browser, a page of another origin cannot read the API, and a rebinding
  name pointing at the server gets nothing.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from alcampaign.cli import app as cli_app
from alcampaign.serve.api import create_app
from alcampaign.serve.security import normalise_host
from alcampaign.store.facade import CampaignStores, open_stores
from alcampaign.store.redaction import REDACTED, RedactingFilter, redact, redact_text

from conftest import headless_chromium

LOCAL = "http://127.0.0.1"
DASH = "/api/dashboard/campaigns"
PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----"
)
SECRETS = ("hunter2", "s3cr3tpw", "b3BlbnNzaC1rZXktdjEAAAAA", "sl-pw-42", "phrase-99", "tok-77")


# -- redaction, unit ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("mongodb://alice:hunter2@db.example:27017/c", f"mongodb://{REDACTED}@db.example:27017/c"),
        ("mongodb+srv://bob@h/x", f"mongodb+srv://{REDACTED}@h/x"),
        ("https://h.example/x?token=abc&page=2", f"https://h.example/x?token={REDACTED}&page=2"),
        ("see " + PEM + " there", f"see {REDACTED} there"),
        ("https://h.example/no/credentials", "https://h.example/no/credentials"),
        ("CuAu3", "CuAu3"),
        ("/elsewhere/alice/cu.cif", ".../cu.cif"),
        ("C:\\Users\\alice\\cu.cif", ".../cu.cif"),
    ],
)
def test_redact_text_by_value(value, shown):
    assert redact_text(value) == shown


def test_redact_by_key_and_paths_relative_to_root(tmp_path):
    doc = {
        "oracle": {
            "kwargs": {
                "passphrase": "phrase-99",
                "private_key": PEM,
                "pwd": "s3cr3tpw",
                "SLURM_PW": "sl-pw-42",
                "db_url": "mongodb://u:hunter2@h/db",
                "env": {"HOME": "/home/alice", "ANYTHING": "tok-77"},
                "steps": 50,
                "author": "Ada",
            }
        },
        "system": {"structure": str(tmp_path / "cifs" / "CuAu.cif")},
        "list": [{"password": "hunter2"}, 1.5, None],
    }
    out = redact(doc, root=tmp_path)
    text = json.dumps(out)
    assert not any(s in text for s in SECRETS)
    assert out["oracle"]["kwargs"]["env"] == REDACTED
    assert out["oracle"]["kwargs"]["steps"] == 50 and out["oracle"]["kwargs"]["author"] == "Ada"
    assert out["system"]["structure"] == "cifs/CuAu.cif"
    assert out["list"] == [{"password": REDACTED}, 1.5, None]
    assert doc["oracle"]["kwargs"]["pwd"] == "s3cr3tpw"  # a copy: the input is unchanged


def test_log_filter_redacts_messages(caplog):
    logger = logging.getLogger("alcampaign.test_redaction")
    logger.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("connecting to %s", "mongodb://alice:hunter2@db/x")
    assert "hunter2" not in caplog.text and REDACTED in caplog.text


# -- a served copy of the stored campaign with secrets planted --------------------------


@pytest.fixture(scope="module")
def planted(stored_campaign, tmp_path_factory):
    """A MemoryStore copy of the stored campaign with secrets in the campaign config,
    a label's oracle settings, a model and a candidate: ``(client, stores, name, root)``."""
    from alcampaign.store.facade import load_job_store

    from conftest import STORES

    store_file, name = stored_campaign
    source = open_stores(store_file)[1]
    job_store = load_job_store(STORES / "memory.yaml")
    job_store.connect()
    stores = CampaignStores.from_job_store(job_store)
    root = tmp_path_factory.mktemp("served-root")
    secret = {
        "db_url": "mongodb://alice:hunter2@db.example/campaigns",
        "password": "s3cr3tpw",
        "private_key": PEM,
        "note": "key: " + PEM,
        "env": {"SLURM_PW": "sl-pw-42"},
        "passphrase": "phrase-99",
        "callback": "https://h.example/hook?token=tok-77",
        "workdir": str(root / "runs" / "x"),
    }
    for coll in ("candidates", "labels", "models", "campaigns"):
        docs = [dict(d) for d in getattr(source, coll).query({})]
        for d in docs[:3]:
            if coll == "campaigns":
                d["config"]["oracle"]["kwargs"].update(secret)
                d["config"]["system"]["structure"] = str(root / "CuAu.cif")
                d["stop_reason"] = "see mongodb://alice:hunter2@db.example/x"
            elif coll == "labels":
                d["oracle"] = {**(d.get("oracle") or {}), **secret}
            elif coll == "candidates":
                d["source"] = {**(d.get("source") or {}), **secret}
            else:
                d["featurizer"] = {**(d.get("featurizer") or {}), **secret}
        getattr(stores, coll)._collection.insert_many(docs)
    app = create_app(stores, path_root=root)
    return TestClient(app, base_url=LOCAL), stores, name, root, app


# Routes kept out of the OpenAPI schema (pages, script, heartbeat, the schema itself).
HIDDEN = ["/", "/campaign/{name}", "/static/plotly.min.js", "/api/heartbeat", "/openapi.json"]


def _every_get_url(app, name: str, cid: str) -> list[str]:
    """A URL for every GET route of the app (path parameters filled in): those of the
    OpenAPI schema and the hidden ones."""
    paths = [p for p, ops in app.openapi()["paths"].items() if "get" in ops] + HIDDEN
    urls = []
    for path in paths:
        for param, value in (("{name}", name), ("{candidate_id}", cid), ("{key}", name)):
            path = path.replace(param, value)
        assert "{" not in path, f"fill in the parameters of {path}"
        urls.append(path)
        if path.startswith("/api/") and not path.startswith(DASH) and path.endswith("/"):
            urls.append(path + "?_all_fields=true")
    return urls


def test_no_secret_is_served_by_any_route(planted):
    client, stores, name, root, app = planted
    cid = min(stores.candidate_ids(name))
    urls = _every_get_url(app, name, cid)
    assert len(urls) >= 12, urls
    for url in urls:
        r = client.get(url)
        assert r.status_code == 200, (url, r.text[:300])
        assert not any(s in r.text for s in SECRETS), url
        assert str(root) not in r.text and "/home/" not in r.text, url
    doc = client.get(f"/api/campaigns/{name}/?_all_fields=true").json()["data"][0]
    kwargs = doc["config"]["oracle"]["kwargs"]
    assert kwargs["db_url"] == f"mongodb://{REDACTED}@db.example/campaigns"
    assert kwargs["workdir"] == "runs/x" and kwargs["env"] == REDACTED
    assert doc["config"]["system"]["structure"] == "CuAu.cif"
    assert kwargs["relax_cell"] is False  # ordinary settings are still shown


# -- the probes: hosts, caps, names, headers -------------------------------------------


@pytest.mark.parametrize(
    "host", ["attacker.example.com:8765", "attacker.example.com", "127.0.0.1.nip.io", "evil"]
)
def test_foreign_host_is_refused_everywhere(planted, host):
    client, stores, name, _, app = planted
    for url in _every_get_url(app, name, min(stores.candidate_ids(name))):
        r = client.get(url, headers={"Host": host})
        assert r.status_code == 400, (url, r.status_code)
        assert "Host" in r.json()["detail"] and name not in r.text
        assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1:1", "[::1]:8000", "LOCALHOST"])
def test_local_hosts_are_answered(planted, host):
    assert planted[0].get("/api/heartbeat", headers={"Host": host}).status_code == 200


def test_allowed_host_adds_a_name(planted):
    _, stores, *_ = planted
    client = TestClient(create_app(stores, allowed_hosts=["Lab-PC.lan"]), base_url=LOCAL)
    assert client.get("/api/heartbeat", headers={"Host": "lab-pc.lan:8000"}).status_code == 200
    assert client.get("/api/heartbeat", headers={"Host": "other.lan"}).status_code == 400
    assert normalise_host("[::1]:80") == "::1" and normalise_host("Host:80") == "host"
    for bad in ("", "http://x", "*.lan", "x/y"):
        with pytest.raises(ValueError, match="allowed host"):
            normalise_host(bad)
    out = CliRunner().invoke(cli_app, ["serve", "--allowed-host", "http://x/"])
    assert out.exit_code == 2 and "--allowed-host" in out.output


@pytest.mark.parametrize("coll", ["candidates", "labels", "models", "campaigns"])
@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("_limit=0", "_limit=0"),
        ("_page=1&_per_page=0", "_per_page=0"),
        ("_page=0", "_page=0"),
        ("_limit=1001", "_limit=1001"),
        ("_fields=structure.lattice.$", "is not a field"),
        ("_fields=$where", "is not a field"),
        ("_fields=nonsense", "is not a field"),
        ("_sort_fields=bogus", "cannot sort by 'bogus'"),
        ("_sort_fields=-$natural", "cannot sort by"),
    ],
)
def test_caps_and_names_are_checked(planted, coll, query, says):
    client = planted[0]
    r = client.get(f"/api/{coll}/?{query}")
    assert r.status_code == 400, (coll, query, r.text[:200])
    assert r.headers["content-type"] == "application/json"
    assert says in r.json()["detail"]


def test_default_page_is_capped(planted):
    client, stores, name, *_ = planted
    n = stores.candidates.count({"campaign": name})
    body = client.get("/api/candidates/?_limit=1000").json()
    assert len(body["data"]) == min(n, 1000) and body["meta"]["max_limit"] == 1000


def test_headers_on_every_response(planted):
    client, stores, name, _, app = planted
    urls = _every_get_url(app, name, min(stores.candidate_ids(name)))
    urls += ["/api/candidates/?_limit=0", "/nope", "/api/campaigns/nope/"]
    for url in urls:
        r = client.get(url)
        assert r.headers.get("content-type"), url
        assert r.headers["x-content-type-options"] == "nosniff", url
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], url
        assert "access-control-allow-origin" not in r.headers, url
    for page in ("/", f"/campaign/{name}"):
        r = client.get(page)
        csp = r.headers["content-security-policy"]
        nonce = csp.split("'nonce-")[1].split("'")[0]
        assert r.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in csp and "unsafe-eval" not in csp
        assert r.text.count("<script") == r.text.count(f'<script nonce="{nonce}"') >= 2
        assert "http://" not in r.text and "https://" not in r.text
        assert nonce not in client.get(page).headers["content-security-policy"]  # fresh


def test_no_docs_page_and_nothing_from_the_internet(planted):
    client = planted[0]
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
    schema = client.get("/openapi.json")
    assert schema.status_code == 200 and "/api/candidates/" in schema.json()["paths"]
    assert "cdn" not in schema.text.lower()


# -- /api/candidates/ from the table ---------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"_sort_fields": "-n_sites"},
        {"_sort_fields": "formula,-n_sites"},
        {"state": "labelled"},
        {"n_sites_min": 3, "n_sites_max": 4, "_sort_fields": "state"},
        {"formula": "CuAu", "_limit": 3, "_skip": 2},
        {"_page": 2, "_per_page": 7, "_sort_fields": "-state,formula"},
        {"acquired_in": 0},
    ],
)
def test_table_pages_agree_with_the_collection(planted, params):
    """The same request answered from the table and (with a field the table lacks) from
    the collection: the same documents in the same order (sorted on ties by id)."""
    client, _, name, *_ = planted
    fast = client.get("/api/candidates/", params={"campaign": name, **params}).json()
    assert fast["meta"]["source"] == "table"
    sort = params.get("_sort_fields")
    slow_params = {
        "campaign": name,
        **params,
        "_fields": "candidate_id,formula,n_sites,state,acquisition,source",
        "_sort_fields": f"{sort},candidate_id" if sort and "," not in sort else sort,
    }
    if slow_params["_sort_fields"] is None:
        slow_params["_sort_fields"] = "candidate_id"
    slow = client.get("/api/candidates/", params=slow_params).json()
    assert slow["meta"]["source"] == "collection"
    assert fast["meta"]["total_doc"] == slow["meta"]["total_doc"] > 0
    key = ("candidate_id", "formula", "n_sites", "state")
    rows_fast = [tuple(d.get(k) for k in key) for d in fast["data"]]
    rows_slow = [tuple(d.get(k) for k in key) for d in slow["data"]]
    if sort and "," in sort:  # two sort fields: the collection's ties come in any order
        by = [key.index(f.lstrip("-")) for f in sort.split(",")]
        assert [[r[i] for i in by] for r in rows_fast] == [[r[i] for i in by] for r in rows_slow]
        if "_page" not in params:  # the whole selection: the same rows
            assert sorted(rows_fast) == sorted(rows_slow)
    else:
        assert rows_fast == rows_slow
    if "acquired_in" in params:
        assert all(d["acquisition"]["iteration"] == 0 for d in fast["data"])


def test_table_projection_and_unknown_campaign(planted):
    client, _, name, *_ = planted
    one = client.get("/api/candidates/", params={"campaign": name, "_fields": "formula"}).json()
    assert all(set(d) == {"formula"} for d in one["data"])
    none = client.get("/api/candidates/", params={"campaign": "nope"}).json()
    assert none["meta"]["total_doc"] == 0 and none["data"] == []


# -- in a real browser -------------------------------------------------------------------

WAIT = 20  # seconds, an upper bound on a page load on a busy machine, not a timing check


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live(planted):
    """The planted app on a live loopback server: ``(port, name)``."""
    import uvicorn

    port = _free_port()
    srv = uvicorn.Server(
        uvicorn.Config(planted[4], host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield port, planted[2]
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def attacker(live):
    """Another origin (another port) serving a page that tries to read the API."""
    port = live[0]
    page = f"""<!doctype html><html><head><title>waiting</title></head><body><script>
fetch('http://127.0.0.1:{port}/api/campaigns/?_all_fields=true')
  .then(r => r.text()).then(t => {{ document.title = 'READ ' + t.slice(0, 200); }})
  .catch(e => {{ document.title = 'BLOCKED ' + e.name; }});
</script></body></html>""".encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = headless_chromium(
        tmp_path_factory.mktemp("chromium-profile"),
        # A rebinding name: rebind.test resolves to this machine, as an attacker's
        # DNS would answer after the page loaded.
        "--host-resolver-rules=MAP rebind.test 127.0.0.1",
        wait=WAIT,
    )
    yield driver
    driver.quit()


def _wait_title(driver, prefix_any: tuple[str, ...]) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT).until(lambda d: d.title.startswith(prefix_any))
    return driver.title


@pytest.mark.slow
def test_another_origin_cannot_read_the_api(live, attacker, browser):
    port, name = live
    browser.get(f"http://127.0.0.1:{attacker}/")
    title = _wait_title(browser, ("READ", "BLOCKED"))
    assert title.startswith("BLOCKED") and name not in title
    # The same fetch from the server's own page works (the test can tell the two apart).
    browser.get(f"http://127.0.0.1:{port}/")
    browser.execute_script(
        "fetch('/api/campaigns/?_all_fields=true').then(r => r.text())"
        ".then(t => { document.title = 'READ ' + t.slice(0, 400); })"
        ".catch(e => { document.title = 'BLOCKED ' + e.name; });"
    )
    assert name in _wait_title(browser, ("READ", "BLOCKED"))


@pytest.mark.slow
def test_a_rebinding_name_gets_nothing(live, browser):
    port, name = live
    browser.get(f"http://rebind.test:{port}/api/campaigns/?_all_fields=true")
    body = browser.find_element("tag name", "body").text
    assert "Host" in body and name not in body
    browser.get(f"http://rebind.test:{port}/")
    assert name not in browser.page_source and "Campaigns" not in browser.title


@pytest.mark.slow
def test_pages_run_under_their_csp(live, browser):
    """The dashboard still draws its plots with the CSP on: no violation is logged."""
    port, name = live
    browser.get_log("browser")  # drop earlier entries
    browser.get(f"http://127.0.0.1:{port}/campaign/{name}")
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, WAIT).until(
        lambda d: d.execute_script("return document.querySelectorAll('.main-svg').length") > 0
    )
    logs = [e["message"] for e in browser.get_log("browser")]
    assert not [m for m in logs if "Content Security Policy" in m], logs
