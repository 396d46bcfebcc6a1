"""The ``navro-adapters`` command: ``token``, ``doctor``, ``sandbox`` and ``demo``.

Every failure is one line on stderr and a non-zero exit status; no traceback, no secret.
Exit statuses: 0 success, 1 authentication or network failure, 2 bad usage or configuration,
130 interrupted, 70 an unexpected internal error.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from typing import Dict, NoReturn, Optional, Sequence

from ._version import __version__
from .credentials import Credentials
from .errors import ConfigurationError, NavroAuthError
from .provider import TokenProvider

EXIT_AUTH = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit with one line and status 2 like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"navro-adapters: error: {message}\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="navro-adapters", description="Navro API authentication tools.")
    parser.add_argument("--version", action="version", version=f"navro-adapters {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log token fetches and retries to stderr"
    )
    commands = parser.add_subparsers(dest="command", metavar="{token,doctor,sandbox,demo}")

    token = commands.add_parser(
        "token",
        help='print an access token (for curl -H "Authorization: Bearer $(navro-adapters token)")',
        description="Fetch an access token. Credentials come from NAVRO_* environment variables; "
        "flags override them. Prefer NAVRO_CLIENT_SECRET or --client-secret-file to "
        "--client-secret, which other users of the machine can see in the process list.",
    )
    _add_credential_options(token)
    token.add_argument("--timeout", type=float, default=None, help="total deadline in seconds")
    token.add_argument("--json", action="store_true", help="print the whole token response")

    doctor = commands.add_parser(
        "doctor",
        help="check a configuration step by step: credentials, proxy, DNS, TCP, TLS, token",
        description="Check each step a token request takes and say what to change when one "
        "fails. Credentials as for 'token'. Exit status 0 when every check passes, 1 when one "
        "fails. Never prints the secret or the token (only its fingerprint).",
    )
    _add_credential_options(doctor)
    doctor.add_argument(
        "--ca-file", help="trust only the CA certificates in this PEM file (as ca_file= does)"
    )
    doctor.add_argument(
        "--api-url", help="also send one authenticated GET to this URL (on the API base)"
    )
    doctor.add_argument(
        "--timeout", type=float, default=None, help="seconds for each network step (default 10)"
    )
    doctor.add_argument("--json", action="store_true", help="print the results as JSON")

    sandbox = commands.add_parser(
        "sandbox", help="run the embedded Navro sandbox until interrupted"
    )
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8300)
    sandbox.add_argument("--client-id", default="sandbox-client")
    sandbox.add_argument("--client-secret", default="sandbox-secret")
    sandbox.add_argument("--company", default="acme")
    sandbox.add_argument("--token-ttl", type=float, default=300.0)
    sandbox.add_argument(
        "--tls", action="store_true", help="serve HTTPS with a CA made for this run (printed)"
    )
    sandbox.add_argument(
        "--client-cert",
        action="store_true",
        help="with --tls: require a client certificate from that CA (mutual TLS; printed)",
    )
    sandbox.add_argument(
        "--token-port",
        action="store_true",
        help="serve the token endpoint on a second port of its own",
    )

    demo = commands.add_parser("demo", help="run every installed adapter against the sandbox")
    demo.add_argument("--requests", type=int, default=8, help="concurrent requests per adapter")
    return parser


def _add_credential_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--client-id")
    command.add_argument("--client-secret")
    command.add_argument(
        "--client-secret-file",
        help="read the secret from this file, as NAVRO_CLIENT_SECRET_FILE does (a mounted secret)",
    )
    command.add_argument("--company")
    command.add_argument("--environment", choices=("sandbox", "production"))
    command.add_argument("--base-url")
    command.add_argument("--token-url")


def _credential_environment(args: argparse.Namespace) -> Dict[str, str]:
    """The ``NAVRO_*`` variables with the flags applied over them."""
    env = dict(os.environ)
    if args.client_secret and args.client_secret_file:
        raise ConfigurationError("--client-secret-file", "give it or --client-secret, not both")
    if args.client_secret or args.client_secret_file:  # a flag overrides both variables
        env.pop("NAVRO_CLIENT_SECRET", None)
        env.pop("NAVRO_CLIENT_SECRET_FILE", None)
    overrides = {
        "NAVRO_CLIENT_ID": args.client_id,
        "NAVRO_CLIENT_SECRET": args.client_secret,
        "NAVRO_CLIENT_SECRET_FILE": args.client_secret_file,
        "NAVRO_COMPANY": args.company,
        "NAVRO_ENVIRONMENT": args.environment,
        "NAVRO_BASE_URL": args.base_url,
        "NAVRO_TOKEN_URL": args.token_url,
    }
    env.update({k: v for k, v in overrides.items() if v is not None})
    return env


def _credentials_from(args: argparse.Namespace) -> Credentials:
    credentials = Credentials.from_env(_credential_environment(args))
    credentials.client_secret  # noqa: B018 - a secret file that cannot be read fails here, first
    return credentials


def _cmd_token(args: argparse.Namespace) -> int:
    from .retry import RetryPolicy

    credentials = _credentials_from(args)
    policy = (
        RetryPolicy()
        if args.timeout is None
        else RetryPolicy(
            deadline=args.timeout, attempt_timeout=min(args.timeout, RetryPolicy().attempt_timeout)
        )
    )
    token = TokenProvider(credentials, retry_policy=policy).get_token()
    if args.json:
        print(
            json.dumps(
                {
                    "access_token": token.access_token,
                    "token_type": token.token_type,
                    "expires_in": token.expires_in,
                    "scope": token.scope,
                    "expires_at": time.strftime(
                        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(token.expires_at_wall)
                    ),
                },
                indent=2,
            )
        )
    else:
        print(token.access_token)
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import (
        DEFAULT_TIMEOUT,
        DoctorOptions,
        exit_status,
        format_report,
        report_json,
        run_doctor,
    )

    if args.timeout is not None and not 0 < args.timeout < math.inf:
        raise ConfigurationError("--timeout", "must be a number of seconds greater than 0")
    options = DoctorOptions(
        environ=_credential_environment(args),  # a flag conflict is bad usage: raised here
        ca_file=args.ca_file,
        api_url=args.api_url,
        timeout=DEFAULT_TIMEOUT if args.timeout is None else args.timeout,
    )
    results = run_doctor(options)
    if args.json:
        print(json.dumps(report_json(results), indent=2))
    else:
        print(format_report(results))
    return exit_status(results)


class _MissingExtra(Exception):
    """An optional library a command needs is not installed; the message says what to install."""


def _cmd_sandbox(args: argparse.Namespace) -> int:
    try:
        from .sandbox import Sandbox
    except ImportError as exc:
        _check_sandbox_extra(exc)
        raise

    if args.client_cert and not args.tls:
        raise ConfigurationError("--client-cert", "needs --tls")
    try:
        sandbox = Sandbox(
            client_id=args.client_id,
            client_secret=args.client_secret,
            company=args.company,
            token_ttl=args.token_ttl,
            host=args.host,
            port=args.port,
            tls=args.tls,
            require_client_cert=args.client_cert,
            token_port=args.token_port,
        )
    except ValueError as exc:
        raise ConfigurationError("sandbox", str(exc)) from None
    except ImportError as exc:
        _check_sandbox_extra(exc)
        raise
    try:
        sandbox.start()
    except OSError as exc:
        raise ConfigurationError(
            "--port", f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc})"
        ) from None
    with sandbox:
        print(f"Navro sandbox listening on {sandbox.base_url}", flush=True)
        print(f"  token endpoint: {sandbox.token_url}")
        if sandbox.ca_file is not None:
            print(f"  CA certificate: {sandbox.ca_file}  (trust it: curl --cacert, SSL_CERT_FILE)")
        if sandbox.client_cert is not None:
            print(f"  client certificate: {sandbox.client_cert[0]}")
            print(f"  client key: {sandbox.client_cert[1]}")
        print("  credentials (sandbox only):")
        print(f"    export NAVRO_CLIENT_ID={args.client_id}")
        print(f"    export NAVRO_CLIENT_SECRET={args.client_secret}")
        print(f"    export NAVRO_COMPANY={args.company}")
        print(f"    export NAVRO_BASE_URL={sandbox.base_url}")
        if sandbox.token_port is not None:
            print(f"    export NAVRO_TOKEN_URL={sandbox.token_url}")
        print("Press Ctrl+C to stop.", flush=True)
        while True:
            time.sleep(3600)


def _cmd_demo(args: argparse.Namespace) -> int:
    try:
        from .demo import format_table, run_demo
    except ImportError as exc:
        _check_sandbox_extra(exc)
        raise

    if args.requests < 1:
        raise ConfigurationError("--requests", "must be at least 1")
    print("navro-adapters demo: every installed adapter against the embedded sandbox\n", flush=True)
    rows = run_demo(requests_per_row=args.requests)
    print(format_table(rows))
    failed = [row for row in rows if not row.ok]
    print()
    if failed:
        print(f"{len(failed)} adapter(s) did not get 200 from the sandbox", file=sys.stderr)
        return EXIT_AUTH
    print("Each adapter made one token request for all its concurrent calls; the shared")
    print("provider made one for every adapter together.")
    return 0


def _check_sandbox_extra(exc: ImportError) -> None:
    """Raise the sandbox's ImportError for a missing h11 or trustme as :class:`_MissingExtra`."""
    if exc.name in ("h11", "trustme"):
        raise _MissingExtra(str(exc)) from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    handlers = {
        "token": _cmd_token,
        "doctor": _cmd_doctor,
        "sandbox": _cmd_sandbox,
        "demo": _cmd_demo,
    }
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.verbose:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
    try:
        return handlers[args.command](args)
    except ConfigurationError as exc:
        _fail(f"configuration error: {exc}")
        return EXIT_USAGE
    except _MissingExtra as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except NavroAuthError as exc:
        _fail(f"{type(exc).__name__}: {exc}")
        return EXIT_AUTH
    except KeyboardInterrupt:
        _fail("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except Exception as exc:  # the CLI promises no tracebacks
        _fail(f"internal error ({type(exc).__name__}); please report it")
        return EXIT_INTERNAL


def _fail(message: str) -> None:
    print(f"navro-adapters: {message}", file=sys.stderr, flush=True)
