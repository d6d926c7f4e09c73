"""`lame serve --ui`: the search page in a real headless Chromium, and the endpoints it reads
(/v1/decode, /v1/items) with the server's auth and limits.

The browser test needs Debian's `chromium` and `chromium-driver` (and selenium); without them it is
skipped with the reason. Its screenshot is saved as `search-page.png` in the test's tmp folder (the
path is printed; `LAME_SCREENSHOT_DIR=DIR` also copies it there)."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
from pathlib import Path

import httpx
import pytest
from helpers import WORDS, noise, write_jsonl

from lame import build_tiny_model
from lame.embed import encode_corpus
from lame.index import CorpusItems, VectorIndex
from lame.serve import ServerThread, ServeSettings, create_app

KEY = "page-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def model():
    return build_tiny_model("qwen2_vl", seed=0)  # K = 8 with a decoder head


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("page-corpus")
    (folder / "img").mkdir()
    records = [{"id": f"text-{i}", "item": f"a page about the digit {WORDS[i]}"} for i in range(6)]
    for i in range(4):
        noise((24 + 4 * i, 20), seed=40 + i).save(folder / "img" / f"{i}.png")
        records.append({"id": i, "item": {"text": f"figure {WORDS[i]}", "image": f"img/{i}.png"}})
    records.append({"id": "only-image", "item": {"image": "img/0.png"}})
    return write_jsonl(folder / "corpus.jsonl", records)


@pytest.fixture(scope="module")
def index(model, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("page-index")
    encode_corpus(model, corpus, out / "emb", shard_size=8, show_progress=False)
    return VectorIndex.build(out / "emb", out / "idx")


@pytest.fixture(scope="module")
def server(model, index):
    app = create_app(model, ServeSettings(model_name="tiny-lame", api_key=KEY, max_images_per_item=2), index, ui=True)
    with ServerThread(app) as running:
        yield running


def test_index_records_its_corpus(index, corpus):
    assert index.corpus == str(corpus.resolve()) and index.manifest["corpus_bytes"] == corpus.stat().st_size
    items = CorpusItems.for_index(index)
    assert items.preview("1") == {"id": "1", "text": "figure one", "images": 1}
    assert items.preview("text-2") == {"id": "text-2", "text": "a page about the digit two", "images": 0}
    assert items.item("only-image") == {"image": corpus.parent / "img" / "0.png"}


def test_decode_endpoint_matches_decode_latents(server, model):
    got = httpx.post(server.url + "/v1/decode", headers=AUTH, json={"input": ["seven", "zero"], "max_new_tokens": 8})
    assert got.status_code == 200, got.text
    assert [d["text"] for d in got.json()["data"]] == model.decode_latents(["seven", "zero"], max_new_tokens=8)
    image = noise((16, 16), 3)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    message = [{"role": "user", "content": [{"type": "text", "text": "which digit?"},
                                            {"type": "image_url", "image_url": {"url": uri}}]}]
    got = httpx.post(server.url + "/v1/decode", headers=AUTH, json={"messages": message, "max_new_tokens": 8})
    want = model.decode_latents([{"parts": ["which digit?", image]}], max_new_tokens=8)
    assert [d["text"] for d in got.json()["data"]] == want


def test_decode_and_items_keep_the_servers_rules(server, model):
    def error(response) -> tuple[int, str]:
        return response.status_code, response.json()["error"]["code"]

    assert error(httpx.post(server.url + "/v1/decode", json={"input": "x"})) == (401, "invalid_api_key")
    assert error(httpx.get(server.url + "/v1/items/1")) == (401, "invalid_api_key")
    assert error(httpx.post(server.url + "/v1/decode", headers=AUTH, json={"input": "x", "max_new_tokens": 500})) == \
        (400, "invalid_value")
    too_many = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}] * 3}]
    assert error(httpx.post(server.url + "/v1/decode", headers=AUTH, json={"messages": too_many})) == \
        (400, "too_many_images")
    path = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]
    assert error(httpx.post(server.url + "/v1/decode", headers=AUTH, json={"messages": path}))[0] == 400
    assert error(httpx.get(server.url + "/v1/items/nope", headers=AUTH)) == (404, "unknown_id")
    assert error(httpx.get(server.url + "/v1/items/text-1/images/0", headers=AUTH)) == (404, "unknown_image")
    assert error(httpx.get(server.url + "/v1/items/..%2F..%2Fetc%2Fpasswd", headers=AUTH))[0] == 404
    png = httpx.get(server.url + "/v1/items/2/images/0", headers=AUTH)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "/v1/decode" in page.text and "<script>" in page.text


def test_every_v1_route_asks_for_the_key_and_no_other_route_does(server):
    """The routes come from the app's own OpenAPI schema, so a router added without the key
    dependency fails here."""
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    keyed = {path: methods for path, methods in paths.items() if path.startswith("/v1/")}
    assert set(keyed) >= {"/v1/embeddings", "/v1/search", "/v1/decode", "/v1/models", "/v1/models/{name}",
                          "/v1/items/{item_id}", "/v1/items/{item_id}/images/{number}"}
    values = {"name": "tiny-lame", "item_id": "2", "number": "0"}
    for template, methods in keyed.items():
        path = re.sub(r"{(\w+)}", lambda m: values[m[1]], template)
        for method in methods:
            body = {"input": "x"} if method == "post" else None
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                got = httpx.request(method, server.url + path, headers=headers, json=body)
                assert (got.status_code, got.json()["error"]["code"]) == (401, "invalid_api_key"), (method, path)
                assert got.headers["www-authenticate"] == "Bearer"
            assert httpx.request(method, server.url + path, headers=AUTH, json=body).status_code == 200, path
    for path in [p for p in paths if not p.startswith("/v1/")] + ["/"]:
        assert httpx.get(server.url + path).status_code == 200, path
    bad_number = server.url + "/v1/items/2/images/first"  # the key is asked for before the path is validated
    assert (httpx.get(bad_number).status_code, httpx.get(bad_number, headers=AUTH).status_code) == (401, 422)


def test_no_decoder_no_corpus_no_page(model):
    plain = build_tiny_model("qwen2_vl", seed=0, num_reason_tokens=0, use_decoder=False)
    index = VectorIndex.build((plain.encode(["a", "b"]), ["a", "b"]))  # built from arrays: no corpus file
    with ServerThread(create_app(plain, ServeSettings(), index)) as running:
        got = httpx.post(running.url + "/v1/decode", json={"input": "x"})
        assert (got.status_code, got.json()["error"]["code"]) == (404, "no_decoder")
        got = httpx.get(running.url + "/v1/items/a")
        assert (got.status_code, got.json()["error"]["code"]) == (404, "no_corpus")
        assert httpx.get(running.url + "/").status_code == 404  # the page only with ui=True


# ------------------------------------------------------------------------------------ the browser
def _browser() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, or why the browser test cannot run."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        return "no headless browser: install Debian's chromium and chromium-driver (`.ci/run` does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return chromium, driver


def test_search_page_in_headless_chromium(server, model, corpus, tmp_path):
    found = _browser()
    if isinstance(found, str):
        pytest.skip(found)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    chromium, chromedriver = found
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,1300"):
        options.add_argument(flag)
    # explicit paths: selenium's driver manager is never asked to download anything
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(server.url + "/")
        wait.until(lambda d: "indexed items" in d.find_element(By.ID, "server-info").text)
        driver.find_element(By.ID, "api-key").send_keys(KEY)

        def run_query() -> list:
            driver.execute_script("document.getElementById('results').dataset.state = 'idle';"
                                  "document.getElementById('thought').dataset.state = 'idle';")
            driver.find_element(By.ID, "submit").click()
            wait.until(lambda d: d.find_element(By.ID, "results").get_attribute("data-state") == "done"
                       and d.find_element(By.ID, "thought").get_attribute("data-state") == "done")
            return driver.find_elements(By.CSS_SELECTOR, "li.hit")

        # a text query: hits in the index's order, their texts, and the decoded latents
        driver.find_element(By.ID, "query").send_keys("figure two")
        hits = run_query()
        assert len(hits) == 10  # k = 10 of 11 items
        expected = model.decode_latents(["figure two"])[0]
        shown = driver.find_element(By.ID, "thought-text").text
        assert shown.strip() == (expected.strip() or "(the decoder produced no text)")
        index_hits = _search(model, server, "figure two")
        assert [h.get_attribute("data-id") for h in hits] == [str(h["id"]) for h in index_hits]
        first = hits[0].find_element(By.CSS_SELECTOR, ".text").text
        assert first == (CorpusItems(corpus).preview(str(index_hits[0]["id"]))["text"] or "")

        # an image query (file upload, no text): the image hits show thumbnails
        driver.find_element(By.ID, "query").clear()
        driver.find_element(By.ID, "image").send_keys(str(corpus.parent / "img" / "2.png"))
        wait.until(lambda d: d.find_element(By.ID, "preview").is_displayed())
        hits = run_query()
        assert len(hits) == 10
        thumbs = driver.find_elements(By.CSS_SELECTOR, "li.hit .thumb img")
        assert thumbs and all(driver.execute_script("return arguments[0].naturalWidth", t) > 0 for t in thumbs)
        assert driver.find_element(By.ID, "thought-text").text not in ("", "…")
        assert driver.find_element(By.ID, "status").text == ""
        screenshot = tmp_path / "search-page.png"
        driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
    assert screenshot.stat().st_size > 10_000
    print(f"search page screenshot: {screenshot}")
    if os.environ.get("LAME_SCREENSHOT_DIR"):
        Path(os.environ["LAME_SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(os.environ["LAME_SCREENSHOT_DIR"]) / screenshot.name)


def _search(model, server, text: str) -> list[dict]:
    response = httpx.post(server.url + "/v1/search", headers=AUTH, json={"input": text, "k": 10})
    return response.json()["data"][0]["hits"]
