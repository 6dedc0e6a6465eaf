"""The server does what its OpenAPI schema says: a schemathesis run against ``sisa serve``
on 127.0.0.1 (the real Ray Serve application, on the session's Ray cluster).

Every operation gets generated valid and invalid requests, with the bearer token, and
every response is checked with schemathesis' checks: no 5xx, a documented status code, a
body that matches the documented schema, the documented headers, invalid input refused
with 4xx (413 included: rows over ``serving.max_rows``), and so on. A schema-valid
request may still be refused for what no schema can say, and only for that:
``DATA_DEPENDENT`` lists these refusals (an unknown ID, a reason that names one, rows
that overflow the models). Bounded: a fixed number of examples per operation and mode,
derandomized, so every run sends the same cases."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.conftest import tiny_config
from tests.orchestrator.test_serve import TOKEN, free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]
schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("ray.serve")
from hypothesis import HealthCheck, given, settings  # noqa: E402 - after the skip

# per operation and mode: 40 x (5 positive + 2 negative) = 280 cases; more for a deeper run
EXAMPLES = int(os.environ.get("SISA_SCHEMA_EXAMPLES", "40"))
# (operation, status, words of the message) a schema-valid request may still get
DATA_DEPENDENT = [
    ("POST /forget", 422, "unknown IDs"),  # the schema cannot list the store's IDs
    ("POST /forget", 422, "reason names an ID"),
    ("POST /forget", 422, "one line of printable text"),  # Unicode categories
    ("POST /predict", 422, "non-finite scores"),  # finite rows the models overflow on
    ("GET /requests/{request_id}", 404, ""),  # any text may name a request
    # the fuzzer sends the token that can forget, which the dashboard's data refuses
    ("GET /dashboard/data", 401, "serving.read_token"),
    ("GET /dashboard/data", 403, "serving.read_token"),  # a server without one
]


@pytest.fixture(scope="module")
def base_url(ray_cluster, tmp_path_factory):
    from ray import serve

    from orchestrator.serve import start
    from sisa.config import build_config
    from sisa.training.train import train

    url = str(tmp_path_factory.mktemp("schema") / "s")
    train(tiny_config(), url)
    # external retraining: generated deletions of real IDs are journaled, never retrained
    cfg = build_config(
        {}, {"serving.port": free_port(), "serving.token": TOKEN, "serving.retrain": "external"}
    )
    try:
        yield start(url, None, cfg.serving).url
    finally:
        serve.shutdown()


@pytest.fixture(scope="module")
def api_schema(base_url):
    statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428"]
    config = schemathesis.Config.from_dict(
        {
            "checks": {
                # 413 is the documented answer to rows over serving.max_rows
                "negative_data_rejection": {"expected-statuses": [*statuses, "429"]},
                # replaced by positive_data_accepted below, which names each exception
                "positive_data_acceptance": {"enabled": False},
            }
        }
    )
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config)


def beyond_int64(body: Any) -> bool:
    """Whether a body holds an integer past 64 bits, which the generator, comparing as
    floats, may take for -2**63 (-9223372036854776000 == float(-2**63)): not schema-valid."""
    ids = body.get("ids") if isinstance(body, dict) else None
    return isinstance(ids, list) and any(
        isinstance(i, int) and not -(2**63) <= i < 2**63 for i in ids
    )


def positive_data_accepted(ctx: Any, response: Any, case: Any) -> None:
    """A schema-valid request gets 2xx, or one of the ``DATA_DEPENDENT`` refusals."""
    if 200 <= response.status_code < 300 or beyond_int64(case.body):
        return
    label = case.operation.label
    text = response.text
    for operation, status, words in DATA_DEPENDENT:
        if (operation, status) == (label, response.status_code) and words in text:
            return
    raise AssertionError(f"schema-valid request refused: {response.status_code} {text[:300]}")


# named here, not read from the schema at collection (the server is not up then); the
# first test checks that these are all the schema's operations
OPERATIONS = [
    "POST /predict",
    "POST /forget",
    "GET /requests/{request_id}",
    "GET /status",
    "GET /healthz",
    "GET /metrics",
    "GET /dashboard/data",
]
# operations without a body or a constrained parameter have no invalid input to send
CASES = [(label, "positive") for label in OPERATIONS] + [
    ("POST /predict", "negative"),
    ("POST /forget", "negative"),
]


def test_every_operation_is_fuzzed(api_schema):
    labels = [result.ok().label for result in api_schema.get_all_operations()]
    assert sorted(labels) == sorted(OPERATIONS)


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_the_server_does_what_its_schema_says(api_schema, label, mode):
    (operation,) = [r.ok() for r in api_schema.get_all_operations() if r.ok().label == label]
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def check(case):
        case.call_and_validate(
            headers={"Authorization": f"Bearer {TOKEN}"},
            additional_checks=[positive_data_accepted] if mode == "positive" else [],
            timeout=60,
        )

    check()
