from __future__ import annotations

import pickle
import pprint

import pytest

from navro_adapters import ConfigurationError, Credentials, NavroAuthError, OriginScope

SECRET = "s3cr3t-value-never-logged"


def make(**kwargs: object) -> Credentials:
    args = {"client_id": "client-1", "client_secret": SECRET, "company": "acme"}
    args.update(kwargs)
    return Credentials(**args)  # type: ignore[arg-type]


def test_environments_and_token_url() -> None:
    assert make().base_url == "https://api.sandbox.navro.cloud"
    assert make().token_url == "https://api.sandbox.navro.cloud/authentication/acme/token"
    prod = make(environment="production")
    assert prod.token_url == "https://api.navro.cloud/authentication/acme/token"
    assert make(environment=" Production ").environment == "production"


def test_company_is_one_percent_encoded_path_segment() -> None:
    creds = make(company="Acme Ltd/../x?y#z")
    assert creds.token_url.endswith("/authentication/Acme%20Ltd%2F..%2Fx%3Fy%23z/token")


def test_token_url_overrides_but_base_url_stays() -> None:
    creds = make(token_url="http://127.0.0.1:9000/custom/token/")
    assert creds.token_url == "http://127.0.0.1:9000/custom/token"
    assert creds.base_url == "https://api.sandbox.navro.cloud"
    creds = make(base_url="https://gateway.example.com/navro/")
    assert creds.base_url == "https://gateway.example.com/navro"
    assert creds.token_url == "https://gateway.example.com/navro/authentication/acme/token"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"client_id": ""}, "client_id"),
        ({"client_id": "   "}, "client_id"),
        ({"client_id": "a:b"}, "client_id"),
        ({"client_id": 42}, "client_id"),
        ({"client_secret": ""}, "client_secret"),
        ({"client_secret": " \t"}, "client_secret"),
        ({"client_secret": "bad\nsecret"}, "client_secret"),
        ({"company": ""}, "company"),
        ({"company": "  "}, "company"),
        ({"environment": "staging"}, "environment"),
        ({"base_url": "ftp://example.com"}, "base_url"),
        ({"base_url": "not a url"}, "base_url"),
        ({"base_url": "https://"}, "base_url"),
        ({"base_url": "https://user:pw@example.com"}, "base_url"),
        ({"base_url": "https://example.com:99999"}, "base_url"),
        ({"base_url": "https://example.com/?q=1"}, "base_url"),
        ({"base_url": "http://api.navro.cloud"}, "base_url"),
        ({"token_url": "http://10.0.0.5/token"}, "token_url"),
        ({"token_url": "http://example.com/token"}, "token_url"),
    ],
)
def test_bad_input_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        make(**kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(field)
    assert isinstance(info.value, NavroAuthError)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:9", "http://127.5.6.7"]
)
def test_loopback_http_is_allowed(url: str) -> None:
    assert make(base_url=url).base_url == url


def test_secret_never_shown() -> None:
    creds = make()
    for text in (
        repr(creds),
        str(creds),
        pprint.pformat(
            vars(creds)
            if hasattr(creds, "__dict__")
            else {
                name: getattr(creds, name)
                for name in ("_secret", "client_id", "company", "token_url")
            }
        ),
    ):
        assert SECRET not in text
    assert "********" in repr(creds)
    assert repr(creds._secret) == "Secret('********')"
    assert creds.client_secret == SECRET


def test_pickle_round_trip_keeps_the_secret_for_worker_processes() -> None:
    creds = make()
    clone = pickle.loads(pickle.dumps(creds))
    assert clone == creds and clone.client_secret == SECRET
    assert hash(clone) == hash(creds)


def test_cache_key_separates_identities_and_hides_the_secret() -> None:
    a, b = make(), make(client_secret="another-secret")
    assert a.cache_key != b.cache_key
    assert a.cache_key == make().cache_key
    assert SECRET not in a.cache_key
    assert make(company="other").cache_key != a.cache_key


def test_from_env() -> None:
    env = {
        "NAVRO_CLIENT_ID": "cid",
        "NAVRO_CLIENT_SECRET": SECRET,
        "NAVRO_COMPANY": "acme",
        "NAVRO_ENVIRONMENT": "production",
    }
    creds = Credentials.from_env(env)
    assert creds.client_id == "cid" and creds.environment == "production"
    creds = Credentials.from_env(
        {**env, "NAVRO_TOKEN_URL": "http://127.0.0.1:1/t", "NAVRO_BASE_URL": "http://127.0.0.1:1"}
    )
    assert creds.token_url == "http://127.0.0.1:1/t" and creds.base_url == "http://127.0.0.1:1"
    for missing in ("NAVRO_CLIENT_ID", "NAVRO_CLIENT_SECRET", "NAVRO_COMPANY"):
        partial = {k: v for k, v in env.items() if k != missing}
        with pytest.raises(ConfigurationError) as info:
            Credentials.from_env(partial)
        assert info.value.field == missing
    with pytest.raises(ConfigurationError) as info:
        Credentials.from_env({**env, "NAVRO_ENVIRONMENT": "moon"})
    assert info.value.field == "environment" and SECRET not in str(info.value)


def test_origin_scope() -> None:
    scope = OriginScope("https://api.navro.cloud", ["https://files.navro.cloud:8443"])
    assert scope.allows("https://api.navro.cloud/v1/x")
    assert scope.allows("https://API.navro.cloud:443/v1/x")
    assert scope.allows("https://files.navro.cloud:8443/a")
    assert not scope.allows("http://api.navro.cloud/v1/x")
    assert not scope.allows("https://api.navro.cloud:444/v1/x")
    assert not scope.allows("https://api.navro.cloud.evil.com/")
    assert not scope.allows("https://evil.com/?https://api.navro.cloud")
    assert not scope.allows("https://api.navro.cloud:notaport/")
    with pytest.raises(ConfigurationError):
        OriginScope("https://api.navro.cloud", ["http://plain.example.com"])
