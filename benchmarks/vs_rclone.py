"""quest beside rclone on the same work: one loopback BLS, one moto S3, one run (issue 14; not a test).

    .venv/bin/python benchmarks/vs_rclone.py [--small-files 1000 --big-mib 512 --concurrency 4]
                                             [--surveys real12,many,big] [--profile DIR]

What a user would pick instead of quest: rclone's http backend reading the BLS listing, its s3
backend writing the bucket, `rclone sync`. Both run as the user would run them, as commands:
`quest sync --survey S` (reporting to a running `prefect server`) and `rclone sync`, each at the
same concurrency, into their own prefix of one bucket. Surveys, in the real listing format:
  real12  the generated `pr` sample (12 files in BLS's formats)
  many    N small files (default 1,000)
  big     one file of B MiB (default 512)
For each: the first sync, then a no-change re-sync: wall time, throughput and the requests the
upstream saw (listings / file GETs / HEADs). rclone comes from Debian (`apt-get install rclone`);
without it the quest figures print alone. Targets (issue 14): first-sync throughput >= 1.0x
rclone's on `big` and `many`; a no-change re-sync of `real12` <= 1.5 s and of `many` <= rclone's;
1 upstream request per survey on a no-change day.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from child import Child, answer_counts  # noqa: E402
from sync_bench import BUCKET, MIB, child_moto  # noqa: E402 - the same moto child process

SURVEYS = ("real12", "many", "big")
CONTACT = "bench@example.com"


def bench_surveys(small_files: int, big_mib: int) -> dict[str, dict[str, object]]:
    from flows.devkit.samples import sample_bls_survey
    from flows.devkit.upstream_server import GeneratedFile

    real = {name.replace("pr.", "real12.", 1): body for name, body in sample_bls_survey("pr").items()}
    many: dict[str, object] = {
        f"many.part.{i:04d}": GeneratedFile(4096 + i, seed=i) for i in range(small_files)
    }
    return {"real12": real, "many": many, "big": {"big.bin": GeneratedFile(big_mib * MIB, seed=99)}}


def child_upstream(small_files: int, big_mib: int) -> None:
    """The loopback BLS in its own process; prints its base URL, then answers `clear` / `counts`."""
    from flows.devkit.upstream_server import UpstreamServer

    with UpstreamServer(bench_surveys(small_files, big_mib), require_contact=True) as up:
        print(up.bls_base_url, flush=True)
        answer_counts(up, lambda: {survey: request_counts(up.requests, survey) for survey in SURVEYS})


def request_counts(requests: list[Any], survey: str) -> dict[str, int]:
    """The upstream requests under `survey`: listing GETs, file GETs, HEADs."""
    under = [r for r in requests if f"/{survey}/" in r.path]
    return {
        "listing": sum(1 for r in under if r.method == "GET" and r.path.endswith("/")),
        "get": sum(1 for r in under if r.method == "GET" and not r.path.endswith("/")),
        "head": sum(1 for r in under if r.method == "HEAD"),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_prefect_server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("prefect")),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("prefect server did not start in 120 s")


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return seconds


def rclone_env(base_url: str, endpoint: str) -> dict[str, str]:
    """Two remotes from the environment (no config file): `bls` (http) and `s3` (moto)."""
    ambient = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # AWS_CA_BUNDLE breaks it
    return {
        **ambient,
        "RCLONE_CONFIG": "/dev/null",
        "RCLONE_CONFIG_BLS_TYPE": "http",
        "RCLONE_CONFIG_BLS_URL": base_url,
        "RCLONE_CONFIG_S3_TYPE": "s3",
        "RCLONE_CONFIG_S3_PROVIDER": "Other",
        "RCLONE_CONFIG_S3_ENDPOINT": endpoint,
        "RCLONE_CONFIG_S3_ACCESS_KEY_ID": "bench",
        "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": "bench",
        "RCLONE_CONFIG_S3_REGION": "us-east-1",
        "RCLONE_CONFIG_S3_FORCE_PATH_STYLE": "true",
    }


def quest_cmd(quest: str, survey: str, attempt: str, profile: str | None) -> list[str]:
    if not profile:
        return [quest, "sync", "--survey", survey]
    Path(profile).mkdir(parents=True, exist_ok=True)
    out = str(Path(profile, f"{survey}-{attempt}.prof"))
    return [sys.executable, "-m", "cProfile", "-o", out, quest, "sync", "--survey", survey]


def survey_bytes(surveys: dict[str, dict[str, object]], survey: str) -> int:
    return sum(len(b) if isinstance(b, bytes) else int(b.size) for b in surveys[survey].values())  # type: ignore[attr-defined]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--small-files", type=int, default=1000)
    parser.add_argument("--big-mib", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--surveys", default=",".join(SURVEYS), help="which of real12,many,big to run")
    parser.add_argument(
        "--polite",
        type=float,
        default=0.0,
        help="requests/s to the upstream for both (quest's default for BLS is 2; rclone: --tpslimit); "
        "0 (default) = unlimited for both (quest: its maximum, 1000/s), to compare the engines",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="run quest under cProfile, writing DIR/<survey>-<run>.prof (read with python -m pstats)",
    )
    args = parser.parse_args()
    chosen = [s for s in args.surveys.split(",") if s]

    rclone = shutil.which("rclone")
    if rclone is None:
        print("rclone not found: the quest figures print alone (install: apt-get install rclone)")
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    moto = Child(__file__, "--child-moto")
    endpoint = f"http://127.0.0.1:{moto.first_line}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    from flows.io.store import make_s3_client

    s3 = make_s3_client()
    s3.create_bucket(Bucket=BUCKET)
    up = Child(__file__, "--child-upstream", str(args.small_files), str(args.big_mib))
    base = up.first_line
    surveys = bench_surveys(args.small_files, args.big_mib)
    home = Path(tempfile.mkdtemp(prefix="vs-rclone-prefect-"))
    server, api_url = start_prefect_server(home)
    quest_env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "QUEST_STORE": f"s3://{BUCKET}/quest",
        "QUEST_BLS_BASE_URL": base,
        "QUEST_CONTACT": CONTACT,
        "QUEST_CONCURRENCY": str(args.concurrency),
        "QUEST_BLS_MAX_CONCURRENT_REQUESTS": str(args.concurrency),
        "QUEST_BLS_REQUESTS_PER_SECOND": str(args.polite or 1000),
    }
    quest = str(Path(sys.executable).with_name("quest"))
    print(f"upstream {base}  moto S3 {endpoint}  prefect server {api_url}  concurrency {args.concurrency}")
    print(f"rclone: {rclone or 'missing'}")
    print(
        f"upstream request rate: {f'{args.polite:g}/s for both' if args.polite else 'unlimited for both'}\n"
    )
    rows: list[tuple[str, str, float, float, dict[str, int]]] = []
    try:
        timed([quest, "sync", "--survey", "real12", "--dry-run"], quest_env)  # warm the server and caches
        for survey in chosen:
            size = survey_bytes(surveys, survey)
            rclone_cmd = [
                str(rclone), "sync", f"bls:{survey}/", f"s3:{BUCKET}/rclone/{survey}/",
                "--transfers", str(args.concurrency), "--checkers", str(args.concurrency),
                "--user-agent", f"rclone {CONTACT}",
                *(["--tpslimit", str(args.polite)] if args.polite else []),
            ]  # fmt: skip
            for attempt in ("first", "no-change"):
                tools = [("quest", quest_cmd(quest, survey, attempt, args.profile), quest_env)]
                if rclone is not None:
                    tools.append(("rclone", rclone_cmd, rclone_env(base, endpoint)))
                for tool, cmd, env in tools:
                    up.ask("clear")
                    seconds = timed(cmd, env)
                    moved = size if attempt == "first" else 0
                    rows.append((survey, f"{tool} {attempt}", seconds, moved, up.ask("counts")[survey]))
    finally:
        server.terminate()
        server.wait(timeout=30)
        up.close()
        moto.close()
        shutil.rmtree(home, ignore_errors=True)

    print(f"{'survey':<8} {'run':<17} {'wall s':>8} {'MB/s':>8}  upstream requests (listing / GET / HEAD)")
    for survey, run, seconds, size, c in rows:
        rate = f"{size / 1e6 / seconds:8.1f}" if size else f"{'':>8}"
        print(f"{survey:<8} {run:<17} {seconds:8.2f} {rate}  {c['listing']} / {c['get']} / {c['head']}")
    if rclone is not None:
        print("\nratios (quest / rclone wall time; below 1.0 quest is faster):")
        by = {(s, r): t for s, r, t, _, _ in rows}
        for survey in chosen:
            for attempt in ("first", "no-change"):
                q, r = by[(survey, f"quest {attempt}")], by[(survey, f"rclone {attempt}")]
                print(f"  {survey:<8} {attempt:<10} {q / r:6.2f}x  (quest {q:.2f} s, rclone {r:.2f} s)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-moto":
        child_moto()
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-upstream":
        child_upstream(int(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(main())
