"""What a user sees for a bad setting: one line `quest <command>: error: ...`, exit 1 (2 for usage).

Most cases run `main()` in-process with the flow modules replaced by stubs that fail the test if
called, which proves a bad setting stops a command before any flow run starts; a few run the real
`quest` in a subprocess for realism.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from flows.cli import main
from flows.core.errors import QuestError

REPO = Path(__file__).resolve().parents[2]
COMMANDS = {
    "sync": ["sync"],
    "population": ["population"],
    "run": ["run"],
    "reports": ["reports"],
    "consume": [
        "consume",
        "--queue-url",
        "http://127.0.0.1:9/000000000000/q",
        "--once",
        "--wait-seconds",
        "0",
    ],
}

BAD_SETTINGS = [
    ({"QUEST_STORE": ""}, "QUEST_STORE: is empty"),
    ({"QUEST_STORE": "  "}, "QUEST_STORE: is empty"),
    ({"QUEST_STORE": "gs://bucket/x"}, "QUEST_STORE: 'gs://bucket/x' has the unsupported scheme 'gs'"),
    ({"QUEST_STORE": "S3://Bad_Bucket"}, "QUEST_STORE: S3 bucket name 'Bad_Bucket' breaks S3's naming rules"),
    ({"QUEST_STORE": "file://nas/share"}, "QUEST_STORE: 'file://nas/share' names the host 'nas'"),
    ({"QUEST_STORE": "s3:bucket"}, "QUEST_STORE: 's3:bucket' is not an S3 URL"),
    (
        {"QUEST_BLS_BASE_URL": "ftp://download.bls.gov/pub/"},
        "QUEST_BLS_BASE_URL: 'ftp://download.bls.gov/pub/'",
    ),
    (
        {"QUEST_POPULATION_URL": "honolulu-api.datausa.io/x"},
        "QUEST_POPULATION_URL: 'honolulu-api.datausa.io/x'",
    ),
    ({"QUEST_CONCURRENCY": "-1"}, "QUEST_CONCURRENCY must be between 1 and 64, got '-1'"),
    ({"QUEST_MAX_DELETE_FRACTION": "2"}, "QUEST_MAX_DELETE_FRACTION must be between 0 and 1, got '2'"),
    ({"QUEST_MAX_DELETE_FRACTION": "nan"}, "QUEST_MAX_DELETE_FRACTION must be a finite number"),
    ({"QUEST_RETRIES": "abc"}, "QUEST_RETRIES must be a whole number, got 'abc'"),
    ({"QUEST_CONTACT": "me@example.com\nX-Evil: 1"}, "QUEST_CONTACT: holds '\\n' at position 14"),
    ({"QUEST_CONTACT": "J\u00fcrgen <j@example.com>"}, "QUEST_CONTACT: holds '\\xfc' at position 1"),
    ({"QUEST_BLS_SURVEYS": "pr,c/u"}, "QUEST_BLS_SURVEYS: survey names are ASCII letters and digits"),
    ({"QUEST_BLS_SURVEYS": ","}, "QUEST_BLS_SURVEYS: at least one survey is required"),
]


def _refuse(*args, **kwargs):
    raise AssertionError("a flow started although the settings are bad")


@pytest.fixture
def no_flows(monkeypatch, tmp_path):
    """QUEST_* from the outer environment hidden; the flow modules replaced by stubs that fail if called."""
    for name in list(os.environ):
        if name.upper().startswith("QUEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("QUEST_STORE", str(tmp_path / "data"))
    monkeypatch.setenv("QUEST_CONTACT", "tests@example.com")
    monkeypatch.setenv("QUEST_BLS_BASE_URL", "http://127.0.0.1:9/pub/time.series/")  # nothing leaves loopback
    stubs = {
        "flows.ingest": ("mirror_survey", "population_snapshot", "ingest"),
        "flows.reports": ("reports", "reports_location"),
        "flows.runtime.sqs": ("consume", "RoundResult"),
    }
    for module, names in stubs.items():
        stub = types.ModuleType(module)
        for name in names:
            setattr(stub, name, _refuse)
        monkeypatch.setitem(sys.modules, module, stub)
    return stubs


def one_error_line(err: str, command: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"quest {command}: error: "), err
    return lines[0].removeprefix(f"quest {command}: error: ")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_bad_settings_are_one_line_before_any_flow(no_flows, monkeypatch, capsys, command):
    for env, expected in BAD_SETTINGS:
        with monkeypatch.context() as m:
            for name, value in env.items():
                m.setenv(name, value)
            assert main(COMMANDS[command]) == 1, env
        captured = capsys.readouterr()
        assert captured.out == ""
        assert one_error_line(captured.err, command).startswith(expected), (env, captured.err)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://download.bls.gov./pub/time.series/", "download.bls.gov"),
        ("https://DOWNLOAD.BLS.GOV:443/pub/time.series/", "download.bls.gov"),
        ("https://www.bls.gov/pub/", "www.bls.gov"),
        ("https://data.bls.gov/pub/", "data.bls.gov"),
        ("https://me@bls.gov/pub/", "bls.gov"),
    ],
)
def test_missing_contact_for_any_spelling_of_bls(no_flows, monkeypatch, capsys, url, host):
    monkeypatch.delenv("QUEST_CONTACT")
    monkeypatch.setenv("QUEST_BLS_BASE_URL", url)
    for command in ("sync", "run"):
        assert main([command]) == 1
        message = one_error_line(capsys.readouterr().err, command)
        assert message.startswith(f"{host} refuses clients") and "QUEST_CONTACT" in message


def test_population_asks_for_a_contact_when_its_url_is_bls(no_flows, monkeypatch, capsys):
    monkeypatch.delenv("QUEST_CONTACT")
    monkeypatch.setenv("QUEST_POPULATION_URL", "https://api.bls.gov/population")
    assert main(["population"]) == 1
    assert one_error_line(capsys.readouterr().err, "population").startswith("api.bls.gov refuses clients")


@pytest.mark.parametrize(
    ("surveys", "expected"),
    [
        (["p/r"], "--survey: survey names are ASCII letters and digits"),
        (["pr", "c e"], "--survey: survey names are ASCII letters and digits"),
        (["pr\u00fc"], "--survey: survey names are ASCII letters and digits"),
        ([" "], "--survey: at least one survey is required"),
    ],
)
def test_survey_option_obeys_the_settings_rules(no_flows, capsys, surveys, expected):
    argv = ["sync"]
    for survey in surveys:
        argv += ["--survey", survey]
    assert main(argv) == 1
    assert one_error_line(capsys.readouterr().err, "sync").startswith(expected)


def test_survey_option_is_normalised(no_flows, monkeypatch, capsys):
    def mirror(survey, **kwargs):
        return types.SimpleNamespace(describe=lambda: f"mirrored {survey}")

    monkeypatch.setattr(sys.modules["flows.ingest"], "mirror_survey", mirror)
    monkeypatch.setattr(importlib.import_module("flows.progress"), "cli_session", _null_session)
    assert main(["sync", "--survey", "PR", "--survey", "pr", "--survey", " ce"]) == 0
    assert capsys.readouterr().out.splitlines() == ["mirrored pr", "mirrored ce"]


class _null_session:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize(
    "argv",
    [
        ["consume", "--queue-url", "http://127.0.0.1:9/q", "--wait-seconds", "-5"],
        ["consume", "--queue-url", "http://127.0.0.1:9/q", "--wait-seconds", "21"],
        ["consume", "--queue-url", "http://127.0.0.1:9/q", "--wait-seconds", "abc"],
        ["consume", "--queue-url", "ftp://127.0.0.1/q"],
        ["consume", "--queue-url", ""],
        ["consume", "--queue-url", "queue name"],
    ],
)
def test_consume_usage_errors_exit_2(no_flows, capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("quest consume: error: argument --")


def test_expected_failure_messages_are_flattened_to_one_line(no_flows, monkeypatch, capsys):
    """A message that quotes a server or a file may hold line breaks and escapes: still one line."""

    def fail(*args, **kwargs):
        raise QuestError("GET http://x/ failed:\nHTTP 500\r\n\x1b[31mboom\u2028end")

    monkeypatch.setattr(sys.modules["flows.ingest"], "mirror_survey", fail)
    monkeypatch.setattr(importlib.import_module("flows.progress"), "cli_session", _null_session)
    assert main(["sync"]) == 1
    message = one_error_line(capsys.readouterr().err, "sync")
    assert message == "GET http://x/ failed: HTTP 500  \\x1b[31mboom end"


def _quest(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("QUEST_")}
    base["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    loopback = {"QUEST_BLS_BASE_URL": "http://127.0.0.1:9/pub/time.series/", "QUEST_CONTACT": "t@example.com"}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        env={**base, **loopback, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["sync"], {"QUEST_STORE": "file://fileserver/quest"}, "quest sync: error: QUEST_STORE: "),
        (["sync"], {"QUEST_STORE": ""}, "quest sync: error: QUEST_STORE: is empty"),
        (["run"], {"QUEST_CONCURRENCY": "-1", "QUEST_MAX_DELETE_FRACTION": "2"}, "quest run: error: QUEST_"),
        (["population"], {"QUEST_CONTACT": "a@b.c\tx"}, "quest population: error: QUEST_CONTACT: "),
        (["reports"], {"QUEST_POPULATION_URL": "file:///etc/passwd"}, "quest reports: error: QUEST_POP"),
    ],
)
def test_subprocess_bad_settings_one_line_exit_1(tmp_path, args, env, expected):
    cwd = tmp_path / "cwd"  # an empty QUEST_STORE used to mean this directory
    cwd.mkdir()
    done = _quest(args, {"QUEST_STORE": str(tmp_path / "d"), **env}, cwd)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [done.stderr.rstrip("\n")], done.stderr
    assert done.stderr.startswith(expected), done.stderr
    assert not (tmp_path / "d").exists() and not any(cwd.iterdir())
