"""spec/ is normative: every measurement (a timing, a rate seen on some machine, a dated run,
a benchmark result) sits in a section marked non-normative, so an implementer can tell what
an implementation must do from what one implementation happened to measure (issue 15 item 3).

Marker convention (spec/README.md "Normative and non-normative text"):

* a heading whose text contains ``(non-normative`` or ``(informative`` marks its whole section,
  up to the next heading of the same or a higher level;
* a paragraph whose first line starts with ``Non-normative`` (optionally after ``*``, ``_``,
  ``(`` or ``>``) marks that paragraph, up to the next blank line (a fenced code block that
  starts in it runs to its closing fence);
* a table row whose first cell starts with ``Non-normative`` marks that row.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SPEC = Path(__file__).resolve().parent.parent / "spec"

_HEADING_RE = re.compile(r"^(#{1,6})\s+(.*)$")
_MARKED_HEADING_RE = re.compile(r"\((non-normative|informative)\b", re.IGNORECASE)
_MARKED_PARAGRAPH_RE = re.compile(r"^[\s>*_(]*non-normative\b", re.IGNORECASE)
_MARKED_ROW_RE = re.compile(r"^\|\s*[*_(]*non-normative\b", re.IGNORECASE)

# What a measurement looks like. Each pattern is narrow enough that normative text (constants,
# rate limits such as "128/s", durations such as "400 ms slots") does not match it.
MEASUREMENT_PATTERNS: dict[str, re.Pattern[str]] = {
    # "Measured ..." opening a sentence, "measured on/in/with/under/at ...", "Measurements";
    # not "its measured speed" (a quantity a rule uses) or "the measurement below" (a reference)
    "measured": re.compile(
        r"\bMeasured\b|\bmeasured( on| in| with| under| at \d| \d|[:;,)])|\bMeasurements\b|\bmeasured figures\b"
    ),
    # a percentile with a duration next to it, or a table column of percentiles
    "percentile": re.compile(r"\bp(50|90|95|99)\b[^|\n]{0,40}?\d[\d.,]*\s*(ms|s|us|µs)\b|^\|.*\bp(50|95|99)\b"),
    "date": re.compile(r"\b20[2-3]\d-(0[1-9]|1[0-2])\b"),
    "load average": re.compile(r"\bload (average|avg)\b|\bload ~?\d", re.IGNORECASE),
    "benchmark": re.compile(r"\bbenchmarks/"),
    "machine": re.compile(r"\b(\d+-core|\d+-CPU|dev VM|on this machine|this \d+-core)\b", re.IGNORECASE),
    "observed rate": re.compile(r"\d\s*[kM]?\s*(msgs|shreds|hashes|sha256|inserts|requests|tokens|queries)/s\b"),
    "speed-up": re.compile(r"\b\d+(\.\d+)?x (faster|slower)\b|\bratio \d"),
}


def marked_lines(lines: list[str]) -> set[int]:
    """Indices of the lines inside a marked (non-normative) section, paragraph or row."""
    marked: set[int] = set()
    section_level: int | None = None  # level of the open marked heading
    paragraph = False
    fence = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("```"):
            if paragraph or section_level is not None:
                marked.add(i)
            fence = not fence
            continue
        if fence:
            if paragraph or section_level is not None:
                marked.add(i)
            continue
        m = _HEADING_RE.match(line)
        if m:
            level = len(m.group(1))
            paragraph = False
            if section_level is not None and level <= section_level:
                section_level = None
            if section_level is None and _MARKED_HEADING_RE.search(m.group(2)):
                section_level = level
            if section_level is not None:
                marked.add(i)
            continue
        if not stripped:
            paragraph = False
        elif not paragraph and _MARKED_PARAGRAPH_RE.match(line) and not stripped.startswith("|"):
            paragraph = True
        if section_level is not None or paragraph or _MARKED_ROW_RE.match(line):
            marked.add(i)
    return marked


def unmarked_measurements(text: str) -> list[tuple[int, str, str]]:
    """(line number, pattern name, line) of every measurement outside a marked part."""
    lines = text.splitlines()
    marked = marked_lines(lines)
    out = []
    for i, line in enumerate(lines):
        if i in marked:
            continue
        for name, pat in MEASUREMENT_PATTERNS.items():
            if pat.search(line):
                out.append((i + 1, name, line.strip()[:160]))
                break
    return out


@pytest.mark.parametrize("path", sorted(SPEC.glob("*.md")), ids=lambda p: p.name)
def test_spec_holds_no_measurement_outside_marked_sections(path: Path) -> None:
    found = unmarked_measurements(path.read_text())
    assert not found, (
        f"{path.name}: measurements outside a (non-normative) section; move them to docs/ or mark "
        "them (spec/README.md):\n" + "\n".join(f"  line {n} [{name}]: {line}" for n, name, line in found)
    )


def test_the_detector_finds_measurements_and_honours_markers() -> None:
    """The check can fail: each kind of measurement is caught in normative text, and each
    marker (heading, nested heading, paragraph, table row, code fence) exempts exactly its part."""
    for sample in (
        "Measured on a quiet box: 5 ms.",
        "latency p50 120 ms",
        "A run on 2026-11-27 gave this.",
        "under load average 5",
        "see benchmarks/results/x.json",
        "| run | put p50 / p95 |",
        "on the 2-core shared machine",
        "sustains 4 M sha256/s per core",
        "the offload is 3x faster",
    ):
        assert unmarked_measurements(f"# T\n\nNormative.\n\n{sample}\n"), sample
    # normative text that looks numeric is not a measurement
    for sample in (
        "| `/ambient/repair/1` | 128 B | 256, 128/s |",
        "400 ms slots of 32 x 2,000 hashes",
        "`BAN_DURATION_S` = 600",
        "refill 64/s per peer",
        "`loop_stall_ms` (p50 / p99 / max of the stall probe's lateness over its last 1,000 samples,",
        "gives the policy its measured speed; see the measurement below",
        "    ambient-p2p bench pol [--proofs 200]",
    ):
        assert not unmarked_measurements(f"# T\n\n{sample}\n"), sample
    doc = "\n".join(
        [
            "# Spec",  # 1
            "## Rule",  # 2
            "Measured 5 ms.",  # 3: unmarked
            "## Numbers (non-normative)",  # 4
            "measured 1 ms",  # 5
            "### Sub",  # 6: still inside
            "p50 3 ms",  # 7
            "## Next rule",  # 8: ends the section
            "",
            "Non-normative: measured 2 ms",  # 10
            "and p99 4 ms on the next line",  # 11
            "",
            "p99 9 ms after the paragraph",  # 13: unmarked
            "| Non-normative note | measured 1 ms |",  # 14
            "| rule | measured 1 ms |",  # 15: unmarked
            "",
            "*Non-normative (rationale).* Why:",  # 17
            "```",
            "bench poh on 2026-11-27",  # 19
            "",
            "```",
            "measured after the fence",  # 22: same paragraph
            "",
            "## Informative stuff (informative)",  # 24
            "2026-11-27",  # 25
        ]
    )
    assert [n for n, _, _ in unmarked_measurements(doc)] == [3, 13, 15]
