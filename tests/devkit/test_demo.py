"""`quest demo` — the README's run command — runs in the suite: tables printed, files copied, all stopped."""

from __future__ import annotations

import json
import os
import re
import socket
import statistics

from flows.cli import main
from flows.devkit.samples import sample_population


def _port_open(url: str) -> bool:
    host, port = re.match(r"http://([\d.]+):(\d+)", url).groups()
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


def test_quest_demo(prefect_harness, tmp_path, capsys):
    env_before = dict(os.environ)
    assert main(["demo", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out

    assert "US population 2013-2018: mean and standard deviation" in out
    assert "Best year per series (largest sum of value over all periods)" in out
    assert "PRS30006032 Q01: value per year with that year's US population" in out
    assert "servers stopped" in out
    # The files were copied out of the emulated bucket before it stopped.
    [folder] = (tmp_path / "reports").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == [
        "best_year_by_series.csv",
        "population_by_year.svg",
        "population_stats.json",
        "series_PRS30006032_Q01.csv",
        "series_PRS30006032_Q01.svg",
        "summary.md",
    ]
    stats = json.loads((folder / "population_stats.json").read_text())
    pop = [sample_population()[y] for y in range(2013, 2019)]
    assert stats["mean"] == statistics.fmean(pop)
    assert abs(stats["std"] - statistics.stdev(pop)) < 1e-6
    assert f"{statistics.fmean(pop):,.2f}" in out

    # Everything it started is stopped and the environment is as it was.
    urls = re.findall(r"on (http://127\.0\.0\.1:\d+)", out)
    assert len(urls) == 2
    assert not any(_port_open(u) for u in urls)
    assert dict(os.environ) == env_before
    latency = re.search(r"snapshot PUT -> report objects: ([\d.]+) s", out)
    assert latency is not None
