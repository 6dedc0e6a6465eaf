"""``sisa serve`` for real: the Ray Serve application on loopback, called over HTTP.

Three applications share the session's Ray cluster and Serve's one proxy: ``main`` (token
set, probabilities allowed, background retraining, short body timeouts and a small
per-client bound), ``strict`` under ``/strict`` (labels only, no token, external
retraining, tight limits), ``head`` under ``/head`` (a store of per-shard heads on a
frozen backbone, ``model.finetune = "head"``) and ``sealed`` under ``/sealed`` (an
encrypted store whose replicas read the key-encryption key from ``storage.kek_file``)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sisa.config import build_config
from sisa.ids import salted_hash
from sisa.serving.predictor import Predictor
from sisa.store.artifacts import SisaStore
from sisa.store.journal import Journal
from sisa.training.factories import TRUST_ENV
from sisa.training.train import train
from tests.conftest import sealed_with_kek_file, tiny_config
from tests.orchestrator import serving_backbone
from tests.sisa.deletion.test_accept import layout

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]
requests = pytest.importorskip("requests")
pytest.importorskip("ray.serve")

TOKEN = "test-token-0123456789abcdef"
READ_TOKEN = "read-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROWS = np.random.default_rng(11).random((8, 64)).astype(np.float32)
GUARDS = {"body_idle_s": 2.0, "body_total_s": 4.0, "per_client": 8}  # main's Limits


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_head_store(root: Path) -> str:
    """A "head" store on ``serving_backbone``'s backbone, whose weights lie beside it."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(5)
    weights = root / "backbone.safetensors"
    save_file(serving_backbone.tiny((64,)).state_dict(), str(weights))
    settings = {
        "model.finetune": "head",
        "model.backbone": serving_backbone.NAME,
        "model.backbone_weights": str(weights),
        "model.hidden": [],
        "model.feature_batch": 8,
    }
    url = str(root / "head")
    train(tiny_config(**settings), url)
    return url


def train_sealed_store(root: Path) -> str:
    """An encrypted store; the KEK lies in a file the config names, which Serve's replicas
    read (the cluster's nodes started without SISA_STORAGE__KEK)."""
    url = str(root / "sealed")
    train(tiny_config(**sealed_with_kek_file(root)), url)
    return url


@pytest.fixture(scope="module")
def trusted_backbone():
    """This process trusts ``serving_backbone`` while the module runs; the cluster's nodes
    started without it."""
    before = os.environ.get(TRUST_ENV)
    os.environ[TRUST_ENV] = ",".join(v for v in (before, serving_backbone.NAME) if v)
    yield
    if before is None:
        os.environ.pop(TRUST_ENV)
    else:
        os.environ[TRUST_ENV] = before


@pytest.fixture(scope="module")
def apps(ray_cluster, trusted_backbone, tmp_path_factory):
    """The three applications on one free loopback port; Serve is shut down afterwards."""
    from ray import serve

    from orchestrator.api_guards import Limits
    from orchestrator.logs import EventRelay
    from orchestrator.serve import start

    root = tmp_path_factory.mktemp("serve")
    main_url, strict_url = str(root / "main"), str(root / "strict")
    train(tiny_config(**{"sisa.slices": 4}), main_url)
    shutil.copytree(main_url, strict_url)
    head_url = train_head_store(root)
    sealed_url = train_sealed_store(root)
    port = free_port()
    main_cfg = build_config(
        {},
        {
            "serving.port": port,
            "serving.token": TOKEN,
            "serving.read_token": READ_TOKEN,
            "serving.poll_s": 0.2,
        },
    )
    strict_cfg = build_config(
        {},
        {
            "serving.port": port,
            "serving.output": "labels",
            "serving.retrain": "external",
            "serving.max_rows": 5,
            "serving.max_body_bytes": 4096,
            "serving.num_cpus": 0.25,
        },
    )
    try:
        main = start(main_url, None, main_cfg.serving, limits=Limits(**GUARDS))
        strict_events = EventRelay()  # its events, as 'sisa serve' would write them
        strict = start(
            strict_url,
            None,
            strict_cfg.serving,
            name="strict",
            route_prefix="/strict",
            events=strict_events,
        )
        head_cfg = build_config(
            {}, {"serving.port": port, "serving.retrain": "external", "serving.num_cpus": 0.25}
        )
        head = start(head_url, None, head_cfg.serving, name="head", route_prefix="/head")
        sealed = start(sealed_url, None, head_cfg.serving, name="sealed", route_prefix="/sealed")
        yield {
            "main": (main.url, main_url),
            "strict": (strict.url, strict_url),
            "head": (head.url, head_url),
            "sealed": (sealed.url, sealed_url),
            "port": port,
            "strict_events": strict_events,
        }
    finally:
        serve.shutdown()


@pytest.fixture(scope="module")
def http():
    with requests.Session() as session:
        yield session


def predict(http, base, rows=ROWS, **extra):
    return http.post(f"{base}/predict", json={"rows": np.asarray(rows).tolist(), **extra})


def pick(url, shard, slice_, skip=0):
    ids, shards, slices = layout(url)
    return int(ids[(shards == shard) & (slices == slice_)][skip])


def wait_for(check, timeout=120.0, every=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out")


def test_binds_loopback_only(apps):
    """The proxy's listening socket is on 127.0.0.1 (read from /proc, no traffic)."""
    port = apps["port"]
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                listening.append(address)
    assert listening == ["0100007F"]  # 127.0.0.1, and nothing else
    assert build_config({}).serving.host == "127.0.0.1"


def test_a_second_app_on_another_port_is_refused_clearly(apps):
    """A cluster has one Serve proxy: an app that asks for another port is refused, not
    silently served on the first one's ("new http_options will not be applied")."""
    from orchestrator.serve import start

    other = build_config({}, {"serving.port": free_port()}).serving
    with pytest.raises(ValueError, match=f"already runs .* 127.0.0.1:{apps['port']}"):
        start(apps["main"][1], None, other, name="other", route_prefix="/other")


def test_the_ensembles_reserve_serving_num_cpus_in_all_not_a_cpu_per_shard(apps, ray_cluster):
    """The applications hold 3 shard models each on a 2-CPU cluster: 0.5 + 3 x 0.25 CPU."""
    used = ray_cluster.cluster_resources()["CPU"] - ray_cluster.available_resources().get("CPU", 0)
    assert used == pytest.approx(1.25)


def test_predict_gives_the_predictors_labels_and_probabilities(apps, http):
    base, url = apps["main"]
    response = predict(http, base, probabilities=True)
    assert response.status_code == 200
    body = response.json()
    expected = Predictor(url).predict(ROWS, probabilities=True)
    assert body["labels"] == expected.labels.tolist()
    got = np.asarray(body["probabilities"], dtype=np.float32)
    np.testing.assert_array_equal(got, expected.probabilities)  # float32 survives JSON
    assert body["model"] == {"version": expected.version, "through": expected.through}
    labels_only = predict(http, base).json()
    assert "probabilities" not in labels_only and labels_only["labels"] == body["labels"]


def test_a_head_mode_store_is_served_through_its_backbone(apps, http):
    """The replicas import the backbone under the trust of the process that started them,
    and answer raw rows as the in-process Predictor does: the backbone once per row, then
    every head."""
    base, url = apps["head"]
    response = predict(http, base)
    assert response.status_code == 200, response.text
    expected = Predictor(url).predict(ROWS, probabilities=True)
    assert response.json()["labels"] == expected.labels.tolist()
    assert response.json()["model"]["version"] == expected.version
    assert predict(http, base, rows=ROWS[:, :16]).status_code == 422  # the raw width: 64


def test_an_encrypted_store_is_served_by_replicas_that_read_its_kek_file(apps, http):
    base, url = apps["sealed"]
    response = predict(http, base)
    assert response.status_code == 200, response.text
    expected = Predictor(url).predict(ROWS)  # this process reads the same file
    assert response.json()["labels"] == expected.labels.tolist()


def test_labels_only_server_refuses_probabilities(apps, http):
    base, url = apps["strict"]
    response = predict(http, base, rows=ROWS[:3])
    assert response.status_code == 200
    assert response.json()["labels"] == Predictor(url).predict(ROWS[:3]).labels.tolist()
    refused = predict(http, base, rows=ROWS[:3], probabilities=True)
    assert refused.status_code == 403 and "labels only" in refused.json()["detail"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"rows": [[0.5] * 63]}, "each row must have 64 features, got 63"),
        ({"rows": [[0.5] * 64, [0.5] * 60]}, "same number of features"),
        ({"rows": []}, "at least 1"),
        ({"rows": [["0.5"] * 64]}, "valid number"),
        ({"rows": [[True] * 64]}, "valid number"),
        ({"rows": [[0.5] * 64], "extra": 1}, "Extra inputs"),
        ({"rows": [0.5] * 64}, "valid list"),
        ({"rows": [[1e39] * 64]}, "beyond float32"),
        ({"rows": [[0.5] * 63 + [3.402823466385289e38]]}, "beyond float32"),  # rounds to max
        ({}, "Field required"),
        ({"rows": [[0.5] * 64], "probabilities": "yes"}, "valid boolean"),  # strict types
        ({"rows": [[0.5] * 64], "probabilities": 1}, "valid boolean"),
    ],
)
def test_invalid_predictions_get_422_naming_the_problem(apps, http, body, fragment):
    response = http.post(f"{apps['main'][0]}/predict", json=body)
    assert response.status_code == 422
    assert fragment in response.text
    detail = response.json()["detail"]  # always a list of {loc, msg, type}, as documented
    assert isinstance(detail, list) and {"loc", "msg", "type"} <= set(detail[0])


def test_rows_whose_scores_overflow_get_422_naming_the_rows(apps, http):
    """3e38 is finite in float32, yet overflows inside the models: no null scores."""
    rows = np.full((4, 64), 0.5, dtype=np.float32)
    rows[1], rows[3] = 3e38, -3e38
    response = predict(http, apps["main"][0], rows=rows, probabilities=True)
    assert response.status_code == 422, response.text
    (item,) = response.json()["detail"]
    assert item["rows"] == [1, 3] and item["msg"].startswith("rows 1, 3 give non-finite")
    assert item["loc"] == ["body", "rows"]
    fine = predict(http, apps["main"][0], rows=rows[[0, 2]], probabilities=True).json()
    assert np.isfinite(np.asarray(fine["probabilities"], dtype=np.float64)).all()


def test_a_body_of_many_bad_values_gets_a_short_422(apps, http):
    rows = [[None] * 64] * 200  # 12,800 bad numbers
    response = http.post(f"{apps['main'][0]}/predict", json={"rows": rows})
    assert response.status_code == 422 and len(response.content) < 2000
    assert len(response.json()["detail"]) <= 10


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_numbers_get_422(apps, http, literal):
    body = '{"rows": [[' + ", ".join(["0.5"] * 63 + [literal]) + "]]}"
    response = http.post(
        f"{apps['main'][0]}/predict", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422 and "finite number" in response.text


def test_malformed_json_gets_422(apps, http):
    response = http.post(
        f"{apps['main'][0]}/predict", data="{rows:", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422


def test_bodies_and_batches_over_the_limits_get_413(apps, http):
    base = apps["strict"][0]
    big = {"rows": [[0.5] * 64] * 20}  # about 5 KB > 4096 bytes
    assert http.post(f"{base}/predict", json=big).status_code == 413

    def chunks():  # no Content-Length: the body is counted as it streams
        yield b'{"rows": ['
        for _ in range(40):
            yield b"[" + b", ".join([b"0.5"] * 64) + b"],"
        yield b"[0.5]]}"

    streamed = http.post(
        f"{base}/predict", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413 and "max_body_bytes" in streamed.json()["detail"]
    many = predict(http, base, rows=np.zeros((6, 64)))  # 6 rows > max_rows 5, under 4 KB
    assert many.status_code == 413 and "max_rows" in many.json()["detail"]
    assert predict(http, base, rows=np.zeros((5, 64))).status_code == 200


def test_forget_needs_the_bearer_token(apps, http):
    base, url = apps["main"]
    body = {"ids": [pick(url, 1, 3)]}
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": TOKEN},
    ):
        response = http.post(f"{base}/forget", json=body, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert Journal(SisaStore(url)).seqs() == []  # nothing was journaled
    disabled = http.post(f"{apps['strict'][0]}/forget", json=body, headers=AUTH)
    assert disabled.status_code == 403 and "serving.token" in disabled.json()["detail"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"ids": [10**9]}, "unknown IDs"),
        ({"ids": ["12x"]}, "valid integer"),  # this store's IDs are integers
        ({"ids": ["12"]}, "valid integer"),  # strict: text is not a number
        ({"ids": ["２０"]}, "valid integer"),  # fullwidth digits are not the ID 20
        ({"ids": ["١٣"]}, "valid integer"),  # nor Arabic-Indic ones 13
        ({"ids": ["21\n"]}, "valid integer"),  # nor a trailing newline 21
        ({"ids": [2**63]}, "less than or equal to 9223372036854775807"),
        ({"ids": [1000, 1000]}, "duplicate IDs"),
        ({"ids": [True]}, "valid"),
        ({"ids": []}, "at least 1"),
        ({"ids": [1000], "group": "g"}, "no groups"),
        ({"group": "person-1"}, "no groups"),
        ({"ids": [1000], "reason": "ticket about 1000"}, "reason names an ID"),
        ({"ids": [1000], "reason": "two\nlines"}, "one line"),
        ({}, "give 'ids'"),
        ({"ids": None, "group": 1000}, "valid list"),  # not nullable, as documented
        ({"ids": [1000], "reason": 7}, "valid string"),
    ],
)
def test_bad_forget_requests_get_422_and_journal_nothing(apps, http, body, fragment):
    base, url = apps["main"]
    before = Journal(SisaStore(url)).seqs()
    response = http.post(f"{base}/forget", json=body, headers=AUTH)
    assert response.status_code == 422 and fragment in response.text
    assert isinstance(response.json()["detail"], list)  # the shape of every 422
    assert Journal(SisaStore(url)).seqs() == before


@pytest.mark.parametrize(
    "request_id", ["r000009999-00000000", "r000000001-" + "0" * 32, "nonsense", "..%2F..%2Fetc"]
)
def test_unknown_request_ids_get_404(apps, http, request_id):
    response = http.get(f"{apps['main'][0]}/requests/{request_id}")
    assert response.status_code == 404


def test_status_healthz_and_openapi(apps, http):
    base, url = apps["main"]
    health = http.get(f"{base}/healthz")
    assert health.status_code == 200 and health.json()["ok"] is True
    status = http.get(f"{base}/status").json()
    assert status["ensemble"]["input_shape"] == [64]
    assert status["retrainer"]["mode"] == "background"
    assert "external" in http.get(f"{apps['strict'][0]}/status").json()["retrainer"]["mode"]
    spec = http.get(f"{base}/openapi.json").json()
    assert {"/predict", "/forget", "/requests/{request_id}", "/status", "/healthz"} <= set(
        spec["paths"]
    )
    assert spec["paths"]["/forget"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "/predict" not in [p for p in spec["paths"] if spec["paths"][p].get("security")]
    # no Swagger UI: it would load its scripts from a CDN; the OpenAPI JSON stays
    assert http.get(f"{base}/docs").status_code == 404
    assert http.get(f"{base}/redoc").status_code == 404


def test_the_openapi_schema_says_what_the_server_does(apps, http):
    spec = http.get(f"{apps['main'][0]}/openapi.json").json()
    schemas, paths = spec["components"]["schemas"], spec["paths"]
    rows = schemas["PredictRequest"]["properties"]["rows"]
    assert rows["items"]["minItems"] == rows["items"]["maxItems"] == 64  # this store's rows
    assert rows["minItems"] == 1 and rows["maxItems"] == 1024  # serving.max_rows
    assert schemas["PredictRequest"]["properties"]["probabilities"]["type"] == "boolean"
    forget = schemas["ForgetRequest"]  # this store has integer IDs and no groups
    assert forget["required"] == ["ids"] and set(forget["properties"]) == {"ids", "reason"}
    assert forget["additionalProperties"] is False
    ids = forget["properties"]["ids"]
    assert ids["type"] == "array" and ids["items"]["type"] == "integer"  # never null
    assert ids["uniqueItems"] is True
    codes = {
        ("/predict", "post"): {"200", "400", "403", "408", "413", "422", "429", "503"},
        ("/forget", "post"): {"200", "202", "400", "401", "403", "408", "413", "422", "429", "503"},
        ("/requests/{request_id}", "get"): {"200", "404", "408", "413", "422", "429", "503"},
        ("/status", "get"): {"200", "408", "413", "429", "503"},
        ("/healthz", "get"): {"200", "408", "413", "503"},
    }
    for (path, method), expected in codes.items():
        responses = paths[path][method]["responses"]
        assert set(responses) == expected, path
        for code, response in responses.items():
            ref = response["content"]["application/json"]["schema"]["$ref"]
            if code == "422":
                assert ref.endswith("/ValidationErrorBody"), path
            elif code >= "400":
                assert ref.endswith("/ErrorBody"), (path, code)
    # the documented 422 body is what the server sends, e.g. for a refused deletion
    refused = http.post(f"{apps['main'][0]}/forget", json={"ids": [10**9]}, headers=AUTH)
    assert refused.status_code == 422
    (item,) = refused.json()["detail"]
    assert item == {"loc": ["body"], "msg": item["msg"], "type": "value_error"}
    assert "unknown IDs" in item["msg"]


def test_forget_is_compliant_at_once_then_retrained_and_purged(apps, http):
    base, url = apps["main"]
    before = predict(http, base, probabilities=True).json()
    victim = pick(url, 2, 1)
    response = http.post(f"{base}/forget", json={"ids": [victim]}, headers=AUTH)
    assert response.status_code == 202
    accepted = response.json()
    rid, seq = accepted["request_id"], int(accepted["request_id"][1:10])
    assert len(rid.split("-")[1]) == 32  # 128 random bits: a handle nobody can guess
    assert accepted["state"] == "compliant" and accepted["rolled_back"] == [2]
    assert accepted["model"]["through"] == seq
    # the very next prediction already uses the rolled-back ensemble
    after = predict(http, base, probabilities=True).json()
    assert after["model"] == accepted["model"] and after["model"] != before["model"]
    state = http.get(f"{base}/requests/{rid}").json()["state"]
    assert state in ("compliant", "retrained", "purged")
    # the background retrainer retrains, purges, and the ensemble switches to its models
    wait_for(lambda: http.get(f"{base}/requests/{rid}").json()["state"] == "purged")
    final = Predictor(url).predict(ROWS, probabilities=True)
    served = wait_for(
        lambda: (
            (b := predict(http, base, probabilities=True).json())["model"]["version"]
            == final.version
            and b
        )
    )
    assert served["labels"] == final.labels.tolist()
    np.testing.assert_array_equal(np.float32(served["probabilities"]), final.probabilities)
    assert set(http.get(f"{base}/requests/{rid}").json()) == {"id", "seq", "state"}
    anyone = http.get(f"{base}/requests/{rid}", headers={"Authorization": "Bearer wrong-token"})
    assert set(anyone.json()) == {"id", "seq", "state"}  # a wrong token: the state only
    full = http.get(f"{base}/requests/{rid}", headers=AUTH).json()
    assert full["points"] == 1 and full["shards"] == [2]
    receipt = full["receipt"]
    assert receipt["request"] == rid  # it holds the salted hash, never the ID
    assert receipt["ids"] == [salted_hash(SisaStore(url).salt(), victim)]
    again = http.post(f"{base}/forget", json={"ids": [victim]}, headers=AUTH)
    assert again.status_code == 200 and again.json()["request_id"] is None
    assert again.json()["earlier_requests"] == [rid]


def test_the_same_id_sent_by_four_clients_at_once_is_accepted_once(apps):
    """Check and journal are one step (``sisa.store.journal``): one 202, three 200 no-ops that
    name the request, and the journal holds the point once."""
    from concurrent.futures import ThreadPoolExecutor

    import requests as client

    base, url = apps["main"]
    victim = pick(url, 0, 0)
    barrier = threading.Barrier(4)

    def send(_):
        with client.Session() as session:
            barrier.wait()
            return session.post(f"{base}/forget", json={"ids": [victim]}, headers=AUTH)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(send, range(4)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 200, 200, 202], [a.text for a in answers]
    rid = next(a.json()["request_id"] for a in answers if a.status_code == 202)
    for a in answers:
        if a.status_code == 200:
            assert a.json()["earlier_requests"] == [rid]
    hashes = [e.hash for r in Journal(SisaStore(url)).all_requests() for e in r.entries]
    assert hashes.count(salted_hash(SisaStore(url).salt(), victim)) == 1


def test_predictions_alongside_forgets_never_fail_and_stay_consistent(apps, http):
    """>= 200 predictions from four threads while 12 forgets arrive and retrain."""
    base, url = apps["main"]
    # shard 0 keeps its first slice, so some shard can always answer (see the 503 test)
    targets = [pick(url, k, s, skip=3) for k in range(3) for s in range(4) if (k, s) != (0, 0)]
    targets.append(pick(url, 0, 3, skip=4))
    sent_at: dict[str, float] = {}
    answered_at: dict[int, float] = {}  # request number -> time its 202 arrived
    results: list[tuple[float, int, dict]] = []  # (sent, status, body)
    stop = threading.Event()

    def predictor_loop() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                sent = time.monotonic()
                r = predict(session, base, probabilities=True)
                results.append((sent, r.status_code, r.json() if r.ok else {"text": r.text}))

    def forget_loop() -> None:
        with requests.Session() as session:
            for victim in targets:
                sent_at[str(victim)] = time.monotonic()
                r = session.post(f"{base}/forget", json={"ids": [victim]}, headers=AUTH)
                assert r.status_code == 202, r.text
                answered_at[int(r.json()["request_id"][1:10])] = time.monotonic()
                time.sleep(0.05)

    threads = [threading.Thread(target=predictor_loop) for _ in range(4)]
    for t in threads:
        t.start()
    forgetter = threading.Thread(target=forget_loop)
    forgetter.start()
    forgetter.join()
    wait_for(lambda: len(results) >= 200, timeout=300)
    store = SisaStore(url)
    wait_for(lambda: not Journal(store).open_requests(), timeout=300)  # all retrained
    final = Predictor(url)
    wait_for(lambda: predict(http, base).json()["model"]["version"] == final.version)
    stop.set()
    for t in threads:
        t.join()

    assert len(answered_at) == len(targets) and len(results) >= 200
    assert not [r for r in results if r[1] >= 500], "a prediction failed"
    assert {r[1] for r in results} == {200}
    journaled = set(Journal(store).seqs())
    assert set(answered_at) <= journaled  # every acknowledged forget is journaled
    by_version: dict[str, tuple] = {}
    for sent, _, body in results:
        key = (tuple(body["labels"]), tuple(map(tuple, body["probabilities"])))
        assert by_version.setdefault(body["model"]["version"], key) == key  # one ensemble each
        # compliant: answered after a 202 means honouring that request
        owed = [seq for seq, at in answered_at.items() if at < sent]
        assert body["model"]["through"] >= max(owed, default=0)
    assert len(by_version) >= 3  # rolled back and retrained ensembles were both served
    last = predict(http, base, probabilities=True).json()
    expected = final.predict(ROWS, probabilities=True)
    assert last["labels"] == expected.labels.tolist()
    np.testing.assert_array_equal(np.float32(last["probabilities"]), expected.probabilities)


def test_no_live_shard_gives_503_until_an_external_retrain_commits(apps, http):
    """Every shard rolled back past its first slice: nothing can predict compliantly."""
    from sisa.deletion.accept import accept
    from sisa.deletion.batch import process

    base, url = apps["strict"]
    accepted = accept(url, [pick(url, shard, 0) for shard in range(3)])  # as 'sisa forget'
    status = http.get(f"{base}/status")
    assert status.json()["pending_requests"] == 1 and status.json()["oldest_pending_s"] >= 0
    assert accepted.request_id not in status.text  # the requester's handle stays private
    # a Response is falsy when not ok: wrap it
    (refused,) = wait_for(
        lambda: (r := predict(http, base, rows=ROWS[:2])).status_code == 503 and (r,)
    )
    assert "waits for a retrain" in refused.json()["detail"]
    assert refused.headers["Retry-After"] == "1"
    events = apps["strict_events"].queue
    while (failed := events.get(timeout=30))["event"] != "predict_failed":  # the ingress's
        pass
    assert failed["level"] == logging.WARNING
    assert failed["fields"] == failed["fields"] | {"status": 503, "rows": 2, "outcome": "failed"}
    assert "waits for a retrain" in failed["fields"]["detail"] and failed["fields"]["seconds"] > 0
    assert http.get(f"{base}/healthz").status_code == 200  # the server itself is fine
    process(url)  # as 'sisa process' would
    answer = wait_for(lambda: (r := predict(http, base, rows=ROWS[:2])).ok and r.json())
    assert answer["labels"] == Predictor(url).predict(ROWS[:2]).labels.tolist()
    assert answer["model"]["through"] == 1


def stall(port: int, prefix: str = "") -> socket.socket:
    """A client that sends its headers and the start of its body, then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST {prefix}/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    sock.sendall(head.encode() + b'{"rows": [[0.5, ')
    return sock


def answer(sock: socket.socket) -> tuple[int, dict]:
    """(status, JSON body) of the one response on ``sock``; (0, {}) if it closed."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        lines = head.lower().split(b"\r\n")
        length = [int(h.split(b":")[1]) for h in lines if h.startswith(b"content-length:")]
        if sep and length and len(body) >= length[0]:
            break
    if not data:
        return 0, {}
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_stalled_bodies_are_cut_off_and_health_and_forget_keep_answering(apps, http):
    """80 sockets that send headers and stall (66 once held every ingress slot for 107 s):
    each gets 408 within the body timeout or 429 past the per-client bound, as JSON, and
    meanwhile /healthz and an authorised /forget answer at once."""
    base, url = apps["main"]
    sockets = [stall(apps["port"]) for _ in range(80)]
    try:
        time.sleep(0.3)  # the stalled requests have reached the ingress
        started = time.monotonic()
        with requests.Session() as session:  # a fresh connection, from the same address
            busy = session.get(f"{base}/status", timeout=5)
            assert busy.status_code == 429, busy.text  # this address is at its bound now
            assert busy.headers["Retry-After"] == "1"
            health = session.get(f"{base}/healthz", timeout=5)
            assert health.status_code == 200 and health.json()["ok"] is True
            victim = pick(url, 0, 2, skip=6)
            body = {"ids": [victim]}
            forget = session.post(f"{base}/forget", json=body, headers=AUTH, timeout=30)
        assert forget.status_code == 202, forget.text
        assert time.monotonic() - started < 10
        answers = [answer(sock) for sock in sockets]
        took = time.monotonic() - started
    finally:
        for sock in sockets:
            sock.close()
    codes = [status for status, _ in answers]
    assert set(codes) <= {408, 429}, codes
    assert codes.count(408) >= GUARDS["per_client"] and codes.count(429) >= 1
    assert all(isinstance(body["detail"], str) for _, body in answers)
    assert took < GUARDS["body_total_s"] + 10
    assert predict(http, base).status_code == 200  # and the server serves on


def test_a_trickling_body_gets_408_once_its_total_time_is_up(apps):
    """A byte every half second never trips the idle timeout, but the total one."""
    sock = stall(apps["port"])
    started = time.monotonic()
    try:
        sock.settimeout(0.5)
        for _ in range(int(GUARDS["body_total_s"] * 2) + 8):
            try:
                status, body = answer(sock)
                break
            except TimeoutError:
                sock.sendall(b"0")
        else:
            raise AssertionError("the trickle was never cut off")
    finally:
        sock.close()
    assert status == 408 and "stalled" in body["detail"]
    assert GUARDS["body_total_s"] - 0.5 <= time.monotonic() - started < GUARDS["body_total_s"] + 3


def test_a_gpu_store_is_served_only_by_replicas_that_reserve_a_gpu():
    """Without a reservation Ray assigns no GPU, and a replica would load its models onto
    whatever GPU its node shows first; the settings must say what to reserve."""
    from orchestrator.serve import replica_gpus

    cpu = tiny_config().resources
    gpu = tiny_config(**{"resources.device": "cuda", "resources.num_gpus": 0.25}).resources

    def serving(**overrides):
        return build_config({}, {f"serving.{k}": v for k, v in overrides.items()}).serving

    assert replica_gpus(cpu, serving()) == (0.0, 0.0)
    assert replica_gpus(gpu, serving(num_gpus=0.5)) == (0.5, 0.25)
    with pytest.raises(ValueError, match="set serving.num_gpus > 0"):
        replica_gpus(gpu, serving())
    no_share = tiny_config(**{"resources.device": "cuda"}).resources
    with pytest.raises(ValueError, match="background retrainer would get no GPU"):
        replica_gpus(no_share, serving(num_gpus=1))
    assert replica_gpus(no_share, serving(num_gpus=1, retrain="external")) == (1.0, 0.0)


def test_metrics_and_the_dashboard_through_serve(apps, http):
    """The ingress replica serves its own latencies and the store's figures, and the
    dashboard's data behind the read token."""
    from prometheus_client.parser import text_string_to_metric_families

    base, url = apps["main"]
    assert predict(http, base).status_code == 200
    page = http.get(f"{base}/metrics")
    assert page.status_code == 200
    found = {s.name: s for f in text_string_to_metric_families(page.text) for s in f.samples}
    ok = [
        s
        for f in text_string_to_metric_families(page.text)
        for s in f.samples
        if s.name == "sisa_predict_seconds_count" and s.labels == {"outcome": "ok"}
    ]
    assert ok and ok[0].value >= 1
    assert found["sisa_requests_pending"].value == len(Journal(SisaStore(url)).open_requests())
    assert found["sisa_deadline_seconds"].value == SisaStore(url).config().deletion.deadline_s
    data = f"{base}/dashboard/data"
    assert http.get(data, headers=AUTH).status_code == 401  # the token that can forget
    shown = http.get(data, headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert shown.status_code == 200 and shown.json()["shards"] == 3
    dashboard = http.get(f"{base}/dashboard")
    assert dashboard.status_code == 200
    assert "script-src 'self'" in dashboard.headers["content-security-policy"]
