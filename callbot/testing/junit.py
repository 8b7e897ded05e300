"""JUnit XML for `callbot call --junit`: CI systems (GitHub, GitLab, Jenkins) show it per test.

One testsuite per call: a testcase "connected and ended normally", then one per expectation.
A failed testcase carries the one-line message; an expectation that could not be checked
(the call never connected) is skipped.

Every text and attribute goes through `printable`: reports quote remote strings (hang-up
reasons, errors), and a control character XML 1.0 forbids would make the file unreadable.
"""

from __future__ import annotations

import datetime
import os
import socket
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from ..safe import printable
from .expectations import failure_reason

CALL_CASE = "connected and ended normally"


def call_report_xml(report: dict[str, Any]) -> ET.Element:
    """The <testsuites> element (one <testsuite>) for a `callbot call` report."""
    peer = printable(report.get("peer", "peer"))
    classname = f"callbot.call.{peer}"
    seconds = float(report.get("seconds") or 0.0)
    suite = ET.Element(
        "testsuite",
        name=f"callbot call {peer}",
        timestamp=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        hostname=socket.gethostname(),
        time=f"{seconds:.3f}",
    )
    properties = ET.SubElement(suite, "properties")
    for key in ("call_id", "end_reason", "remote_end_reason", "peer_verified", "setup_ms",
                "seconds"):  # fmt: skip
        if report.get(key) is not None:
            ET.SubElement(properties, "property", name=key, value=printable(report[key]))
    failures = skipped = 0

    call_case = ET.SubElement(
        suite, "testcase", classname=classname, name=CALL_CASE, time=f"{seconds:.3f}"
    )
    call_ok = bool(report.get("connected")) and report.get("end_reason") in (
        "hangup",
        "remote_hangup",
    )
    if not call_ok or report.get("error"):  # e.g. connected but not verified
        failures += 1
        message = printable(failure_reason({**report, "ok": False}) or "the call failed", None)
        failure = ET.SubElement(call_case, "failure", message=message, type="call")
        failure.text = message
    else:
        ET.SubElement(call_case, "system-out").text = printable(
            f"call {report.get('call_id')} to {peer}: connected in {report.get('setup_ms')} ms, "
            f"ended {report.get('end_reason')} after {seconds} s",
            None,
        )

    for entry in report.get("expectations", []):
        case = ET.SubElement(suite, "testcase", classname=classname, name=f"expect {entry['name']}")
        case.set("time", "0")
        message = printable(entry["message"], None)
        if entry.get("measured", {}).get("skipped"):
            skipped += 1
            ET.SubElement(case, "skipped", message=message)
        elif not entry["ok"]:
            failures += 1
            failure = ET.SubElement(case, "failure", message=message, type="expectation")
            failure.text = message
        else:
            ET.SubElement(case, "system-out").text = message

    suite.set("tests", str(1 + len(report.get("expectations", []))))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    root = ET.Element("testsuites", name="callbot", tests=suite.get("tests", "0"))
    root.set("failures", str(failures))
    root.set("errors", "0")
    root.set("skipped", str(skipped))
    root.set("time", suite.get("time", "0"))
    root.append(suite)
    return root


def write_call_report(path: str | os.PathLike[str], report: dict[str, Any]) -> Path:
    """Write the JUnit XML of a `callbot call` report to `path` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree = ET.ElementTree(call_report_xml(report))
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)
    return path
