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


USER_TLS_TESTS = """
import json
import ssl
import urllib.error
import urllib.request

import pytest

from navro_adapters import TokenProvider
from navro_adapters.transport import UrllibTransport


def ping(sandbox, token, context):
    request = urllib.request.Request(
        sandbox.base_url + "/v1/ping", headers={"Authorization": token.authorization}
    )
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return json.load(response)


def test_tls_sandbox_is_https_trusting_its_ca(navro_tls_sandbox):
    assert navro_tls_sandbox.base_url.startswith("https://127.0.0.1:")
    transport = UrllibTransport(ca_file=navro_tls_sandbox.ca_file)
    token = TokenProvider(navro_tls_sandbox.credentials(), transport=transport).get_token()
    context = ssl.create_default_context(cafile=navro_tls_sandbox.ca_file)
    assert ping(navro_tls_sandbox, token, context)["ok"] is True
    with pytest.raises(urllib.error.URLError) as untrusted:
        ping(navro_tls_sandbox, token, ssl.create_default_context())
    assert isinstance(untrusted.value.reason, ssl.SSLCertVerificationError)


def test_mtls_sandbox_needs_its_client_certificate(navro_mtls_sandbox):
    cert_file, key_file = navro_mtls_sandbox.client_cert
    context = ssl.create_default_context(cafile=navro_mtls_sandbox.ca_file)
    context.load_cert_chain(cert_file, key_file)
    transport = UrllibTransport(ssl_context=context)
    token = TokenProvider(navro_mtls_sandbox.credentials(), transport=transport).get_token()
    assert ping(navro_mtls_sandbox, token, context)["client_id"] == "sandbox-client"
    assert navro_mtls_sandbox.stats().tokens_issued == 1


def test_factory_combines_the_options(navro_sandbox_factory):
    sandbox = navro_sandbox_factory(tls=True, token_port=True)
    assert sandbox.token_url.startswith(f"https://127.0.0.1:{sandbox.token_port}/")
"""


def test_tls_fixtures_serve_a_users_test_suite(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("trustme")
    pytester.makepyfile(test_user_tls=USER_TLS_TESTS)
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = pytester.runpytest_subprocess(
        "-p", "no:navro_adapters", "-p", "navro_adapters.testing", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=3)


USER_TESTS_WITHOUT_TRUSTME = """
def test_uses_https(navro_tls_sandbox):
    pass


def test_plain_http_still_works(navro_sandbox):
    assert navro_sandbox.base_url.startswith("http://")
"""


def test_without_trustme_only_tls_fixtures_fail_naming_the_extra(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_user=USER_TESTS_WITHOUT_TRUSTME)
    blocker = pytester.mkdir("block_trustme")
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['trustme'] = None\n")
    paths = [str(blocker), ROOT, os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, paths)))
    result = pytester.runpytest_subprocess(
        "-p", "no:navro_adapters", "-p", "navro_adapters.testing", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*needs trustme: pip install 'navro-adapters[[]sandbox[]]'*"])
    result.stdout.no_fnmatch_line("*Traceback*")


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
