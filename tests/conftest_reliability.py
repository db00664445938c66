"""pytest plugin for the reliability, security, fuzz and soak tests.

Loaded for the whole suite by `pytest_plugins` in tests/conftest.py (the root conftest, the one
place pytest allows it). It provides the `report` fixture, records each test's outcome under its
module's REPORT_SECTION (`<section>_soak` for soak-marked tests when that section exists; modules
without one are not recorded), and writes test-output/reliability.{json,md} when the session ends
if any test recorded something. Shared helpers are in tests/reliability_helpers.py.
"""

from __future__ import annotations

import pytest

from tests.reliability_report import TITLES, Report

_REPORT = Report()


# -- pytest plugin ----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def report() -> Report:
    return _REPORT


def _section(item: pytest.Item) -> str | None:
    name = getattr(item.module, "REPORT_SECTION", None)
    if name is None:
        return None
    if item.get_closest_marker("soak") is not None and f"{name}_soak" in TITLES:
        return f"{name}_soak"
    return name


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    rep = outcome.get_result()
    section = _section(item)
    if section is None:
        return
    if rep.failed:
        _REPORT.outcome(section, item.nodeid, "failed")
    elif rep.when == "call" and rep.passed and _REPORT.outcomes.get(section, {}).get(item.nodeid) != "failed":
        _REPORT.outcome(section, item.nodeid, "passed")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = _REPORT.write()
    if path is not None:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"reliability figures: {path} and {path.with_suffix('.md')}")
