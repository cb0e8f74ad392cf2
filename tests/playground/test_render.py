"""What `leveret play` draws: the key lines of each publish tree, within 80 columns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from leveret.playground.render import format_duration, render_text
from leveret.playground.runner import Runner

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "playground"

TEXT = """
exchange unrouted fanout
queue lost
bind unrouted -> lost
exchange logs topic ae=unrouted
exchange audit fanout
queue errors
queue kern
queue audit.log
bind logs -> errors "*.error"
bind logs -> kern "kern.*"
bind logs -> exchange audit "#.critical"
bind audit -> audit.log
exchange docs headers
queue pdf
bind docs -> pdf where x-match=any format=pdf type=report
queue work dlx=retry
exchange retry direct
queue work.wait ttl=5s
bind retry -> work.wait work
publish logs kern.error "disk full"
publish logs app.critical "oom"
publish logs app.debug "noise"
publish docs "" "doc" headers {format: "txt"}
publish "" work "job"
get work
reject
wait 5s
expect errors got "nope"
publish nowhere k x
"""


@pytest.fixture(scope="module")
def output() -> str:
    return render_text(Runner().run_text(TEXT), width=80)


def test_publish_tree_shows_matches_misses_and_why(output: str) -> None:
    lines = output.split("\n")
    start = lines.index('  21 │ publish logs kern.error "disk full"')
    assert lines[start + 1 : start + 8] == [
        'logs (topic)  routing key "kern.error"',
        '├── ✓ queue errors  "*.error"',
        '├── ✓ queue kern  "kern.*"',
        "└── ✗ did not match (1)",
        '    └── exchange audit  "#.critical"',
        "        └── word 2 is 'error', pattern wants 'critical'",
        "  → errors, kern",
    ]


def test_short_reasons_stay_on_the_binding_line(output: str) -> None:
    assert "    ├── queue errors  \"*.error\"  word 2 is 'critical', pattern wants 'error'" in output


def test_exchange_to_exchange_hop_nests_under_its_binding(output: str) -> None:
    assert '├── ✓ exchange audit  "#.critical"' in output
    assert "│   └── ✓ queue audit.log" in output


def test_alternate_exchange_when_nothing_matched(output: str) -> None:
    assert "├── ↪ nothing matched: alternate-exchange unrouted (fanout)" in output
    assert "│   └── ✓ queue lost" in output


def test_headers_binding_shows_its_rule_and_why_it_missed(output: str) -> None:
    assert "docs (headers)  headers format=txt" in output
    assert "queue pdf  x-match=any format=pdf type=report" in output
    assert "header 'format' is 'txt'" in output
    assert "✗ unroutable: dropped (publish with mandatory to get it back)" in output


def test_dead_letter_hops_and_time(output: str) -> None:
    assert "  ☠ dead-lettered (rejected) from work → retry" in output
    assert '    retry (direct)  routing key "work"' in output
    assert "    → work.wait" in output
    assert "⏱ wait 5s  (t = 5s)  1 expired" in output
    # work.wait has no dead-letter exchange: the message just goes
    assert "dead-lettered (expired)" not in output


def test_failures_and_errors(output: str) -> None:
    assert "✗ FAIL line" in output
    assert '  - expected: errors got "nope"' in output
    assert '  + actual:   errors got "disk full"' in output
    assert "  ✗ NOT_FOUND - no exchange 'nowhere' in vhost '/'" in output


def test_every_line_fits_80_columns(output: str) -> None:
    too_long = [line for line in output.split("\n") if len(line) > 80]
    assert too_long == []


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.route")), ids=lambda p: p.name)
def test_samples_render_within_80_columns(path: Path) -> None:
    text = render_text(Runner(base_dir=SAMPLES).run_text(path.read_text(), str(path)), width=80)
    assert "→" in text
    assert [line for line in text.split("\n") if len(line) > 80] == []
    assert not re.search(r"\bFAIL\b", text)  # a failed expectation (not PRECONDITION_FAILED)


@pytest.mark.parametrize(
    ("ms", "text"), [(0, "0s"), (500, "500ms"), (1000, "1s"), (1500, "1.5s"), (120_000, "2m"), (7_200_000, "2h")]
)
def test_format_duration(ms: int, text: str) -> None:
    assert format_duration(ms) == text


def test_missing_dead_letter_exchange_is_shown_as_dropped() -> None:
    runner = Runner()
    events = runner.run_text('queue work dlx=nowhere\npublish "" work job\nget work\nreject work\n')
    text = render_text(events, width=80)
    assert "dead-lettered (rejected) from work → nowhere" in text
    assert "exchange 'nowhere' does not exist: the message is dropped" in text
