"""The plugin loader: entry points and ``module:attr``, every failure named, nothing extra imported.

Broken plugins are made on the fly: modules written into ``tmp_path`` (put on ``sys.path``) and
minimal ``*.dist-info`` folders beside them, which ``importlib.metadata`` finds like installed
distributions.  Module names carry a per-test prefix and are removed from ``sys.modules`` after.
"""

from __future__ import annotations

import importlib
import json
import logging
import secrets
import sys
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from handlers.sinks.local import LocalSink
from handlers.sources.smartdocumentor import SOURCES, TextDocumentSource
from receiver.cli import main
from receiver.config import Config, parse_config
from receiver.errors import ConfigError
from receiver.plugins import (
    SINK_GROUP,
    SOURCE_GROUP,
    PluginError,
    available_plugins,
    build_sinks,
    build_sources,
    load_plugin,
)
from tests.conftest import to_toml

HOOKDOCK_VERSION = metadata.version("hookdock")

GOOD_SINK = """
from typing import ClassVar
from pydantic import BaseModel, ConfigDict

class Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    bucket: str
    prefix: str = ""

class Sink:
    config_model: ClassVar[type[BaseModel]] = Config

    def __init__(self, config: Config) -> None:
        self.config = config

    async def deliver(self, event: object) -> None:
        pass
"""


@dataclass
class PluginFactory:
    """Writes plugin modules and dist-info folders into a folder on ``sys.path``."""

    root: Path
    prefix: str

    def module(self, stem: str, source: str) -> str:
        """Write ``<prefix>_<stem>.py``; returns the module name."""
        name = f"{self.prefix}_{stem}"
        (self.root / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        importlib.invalidate_caches()
        return name

    def dist(self, name: str, version: str, entry_points: Mapping[str, Mapping[str, str]]) -> None:
        """A minimal installed distribution that registers ``entry_points``."""
        folder = self.root / f"{name.replace('-', '_')}-{version}.dist-info"
        folder.mkdir()
        (folder / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
        )
        text = "".join(
            f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
            for group, eps in entry_points.items()
        )
        (folder / "entry_points.txt").write_text(text, encoding="utf-8")
        importlib.invalidate_caches()

    def imported(self) -> list[str]:
        return [name for name in sys.modules if name.startswith(self.prefix)]


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PluginFactory]:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    factory = PluginFactory(root, f"hd_plugin_{secrets.token_hex(4)}")
    yield factory
    for name in factory.imported():
        del sys.modules[name]
    importlib.invalidate_caches()


def config_with(
    tmp_path: Path, sinks: Mapping[str, Mapping[str, Any]], *, source: str | None = None
) -> Config:
    """One route (sending to every sink) over ``sinks``."""
    return parse_config(
        {
            "routes": [
                {
                    "name": "r",
                    "source": source or "smartdocumentor.text_document",
                    "auth": {"type": "none"},
                    "sinks": list(sinks),
                }
            ],
            "sinks": {name: dict(options) for name, options in sinks.items()},
        },
        base_dir=tmp_path,
        env={},
    )


def sink_error(tmp_path: Path, sinks: Mapping[str, Mapping[str, Any]]) -> str:
    with pytest.raises(ConfigError) as info:
        build_sinks(config_with(tmp_path, sinks), tmp_path)
    message = str(info.value)
    assert "Traceback" not in message
    return message


# --------------------------------------------------------------------------- what works


def test_built_in_sinks_and_sources_resolve_through_entry_points() -> None:
    local = load_plugin(SINK_GROUP, "local")
    assert local.obj is LocalSink
    assert (local.distribution, local.version) == ("hookdock", HOOKDOCK_VERSION)
    assert local.value == "handlers.sinks.local:LocalSink"
    for name, cls in SOURCES.items():
        source = load_plugin(SOURCE_GROUP, name)
        assert source.obj is cls
        assert source.distribution == "hookdock"
    names = {(p.group, p.name) for p in available_plugins()}
    assert {(SINK_GROUP, "local"), (SINK_GROUP, "s3"), (SINK_GROUP, "http")} <= names
    assert {(SOURCE_GROUP, name) for name in SOURCES} <= names


def test_build_makes_one_source_per_route_and_one_sink_per_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = config_with(
        tmp_path,
        {
            "a": {"type": "local", "root": "a", "retry": {"max_attempts": 3}, "concurrency": 2},
            "b": {"type": "local", "root": "b"},
        },
    )
    with caplog.at_level(logging.INFO, logger="hookdock"):
        sources = build_sources(config)
        sinks = build_sinks(config, tmp_path)
    assert isinstance(sources["r"], TextDocumentSource)
    assert set(sinks) == {"a", "b"}
    assert all(isinstance(s, LocalSink) for s in sinks.values())
    # hookdock's own keys (retry, concurrency) never reach the plugin's strict model, and the
    # base folder reaches its validators as context.
    assert sinks["a"].root == (tmp_path / "a").resolve()  # type: ignore[attr-defined]
    loaded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded ")]
    assert (
        "loaded sink plugin 'local' (handlers.sinks.local:LocalSink, "
        f"from hookdock {HOOKDOCK_VERSION})" in loaded
    )
    assert len(loaded) == 2  # one line per plugin, not per sink


def test_module_attr_works_for_sinks_and_sources(tmp_path: Path, plugins: PluginFactory) -> None:
    module = plugins.module(
        "mine",
        GOOD_SINK + "\nfrom handlers.sources.smartdocumentor import TranscriptSource as Source\n",
    )
    config = config_with(
        tmp_path, {"mine": {"type": f"{module}:Sink", "bucket": "b"}}, source=f"{module}:Source"
    )
    sinks = build_sinks(config, tmp_path)
    assert type(sinks["mine"]).__module__ == module
    assert sinks["mine"].config.bucket == "b"  # type: ignore[attr-defined]
    assert type(build_sources(config)["r"]).__name__ == "TranscriptSource"
    loaded = load_plugin(SINK_GROUP, f"{module}:Sink")
    assert (loaded.distribution, loaded.version) == (None, None)


def test_a_third_party_entry_point_resolves_with_its_distribution(
    tmp_path: Path, plugins: PluginFactory
) -> None:
    module = plugins.module("third", GOOD_SINK)
    plugins.dist("hookdock-third", "2.3.4", {SINK_GROUP: {"third": f"{module}:Sink"}})
    loaded = load_plugin(SINK_GROUP, "third")
    assert (loaded.distribution, loaded.version) == ("hookdock-third", "2.3.4")
    sinks = build_sinks(config_with(tmp_path, {"t": {"type": "third", "bucket": "x"}}), tmp_path)
    assert type(sinks["t"]).__module__ == module


# --------------------------------------------------------------------------- what fails


def test_unknown_name_lists_the_available_ones_without_importing_them(
    tmp_path: Path, plugins: PluginFactory
) -> None:
    module = plugins.module("never", "raise RuntimeError('must not be imported')\n")
    plugins.dist("hookdock-never", "1.0", {SINK_GROUP: {"never": f"{module}:Sink"}})
    message = sink_error(tmp_path, {"archive": {"type": "lcoal"}})
    line = "sinks.archive.type: unknown sink type 'lcoal' (available: "
    assert line in message
    available = message.split("(available: ", 1)[1].split(";", 1)[0].split(", ")
    assert {"local", "s3", "http", "never"} <= set(available)
    assert plugins.imported() == []


def test_unknown_source_lists_the_sources(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build_sources(config_with(tmp_path, {"s": {"type": "local", "root": "o"}}, source="sd"))
    message = str(info.value)
    assert "routes[0].source: unknown source 'sd' (available: " in message
    assert all(name in message for name in SOURCES)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("raise RuntimeError('boom at import')\n", "RuntimeError: boom at import"),
        ("def broken(:\n", "SyntaxError: "),
        ("import hd_no_such_dependency_at_all\n", "ModuleNotFoundError: No module named"),
        (
            "raise ImportError(\"the third sink needs aiobotocore: pip install 'hookdock[s3]'\")\n",
            "ImportError: the third sink needs aiobotocore: pip install 'hookdock[s3]'",
        ),
    ],
    ids=["runtime-error", "syntax-error", "missing-dependency", "deliberate-import-error"],
)
def test_an_import_that_raises_names_plugin_distribution_and_exception(
    tmp_path: Path, plugins: PluginFactory, body: str, expected: str
) -> None:
    module = plugins.module("broken", body)
    plugins.dist("hookdock-broken", "9.9", {SINK_GROUP: {"broken": f"{module}:Sink"}})
    message = sink_error(tmp_path, {"archive": {"type": "broken"}})
    assert (
        f"sinks.archive.type: cannot import sink plugin 'broken' from hookdock-broken 9.9 "
        f"({module}:Sink): {expected}"
    ) in message
    assert len(message.splitlines()) == 2  # the heading and one line: no traceback


def test_module_attr_import_failure(tmp_path: Path, plugins: PluginFactory) -> None:
    module = plugins.module("boom", "raise ValueError('no')\n")
    message = sink_error(tmp_path, {"a": {"type": f"{module}:Sink"}})
    assert f"sinks.a.type: cannot import sink plugin '{module}:Sink': ValueError: no" in message
    message = sink_error(tmp_path, {"a": {"type": "hd_no_such_module_anywhere:Sink"}})
    assert "ModuleNotFoundError: No module named 'hd_no_such_module_anywhere'" in message


def test_missing_attribute(tmp_path: Path, plugins: PluginFactory) -> None:
    module = plugins.module("attr", GOOD_SINK)
    plugins.dist("hookdock-attr", "0.2", {SINK_GROUP: {"attr": f"{module}:Sinc"}})
    message = sink_error(tmp_path, {"a": {"type": "attr"}, "b": {"type": f"{module}:Nope"}})
    assert (
        f"sinks.a.type: sink plugin 'attr' from hookdock-attr 0.2 ({module}:Sinc): "
        f"module '{module}' has no attribute 'Sinc'"
    ) in message
    assert (
        f"sinks.b.type: sink plugin '{module}:Nope': module '{module}' has no attribute 'Nope'"
        in message
    )


NOT_SINKS = """
from pydantic import BaseModel

class Model(BaseModel):
    pass

class NoDeliver:
    config_model = Model

class SyncDeliver:
    config_model = Model
    def deliver(self, event): ...

class NoModel:
    async def deliver(self, event): ...

class NotASource:
    def admit(self, delivery): ...

CONSTANT = 3
"""


@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        ("NoDeliver", "is not a sink: no async deliver(event) method"),
        ("SyncDeliver", "is not a sink: no async deliver(event) method"),
        ("NoModel", "is not a sink: no pydantic config_model"),
        ("CONSTANT", "is a int, not a class or factory"),
    ],
)
def test_an_object_that_is_not_a_sink(
    tmp_path: Path, plugins: PluginFactory, attr: str, expected: str
) -> None:
    module = plugins.module("shapes", NOT_SINKS)
    message = sink_error(tmp_path, {"a": {"type": f"{module}:{attr}"}})
    assert f"sinks.a.type: sink plugin '{module}:{attr}': {module}:{attr} {expected}" in message


def test_an_object_that_is_not_a_source(tmp_path: Path, plugins: PluginFactory) -> None:
    module = plugins.module("shapes", NOT_SINKS)
    config = config_with(
        tmp_path, {"s": {"type": "local", "root": "o"}}, source=f"{module}:NotASource"
    )
    with pytest.raises(ConfigError) as info:
        build_sources(config)
    assert (
        f"routes[0].source: source plugin '{module}:NotASource': {module}:NotASource "
        "is not a source: no normalize(), no content_types"
    ) in str(info.value)


def test_a_constructor_that_raises(tmp_path: Path, plugins: PluginFactory) -> None:
    module = plugins.module(
        "ctor",
        GOOD_SINK.replace("self.config = config", "raise OSError('no credentials found')"),
    )
    plugins.dist("hookdock-ctor", "1.0", {SINK_GROUP: {"ctor": f"{module}:Sink"}})
    message = sink_error(tmp_path, {"a": {"type": "ctor", "bucket": "b"}})
    assert (
        f"sinks.a: sink plugin 'ctor' ({module}:Sink, from hookdock-ctor 1.0) failed to start: "
        "OSError: no credentials found"
    ) in message


def test_bad_plugin_config_names_sink_plugin_and_key(
    tmp_path: Path, plugins: PluginFactory
) -> None:
    module = plugins.module("conf", GOOD_SINK)
    plugins.dist("hookdock-conf", "1.0", {SINK_GROUP: {"store": f"{module}:Sink"}})
    message = sink_error(
        tmp_path,
        {
            "archive": {"type": "store", "prefix": "p"},
            "files": {"type": "local", "rot": "x", "root": "o"},
        },
    )
    assert "sinks.archive.bucket: Field required (plugin store)" in message
    assert "sinks.files.rot: unknown key (check its spelling) (plugin local)" in message


def test_every_problem_is_reported_at_once(tmp_path: Path, plugins: PluginFactory) -> None:
    broken = plugins.module("broken", "raise RuntimeError('boom')\n")
    plugins.dist("hookdock-broken", "1.0", {SINK_GROUP: {"broken": f"{broken}:Sink"}})
    message = sink_error(
        tmp_path,
        {
            "a": {"type": "lcoal"},
            "b": {"type": "broken"},
            "c": {"type": "broken"},
            "d": {"type": "local"},
            "e": {"type": "json:nope"},
            "f": {"type": "local", "root": "fine"},
        },
    )
    lines = message.splitlines()
    assert lines[0] == "invalid configuration:"
    assert [line.split(":", 1)[0].strip() for line in lines[1:]] == [
        "sinks.a.type",
        "sinks.b.type",
        "sinks.c.type",
        "sinks.d.root",
        "sinks.e.type",
    ]


def test_a_broken_plugin_the_config_does_not_name_is_never_imported(
    tmp_path: Path, plugins: PluginFactory
) -> None:
    marker = tmp_path / "imported"
    module = plugins.module(
        "unnamed",
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nraise RuntimeError('broken')\n",
    )
    plugins.dist(
        "hookdock-unnamed",
        "0.0.1",
        {SINK_GROUP: {"unnamed": f"{module}:Sink"}, SOURCE_GROUP: {"unnamed": f"{module}:Src"}},
    )
    listed = [p for p in available_plugins() if p.name == "unnamed"]
    assert [(p.group, p.distribution, p.version) for p in listed] == [
        (SINK_GROUP, "hookdock-unnamed", "0.0.1"),
        (SOURCE_GROUP, "hookdock-unnamed", "0.0.1"),
    ]
    config = config_with(tmp_path, {"a": {"type": "local", "root": "o"}})
    assert set(build_sinks(config, tmp_path)) == {"a"}
    assert set(build_sources(config)) == {"r"}
    assert not marker.exists()
    assert plugins.imported() == []
    with pytest.raises(PluginError, match="RuntimeError: broken"):
        load_plugin(SINK_GROUP, "unnamed")
    assert marker.exists()  # the probe is real: importing it does leave the mark


# --------------------------------------------------------------------------- the commands


def test_plugins_command_lists_from_metadata_and_checks_on_request(
    plugins: PluginFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    module = plugins.module("listed", "raise RuntimeError('broken on purpose')\n")
    plugins.dist("hookdock-listed", "3.1", {SINK_GROUP: {"listed": f"{module}:Sink"}})
    assert main(["plugins", "--json"]) == 0
    rows = {(r["group"], r["name"]): r for r in json.loads(capsys.readouterr().out)}
    assert rows[(SINK_GROUP, "listed")] == {
        "name": "listed",
        "group": SINK_GROUP,
        "distribution": "hookdock-listed",
        "version": "3.1",
        "value": f"{module}:Sink",
    }
    assert rows[(SINK_GROUP, "local")]["distribution"] == "hookdock"
    assert plugins.imported() == []

    assert main(["plugins", "--check", "--json"]) == 1
    rows = {(r["group"], r["name"]): r for r in json.loads(capsys.readouterr().out)}
    assert rows[(SINK_GROUP, "listed")]["status"] == "error"
    assert "RuntimeError: broken on purpose" in str(rows[(SINK_GROUP, "listed")]["error"])
    assert rows[(SINK_GROUP, "local")]["status"] == "ok"

    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("listed "))
    assert line.split() == ["listed", SINK_GROUP, "hookdock-listed", "3.1", f"{module}:Sink"]


CHECKED_SINKS = """
from typing import ClassVar
from pydantic import BaseModel, ConfigDict

class Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    problems: list[str] = []
    explode: bool = False

class Sink:
    config_model: ClassVar[type[BaseModel]] = Config

    def __init__(self, config: Config) -> None:
        self.config = config

    async def deliver(self, event: object) -> None:
        pass

    async def check(self) -> list[str]:
        if self.config.explode:
            raise ConnectionError("unreachable")
        return list(self.config.problems)
"""


def run_check(tmp_path: Path, sinks: Mapping[str, Mapping[str, Any]], source: str) -> int:
    doc = {
        "journal": {"path": str(tmp_path / "j.db")},
        "routes": [{"name": "r", "source": source, "auth": {"type": "none"}, "sinks": list(sinks)}],
        "sinks": {k: dict(v) for k, v in sinks.items()},
    }
    path = tmp_path / "hookdock.toml"
    path.write_text(to_toml(doc), encoding="utf-8")
    return main(["check", "--config", str(path)])


def test_check_exit_codes_and_every_problem(
    tmp_path: Path, plugins: PluginFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    module = plugins.module("checked", CHECKED_SINKS)
    good = "smartdocumentor.text_document"
    fine = {"a": {"type": f"{module}:Sink"}, "b": {"type": "local", "root": "out"}}
    assert run_check(tmp_path, fine, good) == 0
    assert "configuration is valid: 1 routes, 2 sinks" in capsys.readouterr().out

    failing: dict[str, dict[str, Any]] = {
        "a": {"type": f"{module}:Sink", "problems": ["bucket gone", "no write access"]},
        "b": {"type": f"{module}:Sink", "explode": True},
    }
    assert run_check(tmp_path, failing, good) == 1
    err = capsys.readouterr().err
    assert "sinks.a: bucket gone" in err
    assert "sinks.a: no write access" in err
    assert "sinks.b: check() failed: ConnectionError: unreachable" in err

    invalid: dict[str, dict[str, Any]] = {
        "a": {"type": f"{module}:Sink", "problems": ["bucket gone"]},
        "b": {"type": "lcoal"},
        "c": {"type": "local"},
    }
    assert run_check(tmp_path, invalid, "sd") == 2
    err = capsys.readouterr().err
    assert "routes[0].source: unknown source 'sd'" in err
    assert "sinks.b.type: unknown sink type 'lcoal'" in err
    assert "sinks.c.root: Field required (plugin local)" in err
    assert "sinks.a: bucket gone" in err  # the sink that did build was still checked
