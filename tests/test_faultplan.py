"""
Reading and checking the simulator's fault plan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import ConfigError
from orchestrator.faultplan import HANG, RESET, Dataset, Fault, Plan, load_plan

PROJECT = "0b2c5e7f9a1d4c3b8e6f0a2d4c6e8b1f"


PLAN_FILE = """\
token: tok-1
rate_limit: 50
latency_ms: 5
sync_duration_ms: 200
list_offset_mode: pages
rate_limited: [sync]
failed_syncs: [ds-0004]
stuck_syncs: [ds-0005]
list_repeat_page: 2
faults:
  ds-0003: [503, 503]
  ds-0007: [{status: 429, retry_after: 1}]
  ds-0010: [reset, hang, {latency_ms: 20}]
  ds-0011: reset
always:
  ds-0099: {status: 404, error_code: ModelArts.4352}
catalogue:
  0b2c5e7f9a1d4c3b8e6f0a2d4c6e8b1f:
    - {dataset_id: abc, dataset_name: cats, dataset_type: 0, status: 1}
"""


def test_load_plan_reads_every_setting(tmp_path: Path) -> None:
    """A full plan file becomes the matching Plan."""
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN_FILE)

    plan = load_plan(path)

    assert plan == Plan(
        token="tok-1",
        rate_limit_per_s=50,
        latency_s=0.005,
        sync_duration_s=0.2,
        list_offset_mode="pages",
        rate_limited_kinds=frozenset({"sync"}),
        failed_syncs=frozenset({"ds-0004"}),
        stuck_syncs=frozenset({"ds-0005"}),
        list_repeat_page=2,
        faults={
            "ds-0003": (Fault(status=503), Fault(status=503)),
            "ds-0007": (Fault(status=429, retry_after="1"),),
            "ds-0010": (RESET, HANG, Fault(latency_ms=20)),
            "ds-0011": (RESET,),
        },
        always={"ds-0099": Fault(status=404, error_code="ModelArts.4352")},
        datasets={PROJECT: (Dataset("abc", "cats", 0, 1),)},
    )


def test_load_plan_of_an_empty_file_gives_defaults(tmp_path: Path) -> None:
    """An empty plan file is the default plan."""
    path = tmp_path / "plan.yaml"
    path.write_text("")

    assert load_plan(path) == Plan()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "rate_limt: 5\n",
            ":1 rate_limt: unknown key; did you mean 'rate_limit'?",
            id="top",
        ),
        pytest.param(
            "always:\n  ds-1: {status: 503, retry: 2}\n",
            ":2 always.ds-1.retry: unknown key; did you mean 'retry_after'?",
            id="in-fault",
        ),
        pytest.param(
            "catalogue:\n  p1:\n    - {dataset_id: a, owner: me}\n",
            ":3 catalogue.p1[0].owner: unknown key; known keys: dataset_id,",
            id="in-catalogue",
        ),
        pytest.param(
            "faults:\n  ds-1: [explode]\n",
            ":2 faults.ds-1[0]: must be a status, reset, hang or a mapping of fault "
            "fields; got 'explode'",
            id="bad-fault",
        ),
        pytest.param(
            "faults:\n  ds-1: [99]\n",
            ":2 faults.ds-1[0]: must be a usable fault: status 99 is not within "
            "200-599; got 99",
            id="status-99",
        ),
        pytest.param(
            "rate_limit: fast\n",
            ":1 rate_limit: must be a number; got 'fast'",
            id="rate",
        ),
        pytest.param(
            "latency_ms: -1\n",
            ":1 latency_ms: must be a number >= 0; got -1",
            id="latency",
        ),
        pytest.param(
            "always:\n  1234: 503\n",
            ":2 always.1234: must be an id of A-Z a-z 0-9 _ -; got 1234; "
            "quote it: '1234'",
            id="int-id",
        ),
        pytest.param(
            "token: a\ntoken: b\n",
            ":2 token: duplicate key, first given at line 1",
            id="duplicate",
        ),
        pytest.param("faults: [\n", ":2:1: not valid YAML", id="bad-yaml"),
        pytest.param(
            "- 1\n", ":1: must be a mapping of plan settings", id="not-a-mapping"
        ),
        pytest.param(
            "faults: {ds-1: [503]}\nalways: {ds-1: 503}\n",
            "['ds-1'] are in faults and always",
            id="faults-and-always",
        ),
    ],
)
def test_load_plan_refuses_bad_plans_in_one_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    """Each mistake is a one-line ConfigError naming file, line, key and value."""
    path = tmp_path / "plan.yaml"
    path.write_text(text)

    with pytest.raises(ConfigError) as caught:
        load_plan(path)

    message = str(caught.value)
    assert message.startswith(str(path))
    assert expected in message
    assert "\n" not in message


def test_load_plan_of_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A plan file that cannot be read is a ConfigError naming it."""
    path = tmp_path / "absent.yaml"

    with pytest.raises(ConfigError, match=r"absent\.yaml"):
        load_plan(path)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        pytest.param(lambda: Fault(status=99), "200-599", id="status"),
        pytest.param(lambda: Fault(error_code="X"), "need a status", id="no-status"),
        pytest.param(lambda: Fault(action="reset", status=500), "no status", id="rst"),
        pytest.param(lambda: Plan(rate_limit_per_s=0.5), "below 1", id="rate"),
        pytest.param(lambda: Plan(list_repeat_page=-1), "< 0", id="repeat"),
        pytest.param(
            lambda: Plan(failed_syncs=frozenset({"d"}), stuck_syncs=frozenset({"d"})),
            "fail and stick",
            id="failed-and-stuck",
        ),
        pytest.param(
            lambda: Plan(rate_limited_kinds=frozenset({"token"})),
            "not APIs",
            id="kinds",
        ),
    ],
)
def test_inconsistent_faults_and_plans_are_refused(build: Any, message: str) -> None:
    """Fault and Plan refuse values that cannot mean anything."""
    with pytest.raises(ValueError, match=message):
        build()


def test_the_demo_plan_loads() -> None:
    """configs/demo-plan.yaml, which `make demo` plays, is a valid plan."""
    path = Path(__file__).parent.parent / "configs" / "demo-plan.yaml"

    plan = load_plan(path)

    assert plan.faults
