"""Sources with settings of their own, default schemes and declared headers, validated at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from handlers.event import Event, RawDelivery
from handlers.source import SourceBase
from handlers.sources.generic import GenericJsonSource
from handlers.sources.superoffice import SuperOfficeWebhookSource
from receiver.auth import HmacAuth, NoAuth, parse_auth
from receiver.config import Config, parse_config
from receiver.plugins import Plugins, load_plugins
from receiver.runtime import IngestRoute

SO_SECRET = "so-secret-for-tests"


def config(*routes: dict[str, Any]) -> Config:
    doc = {
        "routes": [{"sinks": ["a"], **r} for r in routes],
        "sinks": {"a": {"type": "local", "root": "x"}},
    }
    return parse_config(doc, base_dir=Path("."), env={})


def loaded(*routes: dict[str, Any]) -> Plugins:
    return load_plugins(config(*routes), Path("."), parts=("sources",))


SO_ROUTE = {"name": "so", "source": "superoffice.webhook", "auth": {"secret": SO_SECRET}}


def test_a_route_without_a_type_gets_its_sources_scheme() -> None:
    plugins = loaded({**SO_ROUTE, "settings": {"export_test_events": True}})
    assert plugins.problems == []
    auth = plugins.auths["so"]
    assert isinstance(auth, HmacAuth)
    assert (auth.header, auth.encoding, auth.prefix, auth.signed) == (
        "X-SuperOffice-Signature",
        "base64",
        "",
        "body",
    )
    source = plugins.sources["so"]
    assert isinstance(source, SuperOfficeWebhookSource)
    assert source.settings.export_test_events is True


def test_the_routes_keys_go_on_top_of_the_sources_scheme() -> None:
    route = {**SO_ROUTE, "auth": {"secret": SO_SECRET, "header": "X-Other-Signature"}}
    auth = loaded(route).auths["so"]
    assert isinstance(auth, HmacAuth) and auth.header == "X-Other-Signature"


def test_a_route_that_names_a_type_keeps_it() -> None:
    plugins = loaded({**SO_ROUTE, "auth": {"type": "none"}})
    assert plugins.auths["so"] == NoAuth()


def test_the_secret_never_shows_in_the_route_config() -> None:
    assert SO_SECRET not in repr(config(SO_ROUTE))


@pytest.mark.parametrize(
    ("route", "problem"),
    [
        (
            {**SO_ROUTE, "settings": {"export_tests": True}},
            "routes[0].settings.export_tests: unknown key (check its spelling)"
            " (source superoffice.webhook)",
        ),
        (
            {**SO_ROUTE, "settings": {"export_test_events": "maybe"}},
            "routes[0].settings.export_test_events: Input should be a valid boolean"
            " (source superoffice.webhook)",
        ),
        (
            {
                "name": "g",
                "source": "generic.json",
                "auth": {"type": "none"},
                "settings": {"kind_path": "data..type"},
            },
            "routes[0].settings.kind_path: must be a dotted path such as data.id"
            " (no spaces, no empty segments) (source generic.json)",
        ),
        (
            {
                "name": "g",
                "source": "generic.json",
                "auth": {"type": "none"},
                "settings": {"dedupe_header": "X-Id", "dedupe_path": "id"},
            },
            "routes[0].settings: give dedupe_header or dedupe_path, not both (source generic.json)",
        ),
        (
            {
                "name": "sd",
                "source": "smartdocumentor.text_document",
                "auth": {"type": "none"},
                "settings": {"x": 1},
            },
            "routes[0].settings: source 'smartdocumentor.text_document' takes no settings",
        ),
        (
            {"name": "sd", "source": "smartdocumentor.text_document"},
            "routes[0].auth: type missing, and the route's source has no scheme of its own"
            " (smartdocumentor.text_document)",
        ),
        (
            {"name": "so", "source": "superoffice.webhook"},
            "routes[0].auth: give secret or secrets (a list, for rotation), one of them",
        ),
    ],
)
def test_problems_name_the_route_and_the_key(route: dict[str, Any], problem: str) -> None:
    assert loaded(route).problems == [problem]


def test_every_routes_problem_is_reported_at_once() -> None:
    plugins = loaded(
        {**SO_ROUTE, "settings": {"nope": 1}},
        {
            "name": "g",
            "source": "generic.json",
            "auth": {"type": "none"},
            "settings": {"subject_path": " "},
        },
    )
    assert [p.split(":")[0] for p in plugins.problems] == [
        "routes[0].settings.nope",
        "routes[1].settings.subject_path",
    ]


class _Greedy(SourceBase):
    """Asks to keep credentials too: the host must not."""

    vendor: ClassVar[str] = "greedy"
    content_types: ClassVar[tuple[str, ...]] = ("application/json",)
    kept_headers = frozenset({"X-Trace", "authorization", "x-superoffice-signature", "cookie"})

    def admit(self, delivery: RawDelivery) -> str:
        return delivery.delivery_id

    def normalize(self, delivery: RawDelivery) -> list[Event]:
        return []


def test_kept_headers_are_the_sources_and_never_credentials() -> None:
    route = config(SO_ROUTE).routes[0]
    auth = parse_auth({"type": "hmac-sha256-base64", "secret": SO_SECRET})
    greedy = IngestRoute.make(route, _Greedy(), auth)
    assert greedy.kept_headers == {"user-agent", "x-trace"}
    so = IngestRoute.make(route, SuperOfficeWebhookSource(), auth)
    assert so.kept_headers == {
        "user-agent",
        "x-superoffice-event",
        "x-superoffice-eventid",
        "x-superoffice-retry",
        "x-hook-test",
    }


def test_the_generic_source_keeps_its_dedupe_header() -> None:
    plugins = loaded(
        {
            "name": "g",
            "source": "generic.json",
            "auth": {"type": "none"},
            "settings": {"dedupe_header": "X-GitHub-Delivery"},
        }
    )
    source = plugins.sources["g"]
    assert isinstance(source, GenericJsonSource)
    assert source.kept_headers == {"webhook-id", "webhook-timestamp", "x-github-delivery"}
