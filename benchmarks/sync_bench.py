"""Mirror benchmark: loopback upstream + moto S3 server; prints its figures (not a test).

    .venv/bin/python benchmarks/sync_bench.py [--files 16 --file-mib 8 --big-mib 1024 --repeat 1]

1. first sync of N files / B bytes (the `mirror-survey` flow) beside a raw httpx→S3 streaming
   copy of the same bytes with the same concurrency (boto3 `upload_fileobj` over the response);
2. a no-change re-sync: time, listing GETs, file GETs, new S3 object versions (= PUTs);
3. peak RSS growth mirroring one big file (default 1 GiB) through the flow, beside a naive
   read-whole-body-then-put baseline, each in its own subprocess.
The upstream and moto each run in a process of their own, as BLS and S3 would. The first-sync
figures also show Prefect's fixed cost of any flow run and the CPU the local Prefect server spends
recording the run, since on this machine that server shares the cores with everything else.
Targets (issue 2): no-change = 1 listing GET, 0 file GETs, 0 PUTs; first sync ≥ 0.8× raw copy;
RSS growth < 150 MiB for the 1 GiB file.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from child import Child, answer_counts  # benchmarks/ is the script's own folder, first on sys.path

MIB = 1024 * 1024
BUCKET = "quest-bench"
ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.update(
    AWS_ACCESS_KEY_ID="bench",
    AWS_SECRET_ACCESS_KEY="bench",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
)


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class _RssSampler:
    """Samples VmRSS every few ms in a thread: ru_maxrss would report import-time peaks instead."""

    def __init__(self, interval: float = 0.005):
        import threading

        self.peak = _rss_kib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_kib())
            self._stop.wait(interval)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_kib())


# --------------------------------------------------------------------------- child processes


def child_moto() -> None:
    """A moto S3 server in its own process (so the S3 side does not share our GIL)."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(server.get_host_and_port()[1], flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.stop()


def bench_surveys(files: int, file_mib: int, big_mib: int) -> dict[str, dict[str, object]]:
    """The upstream's content: the generated `pr` sample plus N bulk files, and one big file."""
    from flows.devkit.samples import sample_bls_survey
    from flows.devkit.upstream_server import GeneratedFile

    pr: dict[str, object] = dict(sample_bls_survey("pr"))
    for i in range(files):
        pr[f"pr.bulk.{i:02d}"] = GeneratedFile(file_mib * MIB, seed=i)
    return {"pr": pr, "big": {"big.bin": GeneratedFile(big_mib * MIB, seed=99)}}


def child_upstream(files: int, file_mib: int, big_mib: int) -> None:
    """The loopback BLS in its own process, like BLS itself: it must not share the flow's GIL.

    Prints its base URL, then answers `clear` / `counts` lines on stdin until stdin closes.
    """
    from flows.devkit.upstream_server import UpstreamServer

    with UpstreamServer(bench_surveys(files, file_mib, big_mib)) as up:
        print(up.bls_base_url, flush=True)
        answer_counts(up, lambda: {"listing": len(up.listing_gets("pr")), "files": len(up.file_gets("pr"))})


class _Upstream:
    """The parent's handle on `child_upstream`."""

    def __init__(self, args: argparse.Namespace):
        sizes = (str(args.files), str(args.file_mib), str(args.big_mib))
        self._child = Child(__file__, "--child-upstream", *sizes)
        self.bls_base_url = self._child.first_line

    def survey_url(self, survey: str) -> str:
        return f"{self.bls_base_url}{survey}/"

    def clear_log(self) -> None:
        self._child.ask("clear")

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = self._child.ask("counts")
        return counts

    def close(self) -> None:
        self._child.close()


def child_rss(variant: str, url: str) -> None:
    """Mirror the big file one way and report the RSS before and at peak (KiB)."""
    import httpx

    from flows.io.store import make_s3_client

    if variant == "naive":
        client = make_s3_client()
        client.head_bucket(Bucket=BUCKET)
        before = _rss_kib()
        with _RssSampler() as rss:
            body = httpx.get(url, timeout=600).content
            client.put_object(Bucket=BUCKET, Key="naive/big", Body=body)
            del body
    else:
        from flows.ingest import mirror_survey

        mirror_survey("big", dry_run=True)  # warm up Prefect, httpx and boto3 before the baseline
        before = _rss_kib()
        with _RssSampler() as rss:
            summary = mirror_survey("big")
        assert summary.added == ["big.bin"], summary
    print(json.dumps({"before_kib": before, "peak_kib": rss.peak}), flush=True)


# --------------------------------------------------------------------------- parent


class _ResponseReader(io.RawIOBase):
    """A file-like view of an httpx streaming response, for boto3's upload_fileobj."""

    def __init__(self, chunks):
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        while not self._buf:
            try:
                self._buf = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def raw_copy(urls: list[str], s3, concurrency: int, prefix: str = "raw/") -> float:
    import httpx
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, use_threads=False)
    start = time.perf_counter()
    with httpx.Client(headers={"Accept-Encoding": "identity"}, timeout=120) as http:

        def one(url: str) -> None:
            with http.stream("GET", url) as resp:
                resp.raise_for_status()
                reader = io.BufferedReader(_ResponseReader(resp.iter_bytes(MIB)), MIB)
                s3.upload_fileobj(reader, BUCKET, prefix + url.rsplit("/", 1)[1], Config=config)

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, urls))
    return time.perf_counter() - start


def _empty_flow_seconds(runs: int = 3) -> float:
    """What one flow run costs with no work in it (create, state changes, the heartbeat thread's join)."""
    from prefect import flow

    @flow(name="bench-empty")
    def empty() -> None:
        return None

    timings = []
    for _ in range(runs):
        t0 = time.perf_counter()
        empty()
        timings.append(time.perf_counter() - t0)
    return min(timings)


def _cpu_seconds(marker: str) -> float:
    """CPU time so far of the processes whose command line contains `marker` (Linux /proc)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if marker not in (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                continue
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def versions(s3, prefix: str) -> int:
    """Object versions written under `prefix`, not counting the store's own lease records."""
    from flows.io.store import is_internal_key

    count = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=BUCKET, Prefix=prefix):
        count += sum(1 for v in page.get("Versions", []) if not is_internal_key(v["Key"]))
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--file-mib", type=int, default=8)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="first syncs and raw copies to time, alternately, each into a fresh prefix; the medians "
        "are compared (the raw copy alone varies by 20%% here from run to run)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=1000.0,
        help="BLS requests/s for the flow (default 1000, its maximum: the raw copy has no limit, so "
        "the ratio compares the engines; the project's polite default is 2)",
    )
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from prefect.settings import get_current_settings
    from prefect.testing.utilities import prefect_test_harness

    from flows.io.store import make_s3_client

    moto = Child(__file__, "--child-moto", quiet=True)
    port = int(moto.first_line)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    s3 = make_s3_client()
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})

    files = bench_surveys(args.files, args.file_mib, args.big_mib)["pr"]
    total = sum(len(b) if isinstance(b, bytes) else b.size for b in files.values())
    up = _Upstream(args)

    try:
        with prefect_test_harness(server_startup_timeout=120):
            os.environ.update(
                QUEST_STORE=f"s3://{BUCKET}/mirror",
                QUEST_BLS_BASE_URL=up.bls_base_url,
                QUEST_CONCURRENCY=str(args.concurrency),
                QUEST_BLS_REQUESTS_PER_SECOND=f"{args.rate:g}",
            )
            from flows.ingest import mirror_survey

            print(
                f"upstream {up.bls_base_url}  moto S3 {endpoint}  concurrency {args.concurrency}"
                f"  BLS rate limit {args.rate:g}/s (polite floor {(len(files) + 1) / args.rate:.1f} s)"
            )
            mirror_survey("pr", dry_run=True)  # warm-up: Prefect client, imports
            up.clear_log()

            firsts: list[float] = []
            raws: list[float] = []
            cpus: list[float] = []
            urls = [up.survey_url("pr") + n for n in sorted(files)]
            for k in reversed(range(args.repeat)):  # the last into mirror/, which the re-sync reads
                os.environ["QUEST_STORE"] = f"s3://{BUCKET}/mirror" + (f"-{k}" if k else "")
                server_cpu = _cpu_seconds("prefect.server.api.server")
                t0 = time.perf_counter()
                summary = mirror_survey("pr")
                firsts.append(time.perf_counter() - t0)
                cpus.append(_cpu_seconds("prefect.server.api.server") - server_cpu)
                assert summary.bytes_transferred == total, summary
                raws.append(raw_copy(urls, s3, args.concurrency, prefix=f"raw-{k}/"))
            first, raw, server_cpu = (statistics.median(x) for x in (firsts, raws, cpus))
            mb = total / 1e6
            print(f"\n[first sync] {len(files)} files, {total / MIB:.1f} MiB")
            if args.repeat > 1:
                print(f"  {args.repeat} of each, alternately; medians below")
                print("  mirror-survey flow runs (s): " + " ".join(f"{t:.2f}" for t in firsts))
                print("  raw copies (s):              " + " ".join(f"{t:.2f}" for t in raws))
            print(f"  mirror-survey flow : {first:6.2f} s  {mb / first:7.1f} MB/s")
            print(f"  raw httpx->S3 copy : {raw:6.2f} s  {mb / raw:7.1f} MB/s")
            print(f"  ratio flow/raw throughput: {raw / first:.2f}x  (target >= 0.8x)")
            fixed = _empty_flow_seconds()
            print(
                f"  of which Prefect's fixed cost of any flow run (an empty flow): {fixed:.2f} s;"
                f" ratio without it {raw / max(first - fixed, 1e-9):.2f}x"
            )
            print(
                f"  CPU the local Prefect server spent recording that flow run: {server_cpu:.2f} s"
                f" (on {os.cpu_count()} cores shared with moto, the upstream and the flow)"
            )

            before = versions(s3, "mirror/")
            up.clear_log()
            t0 = time.perf_counter()
            again = mirror_survey("pr")
            resync = time.perf_counter() - t0
            counts = up.counts()
            print("\n[no-change re-sync]")
            print(
                f"  time {resync:.2f} s; kept {len(again.kept)}, transferred {again.bytes_transferred} bytes"
            )
            print(
                f"  listing GETs {counts['listing']}, file GETs {counts['files']}, "
                f"new S3 object versions (PUTs) {versions(s3, 'mirror/') - before}  (target 1 / 0 / 0)"
            )

            if not args.skip_rss:
                print(f"\n[peak RSS, one {args.big_mib} MiB file, each variant in its own process]")
                child_env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url)}
                for variant in ("flow", "naive"):
                    out = subprocess.run(
                        [sys.executable, __file__, "--child-rss", variant, up.survey_url("big") + "big.bin"],
                        env=child_env,
                        capture_output=True,
                        text=True,
                        timeout=1800,
                        cwd=ROOT,
                    )
                    if out.returncode != 0:
                        print(f"  {variant}: failed\n{out.stderr[-2000:]}")
                        continue
                    figures = json.loads(out.stdout.strip().splitlines()[-1])
                    growth = (figures["peak_kib"] - figures["before_kib"]) / 1024
                    name = "mirror-survey flow" if variant == "flow" else "naive read-then-put"
                    peak = figures["peak_kib"] / 1024
                    print(f"  {name:<20}: RSS growth {growth:7.1f} MiB  (peak {peak:.0f} MiB)")
                print("  target: flow growth < 150 MiB")
    finally:
        up.close()
        moto.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-moto":
        child_moto()
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-upstream":
        sys.path.insert(0, str(ROOT))
        child_upstream(*(int(a) for a in sys.argv[2:5]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-rss":
        sys.path.insert(0, str(ROOT))
        child_rss(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
