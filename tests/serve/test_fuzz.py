"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis).

Driven through schemathesis' Python API and Hypothesis directly: its pytest plugin does
not run under pytest 9.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from serve_app.settings import RenderSettings, Settings

from .conftest import deploy

pytestmark = pytest.mark.timeout(900)
MAX_EXAMPLES = 12  #: per operation: bounded, so the whole module stays around a minute


@pytest.fixture(scope="module")
def api_schema(ray_cluster, tmp_path_factory):
    deploy(Settings(workers=1, worker_gpus=0.5, data_dir=tmp_path_factory.mktemp("fuzz"), max_audio_s=5.0,
                    render=RenderSettings(threads=1)))  # fmt: skip
    return schemathesis.openapi.from_url(f"{ray_cluster}/openapi.json")


def test_api_never_errors_and_matches_its_schema(api_schema, ray_cluster):
    """Every operation: no 500s; status codes, content types and bodies as the schema says.

    Each session the fuzzer opens is deleted at once: open sessions hold capacity, and a full
    pool rightly answers 503 (which the fuzzer would count as a server error)."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8
    tried = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            # Every default check but "schema-valid data is accepted": random bytes are a valid
            # `audio` file by the schema's types, yet rightly a 4xx.
            response = case.call_and_validate(timeout=120, excluded_checks=[positive_data_acceptance])
            if case.operation.label == "POST /v1/sessions" and response.status_code == 201:
                httpx.delete(f"{ray_cluster}/v1/sessions/{response.json()['session_id']}", timeout=30).raise_for_status()

        check()
        tried.append(operation.label)
    assert "POST /v1/videos" in tried and "POST /generate_video" in tried
