"""The embeddings server: OpenAI client compatibility, batching, overload, limits and security, search,
metrics, and `lame bench serve` in a quick mode."""

from __future__ import annotations

import asyncio
import base64
import http.server
import io
import json
import threading
import time

import httpx
import numpy as np
import openai
import pytest
from helpers import noise
from PIL import Image
from tolerances import FORWARD, UNIT_NORM, float32_sum

from lame import build_tiny_model
from lame.index import VectorIndex
from lame.serve import ServerThread, ServeSettings, create_app

DOCS = [f"document {i} about the digit {i % 10}" for i in range(12)]


def png(size: tuple[int, int] = (16, 16), seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    noise(size, seed, high=255).save(buffer, "PNG")
    return buffer.getvalue()


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def image_message(url: str, text: str | None = "a picture") -> list[dict]:
    content = ([{"type": "text", "text": text}] if text else []) + [{"type": "image_url", "image_url": {"url": url}}]
    return [{"role": "user", "content": content}]


@pytest.fixture(scope="module")
def model():
    return build_tiny_model("qwen2_vl", seed=0, matryoshka_dims=[64, 16])  # `dimensions` takes 64 or 16


@pytest.fixture(scope="module")
def server(model):
    index = VectorIndex.build((model.encode(DOCS), [f"doc{i}" for i in range(len(DOCS))]), kind="flat",
                              model_fingerprint=model.fingerprint())
    app = create_app(model, ServeSettings(model_name="tiny-lame", max_batch_size=32, max_wait_ms=5), index)
    with ServerThread(app) as running:
        running.app = app
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_openai_client_text_matches_model_encode(client, model):
    texts = ["a handwritten seven", "zero", "the digit four, drawn twice"]
    for fmt in (openai.omit, "float", "base64"):  # the client asks for base64 when no format is given
        response = client.embeddings.create(model="tiny-lame", input=texts, encoding_format=fmt)
        if fmt == "base64":  # asked for explicitly, the client hands the string over undecoded
            got = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in response.data])
        else:
            got = np.array([d.embedding for d in response.data], dtype=np.float32)
        np.testing.assert_allclose(got, model.encode(texts), atol=FORWARD, rtol=0)
        assert [d.index for d in response.data] == [0, 1, 2] and response.model == "tiny-lame"
    tokens = sum(len(model.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    assert response.usage.prompt_tokens == response.usage.total_tokens == tokens > 0
    single = client.embeddings.create(model="tiny-lame", input="zero", encoding_format="float")
    np.testing.assert_allclose(single.data[0].embedding, model.encode("zero"), atol=FORWARD, rtol=0)


def test_openai_client_image_data_uri_matches_model_encode(client, model):
    data = png((20, 14), seed=3)
    response = client.embeddings.create(model="tiny-lame", input=openai.omit,
                                        extra_body={"messages": image_message(data_uri(data), "find this digit")})
    expected = model.encode({"parts": ["find this digit", Image.open(io.BytesIO(data))]})
    np.testing.assert_allclose(response.data[0].embedding, expected, atol=FORWARD, rtol=0)
    assert response.usage.prompt_tokens > len(model.tokenizer("find this digit")["input_ids"])  # image tokens count
    # The system message is the item's instruction.
    messages = [{"role": "system", "content": "Retrieve the digit."}, *image_message(data_uri(data), None)]
    response = client.embeddings.create(model="tiny-lame", input=openai.omit, extra_body={"messages": messages})
    expected = model.encode({"image": Image.open(io.BytesIO(data)), "instruction": "Retrieve the digit."})
    np.testing.assert_allclose(response.data[0].embedding, expected, atol=FORWARD, rtol=0)


def test_dimensions_truncate_then_renormalise(client, model, server):
    response = client.embeddings.create(model="tiny-lame", input=["seven"], dimensions=16, encoding_format="float")
    full = model.encode(["seven"])[0][:16]
    # the served embedding's rounding, magnified by renormalising its first 16 entries, and that normalisation
    bound = FORWARD / np.linalg.norm(full) + float32_sum(2 * 16 + 2)
    np.testing.assert_allclose(response.data[0].embedding, full / np.linalg.norm(full), atol=bound, rtol=0)
    raw = httpx.post(server.url + "/v1/embeddings", json={"input": "seven", "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, model.encode("seven"), atol=FORWARD, rtol=0)
    assert raw["model"] == "tiny-lame"  # the served name when the request names none


def test_200_concurrent_requests_are_batched(server, model):
    batcher = server.app.state.batcher
    batches, items = batcher.batches, batcher.items
    texts = [f"concurrent query {i}" for i in range(200)]

    async def fire():
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=120) as http:
            return await asyncio.gather(*(http.post("/v1/embeddings", json={"input": t, "encoding_format": "float"})
                                          for t in texts))

    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200] * 200
    got = np.array([r.json()["data"][0]["embedding"] for r in responses], dtype=np.float32)
    np.testing.assert_allclose(got, model.encode(texts, batch_size=64), atol=FORWARD, rtol=0)
    assert batcher.items - items == 200
    assert batcher.batches - batches < 200  # merged: fewer model calls than requests


def test_search_endpoint(server):
    response = httpx.post(server.url + "/v1/search", json={"input": DOCS[:4], "k": 3})
    assert response.status_code == 200
    data = response.json()["data"]
    assert [row["hits"][0]["id"] for row in data] == ["doc0", "doc1", "doc2", "doc3"]
    assert all(len(row["hits"]) == 3 for row in data)
    # the served query against the indexed document, both unit: 1 - |q - d|^2 / 2, so rounding is second order
    assert data[0]["hits"][0]["score"] == pytest.approx(1.0, abs=UNIT_NORM)
    bad = httpx.post(server.url + "/v1/search", json={"input": "x", "k": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "k"


def test_health_and_metrics(server):
    httpx.post(server.url + "/v1/embeddings", json={"input": "for the metrics"})
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["dim"] == 64 and health["index"] == {"kind": "flat", "count": 12}
    text = httpx.get(server.url + "/metrics").text
    assert 'lame_requests_total{endpoint="/v1/embeddings",status="200"}' in text
    for name in ("lame_batch_size_items_bucket", "lame_queue_depth", "lame_request_latency_seconds_bucket",
                 "lame_batches_total", "lame_items_total"):
        assert name in text


# ------------------------------------------------------------------------------------------ overload
def test_full_queue_answers_503_then_recovers(model, monkeypatch):
    slow = build_tiny_model("qwen2_vl", seed=0)
    encode = slow.encode

    def slow_encode(items, *args, **kwargs):
        if items:  # the test hook: a slow model
            time.sleep(0.2)
        return encode(items, *args, **kwargs)

    monkeypatch.setattr(slow, "encode", slow_encode)
    app = create_app(slow, ServeSettings(max_queue=2, max_batch_size=1, max_wait_ms=0))
    with ServerThread(app) as running:
        async def fire():
            async with httpx.AsyncClient(base_url=running.url, timeout=60) as http:
                return await asyncio.gather(*(http.post("/v1/embeddings", json={"input": f"q{i}"}) for i in range(20)))

        responses = asyncio.run(fire())
        statuses = [r.status_code for r in responses]
        assert set(statuses) == {200, 503} and statuses.count(503) >= 10
        busy = next(r for r in responses if r.status_code == 503)
        assert busy.headers["retry-after"] == "1" and busy.json()["error"]["code"] == "queue_full"
        assert "--max-queue" in busy.json()["error"]["message"]
        after = httpx.post(running.url + "/v1/embeddings", json={"input": "q0", "encoding_format": "float"})
        assert after.status_code == 200
        assert 'status="503"' in httpx.get(running.url + "/metrics").text


# ------------------------------------------------------------------------------- limits and security
KEY = "s3cret"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def strict(model):
    settings = ServeSettings(api_key=KEY, max_body_bytes=20_000, max_items=3, max_images_per_item=1,
                             max_image_pixels=32 * 32)
    with ServerThread(create_app(model, settings)) as running:
        yield running


BAD_REQUESTS = {
    "malformed JSON": (b'{"input": ', 400, "invalid_json", None),
    "not an object": (b'["x"]', 400, "invalid_type", None),
    "wrong input type": ({"input": 5}, 400, "invalid_type", "input"),
    "wrong element type": ({"input": ["a", None]}, 400, "invalid_type", "input"),
    "token ids": ({"input": [[1, 2, 3]]}, 400, "unsupported_input", "input"),
    "no input": ({"model": "lame"}, 400, "missing_input", "input"),
    "input and messages": ({"input": "a", "messages": image_message(data_uri(png()))}, 400, "invalid_value", "input"),
    "empty input": ({"input": []}, 400, "invalid_value", "input"),
    "empty string": ({"input": ""}, 400, "invalid_item", "input"),
    "control token": ({"input": "hi <|embed|>"}, 400, "invalid_item", "input"),
    "bad encoding_format": ({"input": "a", "encoding_format": "int8"}, 400, "invalid_value", "encoding_format"),
    "bad dimensions": ({"input": "a", "dimensions": 65}, 400, "invalid_value", "dimensions"),
    "too many items": ({"input": ["a", "b", "c", "d"]}, 400, "too_many_items", "--max-items"),
    "too many images": ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_uri(png())}}] * 2}]}, 400, "too_many_images",
        "--max-images-per-item"),
    "oversized image": ({"messages": image_message(data_uri(png((40, 40))))}, 400, "image_too_large",
                        "--max-image-pixels"),
    "corrupt base64": ({"messages": image_message("data:image/png;base64,iVBOR%%%")}, 400, "invalid_base64", None),
    "not an image": ({"messages": image_message(data_uri(b"GIF89a not really"))}, 400, "invalid_image", None),
    "file URL": ({"messages": image_message("file:///etc/hostname")}, 400, "image_url_refused", None),
    "bare path": ({"messages": image_message("/etc/hostname")}, 400, "image_url_refused", None),
    "host not allowed": ({"messages": image_message("http://127.0.0.1:9/x.png")}, 400, "image_url_refused",
                         "--allow-image-url-host"),
    "assistant role": ({"messages": [{"role": "assistant", "content": "hi"}]}, 400, "invalid_value",
                       "messages[0].role"),
    "bad content part": ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, 400, "invalid_type",
                         "messages[0].content[0]"),
    "image in a system message": ({"messages": [{"role": "system", "content": [
        {"type": "image_url", "image_url": {"url": data_uri(png())}}]}]}, 400, "invalid_value",
        "messages[0].content[0]"),
    "body too large": ({"input": "x" * 30_000}, 413, "request_too_large", "--max-body-bytes"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_requests_get_a_clear_4xx_and_the_server_keeps_serving(strict, case):
    body, status, code, mention = BAD_REQUESTS[case]
    content = body if isinstance(body, bytes) else None
    response = httpx.post(strict.url + "/v1/embeddings", headers=AUTH, content=content,
                          json=None if content else body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    assert error["type"] == "invalid_request_error" and error["message"]
    if mention and mention.startswith("--"):
        assert mention in error["message"]
    elif mention:
        assert error["param"] == mention
    ok = httpx.post(strict.url + "/v1/embeddings", headers=AUTH, json={"input": "still serving"})
    assert ok.status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}])
def test_api_key_is_required(strict, headers):
    response = httpx.post(strict.url + "/v1/embeddings", headers=headers, json={"input": "x"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    client = openai.OpenAI(base_url=strict.url + "/v1", api_key=KEY, max_retries=0)
    assert len(client.embeddings.create(model="lame", input="x").data) == 1
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=strict.url + "/v1", api_key="nope", max_retries=0).embeddings.create(model="lame", input="x")


def test_unknown_route_and_method_use_the_error_shape(strict):
    for response, status, code in ((httpx.get(strict.url + "/v1/nothing"), 404, "not_found"),
                                   (httpx.get(strict.url + "/v1/embeddings", headers=AUTH), 405, "method_not_allowed"),
                                   (httpx.post(strict.url + "/v1/search", headers=AUTH, json={"input": "x"}), 404,
                                    "no_index")):
        error = response.json()["error"]
        assert response.status_code == status and set(error) == {"message", "type", "param", "code"}
        assert error["code"] == code and error["type"] == "invalid_request_error"
    assert "/v1/nothing" in httpx.get(strict.url + "/v1/nothing").json()["error"]["message"]


def test_a_server_failure_is_a_json_500_and_the_server_goes_on(model, monkeypatch):
    index = VectorIndex.build((model.encode(DOCS[:3]), ["a", "b", "c"]), model_fingerprint=model.fingerprint())
    monkeypatch.setattr(index, "search", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("faiss broke")))
    with ServerThread(create_app(model, ServeSettings(), index)) as running:
        response = httpx.post(running.url + "/v1/search", json={"input": "x"})
        assert response.status_code == 500 and response.headers["content-type"] == "application/json"
        assert response.json()["error"] == {"message": "internal server error (RuntimeError)", "type": "server_error",
                                            "param": None, "code": "internal_error"}
        assert httpx.post(running.url + "/v1/embeddings", json={"input": "x"}).status_code == 200


def test_an_index_of_another_model_is_refused_at_start(model):
    other = build_tiny_model("qwen2_vl", seed=1)
    index = VectorIndex.build((other.encode(DOCS[:3]), ["a", "b", "c"]), model_fingerprint=other.fingerprint())
    with pytest.raises(ValueError, match="built from another model"):
        create_app(model, ServeSettings(), index)


def test_request_data_never_opens_a_local_file(strict, model, tmp_path, monkeypatch):
    path = tmp_path / "secret.png"
    path.write_bytes(png())
    opened = []
    original = Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: (opened.append(fp), original(fp, *a, **k))[1])
    for url in (str(path), f"file://{path}", f"file:{path}", path.name):
        response = httpx.post(strict.url + "/v1/embeddings", headers=AUTH, json={"messages": image_message(url)})
        assert response.status_code == 400
    # Paths sent as text are text: embedded as the string, not read.
    for body in ({"input": str(path)}, {"messages": [{"role": "user", "content": str(path)}]}):
        response = httpx.post(strict.url + "/v1/embeddings", headers=AUTH, json={**body, "encoding_format": "float"})
        np.testing.assert_allclose(response.json()["data"][0]["embedding"], model.encode(str(path)), atol=FORWARD, rtol=0)
    assert not [fp for fp in opened if not isinstance(fp, io.BytesIO)]


def test_allow_listed_image_host_is_fetched(model):
    image = png((12, 12), seed=5)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(image)))
            self.end_headers()
            self.wfile.write(image)

        def log_message(self, *args):
            pass

    images = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=images.serve_forever, daemon=True).start()
    port = images.server_address[1]
    try:
        settings = ServeSettings(allow_image_url_hosts=("127.0.0.1",))
        with ServerThread(create_app(model, settings)) as running:
            url = running.url + "/v1/embeddings"
            ok = httpx.post(url, json={"messages": image_message(f"http://127.0.0.1:{port}/d.png"),
                                       "encoding_format": "float"})
            assert ok.status_code == 200, ok.text
            expected = model.encode({"parts": ["a picture", Image.open(io.BytesIO(image))]})
            np.testing.assert_allclose(ok.json()["data"][0]["embedding"], expected, atol=FORWARD, rtol=0)
            other = httpx.post(url, json={"messages": image_message(f"http://localhost:{port}/d.png")})
            assert other.status_code == 400 and "'localhost' is not allowed" in other.json()["error"]["message"]
    finally:
        images.shutdown()


# ---------------------------------------------------------------------------------------- benchmark
def run_bench(model_dir, tmp_path, capsys, *extra: str) -> tuple[dict, str]:
    from lame.cli import main

    report_path = tmp_path / "bench.json"
    assert main(["bench", "serve", "--model", str(model_dir), "--requests", "6", "--max-seconds", "10",
                 "--json-output", str(report_path), *extra]) == 0
    return json.loads(report_path.read_text()), capsys.readouterr().out


def check_bench_report(report: dict, table: str, modes=("batching", "no batching"),
                       levels=(1, 8, 32, 128)) -> None:
    rows = {(r["mode"], r["concurrency"]) for r in report["rows"]}
    assert rows == {(m, c) for m in modes for c in levels}
    assert len(report["rows"]) == len(levels) * len(modes)
    assert all(r["requests"] == 6 and r["errors"] == 0 and r["rps"] > 0 for r in report["rows"])
    assert set(report["ratio"]) == set(modes) and all(v is not None for v in report["ratio"].values())
    lines = table.splitlines()
    assert len(lines) == 1 + (len(levels) + 1) * len(modes) and lines[0].split()[:3] == ["mode", "batch", "conc"]
    assert sum("throughput(c=32)/throughput(c=1)" in line for line in lines) == len(modes)


def test_bench_serve_quick_reports_every_row(saved_tiny_model, tmp_path, capsys):
    report, table = run_bench(saved_tiny_model, tmp_path, capsys, "--in-process", "--max-wait-ms", "0", "2",
                              "--rounds", "2", "--concurrency", "1", "32")
    check_bench_report(report, table, ("batching 0ms", "batching 2ms", "no batching"), (1, 32))
    assert {r["max_wait_ms"] for r in report["rows"] if r["mode"] == "batching 2ms"} == {2.0}


def test_bench_serve_images_scenario_quick(saved_tiny_model, tmp_path, capsys):
    from lame.cli import main

    path = tmp_path / "images.json"
    assert main(["bench", "serve", "--scenario", "images", "--model", str(saved_tiny_model), "--in-process",
                 "--image-side", "300", "--images-per-request", "2", "--heavy-clients", "1", "--small-concurrency", "1",
                 "--max-seconds", "2", "--json-output", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["solo"]["status"] == 200 and report["idle_rss_mb"] > 0 and report["solo"]["peak_rss_mb"] > 0
    assert report["small_alone"]["count"] > 0 and report["under_load"]["small"]["count"] > 0
    assert report["under_load"]["heavy"]["statuses"].get("200", 0) > 0
    assert report["settings"]["image_side"] == 300 and report["settings"]["images_per_request"] == 2
    printed = capsys.readouterr().out
    assert "one large request alone: HTTP 200" in printed and "one-word requests with 1 clients" in printed


@pytest.mark.slow
def test_bench_serve_with_server_processes(saved_tiny_model, tmp_path, capsys):
    check_bench_report(*run_bench(saved_tiny_model, tmp_path, capsys))


# ------------------------------------------------------------------------------ images: formats and cost
def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def image_request(url: str, data: bytes, mime: str = "png", **extra) -> httpx.Response:
    uri = f"data:image/{mime};base64," + base64.b64encode(data).decode()
    return httpx.post(url + "/v1/embeddings", json={"messages": image_message(uri), "encoding_format": "float",
                                                    **extra}, timeout=60)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_the_four_allowed_formats_decode(server, fmt):
    response = image_request(server.url, encoded(noise((24, 20), seed=4), fmt), fmt.lower())
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "EPS", "ICO", "PPM"])
def test_other_formats_are_never_decoded(server, fmt, monkeypatch):
    image = noise((16, 16), seed=5)
    data = encoded(image, fmt) if fmt != "EPS" else b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n"
    tried = []
    original = Image.open
    monkeypatch.setattr(Image, "open", lambda fp, mode="r", formats=None: (tried.append(formats),
                                                                           original(fp, mode, formats))[1])
    response = image_request(server.url, data)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_image"
    assert "PNG, JPEG, WEBP or GIF" in response.json()["error"]["message"]
    assert tried == [("PNG", "JPEG", "WEBP", "GIF")]


def decoded_sizes(model, monkeypatch) -> list:
    """The sizes of the images the model is handed, recorded from here on."""
    sizes = []
    encode = model.encode

    def recording(items, *args, **kwargs):
        sizes.extend(p.size for item in items if isinstance(item, dict) for p in item["parts"] if not isinstance(p, str))
        return encode(items, *args, **kwargs)

    monkeypatch.setattr(model, "encode", recording)
    return sizes


def test_a_large_image_is_shrunk_to_what_the_model_reads(server, model, monkeypatch):
    sizes = decoded_sizes(model, monkeypatch)
    target = model.image_target_size(150, 120)
    assert target is not None and target[0] * target[1] <= model.image_max_pixels
    picture = noise((150, 120), seed=6)  # less than 6x the model's size: the processor's own resampling, exactly
    response = image_request(server.url, encoded(picture, "PNG"))
    monkeypatch.undo()
    assert sizes == [target]
    expected = model.encode({"parts": ["a picture", picture]})
    np.testing.assert_allclose(response.json()["data"][0]["embedding"], expected, atol=FORWARD, rtol=0)
    assert response.json()["usage"]["prompt_tokens"] == len(model.tokenizer("a picture")["input_ids"]) + \
        model.image_processor.get_number_of_image_patches(120, 150) // model.image_processor.merge_size ** 2


def test_the_pixel_limit_counts_what_is_decoded_and_a_jpeg_decodes_small(model, monkeypatch):
    big = Image.radial_gradient("L").resize((2048, 1536)).convert("RGB")
    with ServerThread(create_app(model, ServeSettings(max_image_pixels=400 * 300))) as running:
        sizes = decoded_sizes(model, monkeypatch)
        jpeg = image_request(running.url, encoded(big, "JPEG", quality=90), "jpeg")
        assert jpeg.status_code == 200, jpeg.text  # decoded at 1/8 scale: 256 x 192
        assert sizes == [model.image_target_size(2048, 1536)]
        png = image_request(running.url, encoded(big, "PNG"))
        error = png.json()["error"]
        assert png.status_code == 400 and error["code"] == "image_too_large" and "--max-image-pixels" in error["message"]
        assert "2048x1536" in error["message"]


def test_the_default_pixel_limit_follows_the_model(server, model):
    from lame.serve.settings import default_image_pixels

    assert server.app.state.max_image_pixels == default_image_pixels(model.image_max_pixels) == 1024 * 1024
    assert default_image_pixels(None) == default_image_pixels(10**9) == 4096 * 4096
    assert default_image_pixels(1280 * 28 * 28) == 4 * 1280 * 28 * 28


def test_decoding_runs_at_most_decode_workers_images_at_once(model, monkeypatch):
    from lame.serve import images as images_module

    active, most = 0, 0
    lock = threading.Lock()
    original = images_module.ImageLoader._decode_now

    def counting(self, data, param):
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        try:
            time.sleep(0.05)  # widen the window in which decodes could overlap
            return original(self, data, param)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(images_module.ImageLoader, "_decode_now", counting)
    uri = data_uri(png((30, 30), seed=1))
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}}] * 4}]}
    with ServerThread(create_app(model, ServeSettings(decode_workers=2))) as running:
        async def fire():
            async with httpx.AsyncClient(base_url=running.url, timeout=60) as http:
                return await asyncio.gather(*(http.post("/v1/embeddings", json=body) for _ in range(6)))

        assert [r.status_code for r in asyncio.run(fire())] == [200] * 6
    assert 1 <= most <= 2


def test_the_memory_budget_answers_503_and_is_given_back(model):
    app = create_app(model, ServeSettings(max_inflight_bytes=50_000))
    with ServerThread(app) as running:
        budget = app.state.budget
        others = budget.hold()
        assert others.set(40_000)  # what requests in flight hold
        body = {"messages": image_message(data_uri(png((60, 60), seed=2))), "encoding_format": "float"}
        busy = httpx.post(running.url + "/v1/embeddings", json=body)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert busy.json()["error"]["code"] == "queue_full" and "--max-inflight-bytes" in busy.json()["error"]["message"]
        others.release()
        assert httpx.post(running.url + "/v1/embeddings", json=body).status_code == 200
        assert budget.used == 0 and httpx.get(running.url + "/health").json()["inflight_bytes"] == 0


def test_a_client_that_disconnects_cancels_its_queued_work(model, monkeypatch):
    import socket

    release = threading.Event()
    seen: list = []
    encode = model.encode

    def gated(items, *args, **kwargs):
        seen.extend(items)
        if "first" in items:
            release.wait(60)
        return encode(items, *args, **kwargs)

    monkeypatch.setattr(model, "encode", gated)
    app = create_app(model, ServeSettings(max_batch_size=1, max_wait_ms=0))
    with ServerThread(app) as running:
        batcher = app.state.batcher
        first = threading.Thread(target=lambda: httpx.post(running.url + "/v1/embeddings", json={"input": "first"},
                                                           timeout=60))
        first.start()
        wait_for(lambda: "first" in seen)  # the model is busy with it
        body = json.dumps({"input": "second"}).encode()
        with socket.create_connection(("127.0.0.1", running.port)) as client:
            client.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            wait_for(lambda: batcher.queue_depth == 1)
        wait_for(lambda: 'status="499"' in httpx.get(running.url + "/metrics").text)  # the server saw it go
        release.set()
        first.join(60)
        wait_for(lambda: batcher.cancelled == 1)
        assert httpx.post(running.url + "/v1/embeddings", json={"input": "third"}).status_code == 200
    assert "second" not in seen and "third" in seen


def wait_for(condition, timeout: float = 60.0) -> None:
    """Polls ``condition`` until it holds (a generous bound, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


# ---------------------------------------------------------------------------------- OpenAI clients
def test_models_list_and_the_model_field(client, server):
    listed = client.models.list()
    assert [m.id for m in listed.data] == ["tiny-lame"] and listed.data[0].object == "model"
    assert client.models.retrieve("tiny-lame").id == "tiny-lame"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
    with pytest.raises(openai.NotFoundError) as info:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert info.value.body["code"] == "model_not_found" and "tiny-lame" in info.value.body["message"]
    no_model = httpx.post(server.url + "/v1/embeddings", json={"input": "x"})
    assert no_model.status_code == 200 and no_model.json()["model"] == "tiny-lame"


def test_models_need_the_api_key(strict):
    assert httpx.get(strict.url + "/v1/models").status_code == 401
    assert httpx.get(strict.url + "/v1/models", headers=AUTH).json()["data"][0]["id"] == "lame"


def test_two_apps_in_one_process_keep_their_own_state(server, strict):
    """The routers are shared by every app; each request reaches its own app's state."""
    mine = httpx.get(server.url + "/health").json()
    theirs = httpx.get(strict.url + "/health").json()
    assert (mine["model"], mine["index"]) == ("tiny-lame", {"kind": "flat", "count": len(DOCS)})
    assert (theirs["model"], theirs["index"]) == ("lame", None)
    assert httpx.get(server.url + "/v1/models").json()["data"][0]["id"] == "tiny-lame"
    assert httpx.get(strict.url + "/v1/models").status_code == 401  # only the strict app has a key


def test_truncate_prompt_tokens(server, model):
    text = "one two three four five six seven eight nine ten eleven twelve"
    ids = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    expected = model.encode(text[: ids["offset_mapping"][4][1]])
    body = {"input": [text, "two"], "truncate_prompt_tokens": 5, "encoding_format": "float"}
    response = httpx.post(server.url + "/v1/embeddings", json=body).json()
    np.testing.assert_allclose(response["data"][0]["embedding"], expected, atol=FORWARD, rtol=0)
    np.testing.assert_allclose(response["data"][1]["embedding"], model.encode("two"), atol=FORWARD, rtol=0)  # short: unchanged
    assert response["usage"]["prompt_tokens"] == 5 + len(model.tokenizer("two", add_special_tokens=False)["input_ids"])
    long = "seven " * 3000  # longer than the model's max_length
    refused = httpx.post(server.url + "/v1/embeddings", json={"input": long})
    assert refused.status_code == 400 and "too long" in refused.json()["error"]["message"]
    fitted = httpx.post(server.url + "/v1/embeddings", json={"input": long, "truncate_prompt_tokens": -1})
    assert fitted.status_code == 200
    assert fitted.json()["usage"]["prompt_tokens"] < model.config.max_length
    # the instruction is never cut: a system text longer than the limit leaves nothing to cut
    messages = [{"role": "system", "content": "represent " * 10}, {"role": "user", "content": "a b c"}]
    kept = httpx.post(server.url + "/v1/embeddings", json={"messages": messages, "truncate_prompt_tokens": 3})
    assert kept.status_code == 400 and "truncate_prompt_tokens 3" in kept.json()["error"]["message"]
    for bad in (0, -2, "5", True):
        answer = httpx.post(server.url + "/v1/embeddings", json={"input": "x", "truncate_prompt_tokens": bad})
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "truncate_prompt_tokens"


def test_tei_truncate_is_truncate_prompt_tokens_at_the_model_limit(server, model):
    long = "seven " * 3000  # longer than the model's max_length
    url = server.url + "/v1/embeddings"
    fitted = httpx.post(url, json={"input": long, "truncate_prompt_tokens": -1, "encoding_format": "float"}).json()
    for body in ({"truncate": True}, {"truncate": True, "truncate_prompt_tokens": -1}):
        answer = httpx.post(url, json={"input": long, "encoding_format": "float", **body})
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"] == fitted["data"] and answer.json()["usage"] == fitted["usage"]
    # false: no cut, as without it (a short item is embedded, a too-long one refused)
    assert httpx.post(url, json={"input": "seven", "truncate": False}).status_code == 200
    refused = httpx.post(url, json={"input": long, "truncate": False})
    assert refused.status_code == 400 and "too long" in refused.json()["error"]["message"]
    for body, says in (({"truncate": False, "truncate_prompt_tokens": 5}, "asks for no cut"),
                       ({"truncate": False, "truncate_prompt_tokens": -1}, "asks for no cut"),
                       ({"truncate": True, "truncate_prompt_tokens": 5}, "model's max_length"),
                       ({"truncate": "yes"}, "true or false"), ({"truncate": 1}, "true or false")):
        answer = httpx.post(url, json={"input": "x", **body})
        error = answer.json()["error"]
        assert answer.status_code == 400 and error["param"] == "truncate" and says in error["message"], body


def test_several_conversations_in_one_request(client, server, model):
    first = image_message(data_uri(png((20, 20), seed=7)), "the first picture")
    second = [{"role": "system", "content": "Find the digit."}, *image_message(data_uri(png((18, 26), seed=8)), None)]
    both = client.embeddings.create(model="tiny-lame", input=openai.omit, encoding_format="float",
                                    extra_body={"messages": [first, second]})
    alone = [client.embeddings.create(model="tiny-lame", input=openai.omit, encoding_format="float",
                                      extra_body={"messages": m}).data[0].embedding for m in (first, second)]
    assert [d.index for d in both.data] == [0, 1]
    np.testing.assert_allclose([d.embedding for d in both.data], alone, atol=FORWARD, rtol=0)
    bad = httpx.post(server.url + "/v1/embeddings", json={"messages": [first, [{"role": "user", "content": 5}]]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages[1][0].content"


def test_cors_is_off_by_default_and_configurable(model, strict):
    origin = "https://app.example.com"
    preflight = {"Origin": origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    assert "access-control-allow-origin" not in httpx.post(strict.url + "/v1/embeddings", headers={**AUTH, "Origin": origin},
                                                           json={"input": "x"}).headers
    settings = ServeSettings(api_key=KEY, cors_origins=(origin,))
    with ServerThread(create_app(model, settings)) as running:
        answer = httpx.options(running.url + "/v1/embeddings", headers=preflight)  # no API key on a preflight
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == origin
        assert "authorization" in answer.headers["access-control-allow-headers"].lower()
        posted = httpx.post(running.url + "/v1/embeddings", headers={**AUTH, "Origin": origin}, json={"input": "x"})
        assert posted.status_code == 200 and posted.headers["access-control-allow-origin"] == origin
        other = httpx.options(running.url + "/v1/embeddings", headers={**preflight, "Origin": "https://evil.example"})
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
