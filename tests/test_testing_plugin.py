"""The public pytest plugin (``navro_adapters.testing``), used as a user's suite would."""

from __future__ import annotations

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

USER_TESTS = """
import json
import urllib.request

from navro_adapters import Credentials, TokenProvider


def test_sandbox_and_credentials_match(navro_sandbox, navro_credentials):
    assert isinstance(navro_credentials, Credentials)
    assert navro_credentials.token_url == navro_sandbox.token_url
    token = TokenProvider(navro_credentials).get_token()
    request = urllib.request.Request(
        navro_sandbox.base_url + "/v1/ping", headers={"Authorization": token.authorization}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response)["ok"] is True
    assert navro_sandbox.stats().token_requests == 1


def test_factory_takes_settings(navro_sandbox_factory):
    short = navro_sandbox_factory(token_ttl=5, client_secret="another-secret")
    assert TokenProvider(short.credentials()).get_token().expires_in == 5
    assert short.stats().token_requests == 1


def test_each_test_gets_a_fresh_sandbox(navro_sandbox):
    assert navro_sandbox.stats().token_requests == 0
"""


def test_fixtures_serve_a_users_test_suite(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # Load the plugin by module whether or not the installed entry point already would.
    result = pytester.runpytest_subprocess(
        "-p", "no:navro_adapters", "-p", "navro_adapters.testing", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=3)


USER_TESTS_WITHOUT_H11 = """
def test_uses_the_sandbox(navro_sandbox):
    pass


def test_needs_no_sandbox():
    import navro_adapters

    assert navro_adapters.__version__
"""


def test_without_h11_only_sandbox_fixtures_fail_naming_the_extra(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_user=USER_TESTS_WITHOUT_H11)
    # sitecustomize runs before pytest and the plugin: h11 is unimportable from the start.
    blocker = pytester.mkdir("block_h11")
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['h11'] = None\n")
    paths = [str(blocker), ROOT, os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, paths)))
    result = pytester.runpytest_subprocess(
        "-p", "no:navro_adapters", "-p", "navro_adapters.testing", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*needs h11: pip install 'navro-adapters[[]sandbox[]]'*"])
    result.stdout.no_fnmatch_line("*Traceback*")
