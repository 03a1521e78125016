"""Every IAM policy document the program emits, audited by parliament (issue 28, part 2).

The documents come from the Pulumi program under its mocks (concrete ARNs), for the dev stack and a
work-pool stack with SSE-KMS, plus the worker's minimal policy the README documents. No finding may
remain: a LOW one that must stay is listed in ALLOWED by (finding, document, statement) with its
reason beside the statement that emits it, so any new finding fails.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from parliament import analyze_policy_string
from stack_policies import Emitted, emitted_policies, stack, worker_policy

from infra_pulumi import iam

ROOT = Path(__file__).resolve().parents[2]
# (issue, document name, statement Sid) of each LOW finding that stays; none today.
ALLOWED: frozenset[tuple[str, str, str]] = frozenset()


def audited(emitted: Emitted) -> dict:
    """The document parliament reads. A trust policy has no Resource (IAM refuses one: "Has
    prohibited field Resource"), while parliament requires it: the role it governs, its implicit
    resource, is filled in so parliament can check sts:AssumeRole against it."""
    document = json.loads(json.dumps(emitted.document))
    if emitted.kind == "trust":
        for stmt in document["Statement"]:
            assert "Resource" not in stmt, f"{emitted.name}: a trust policy must not name a Resource"
            stmt["Resource"] = emitted.attached_to
    return document


def _community_severities() -> dict[str, str]:
    """parliament's Python API leaves the community auditors' severity empty; their own config has it."""
    import parliament

    path = Path(parliament.__file__).parent / "community_auditors" / "config_override.yaml"
    return {issue: str(c.get("severity", "")) for issue, c in yaml.safe_load(path.read_text()).items()}


COMMUNITY_SEVERITY = _community_severities()


def findings(document: dict, trust: bool = False) -> list[tuple[str, str, str, str]]:
    """(severity, issue, Sid, detail) of every finding, community auditors included."""
    policy = analyze_policy_string(json.dumps(document), include_community_auditors=True)
    out = []
    for f in policy.findings:
        issue = str(f.issue)
        if trust and _assume_role_credentials(document, issue):
            continue
        severity = str(f.severity) or COMMUNITY_SEVERITY.get(issue, "UNKNOWN")
        out.append((severity, issue, _sid_of(document, f), json.dumps(f.detail, default=str)[:300]))
    return out


def _assume_role_credentials(document: dict, issue: str) -> bool:
    """The community CREDENTIALS_EXPOSURE auditor reads sts:AssumeRole as an identity grant that
    returns credentials. In a trust policy it is what lets the named service assume the role at all
    (that it admits only Lambda is enforced in test_policy_enforced.py), so it is dropped there,
    and only for a trust statement that allows exactly sts:AssumeRole to one AWS service."""
    if issue != "CREDENTIALS_EXPOSURE":
        return False
    return all(
        s["Effect"] == "Allow"
        and s["Action"] in ("sts:AssumeRole", ["sts:AssumeRole"])
        and set(s["Principal"]) == {"Service"}
        and str(s["Principal"]["Service"]).endswith(".amazonaws.com")
        for s in document["Statement"]
    )


def _sid_of(document: dict, finding) -> str:
    """The Sid of the statement a finding is about (parliament gives the statement or its text)."""
    where = json.dumps(getattr(finding, "location", {}) or {}, default=str) + json.dumps(
        finding.detail, default=str
    )
    sids = [s.get("Sid", "") for s in document["Statement"]]
    hits = [sid for sid in sids if sid and sid in where]
    return hits[0] if len(hits) == 1 else (sids[0] if len(sids) == 1 else "?")


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> list[Emitted]:
    tmp = tmp_path_factory.mktemp("audit")
    dev = emitted_policies(stack(tmp, prefect=False))
    prefect = stack(tmp, prefect=True, kms=True)
    return [*dev, *emitted_policies(prefect), worker_policy(prefect)]


def test_every_kind_of_policy_the_program_emits_is_audited(documents):
    names = {d.name.split(".")[0] for d in documents}
    assert {
        "quest-dev-runner-role",  # trust
        "quest-dev-runner-policy",
        "quest-dev-runner-invoke-self",
        "quest-dev-storage-tls-only",
        "quest-dev-notifications-s3-may-send",
        "quest-dev-runner-invoke-failures-policy",
        "quest-dev-runner-prefect-api-key-policy",
        "worker (README)",
    } <= names, names
    assert {d.kind for d in documents} == {"identity", "trust", "resource"}


def unallowed(emitted: Emitted) -> list[str]:
    """Each finding that fails the audit: any MEDIUM or above, and a LOW one not in ALLOWED."""
    left = []
    for severity, issue, sid, detail in findings(audited(emitted), emitted.kind == "trust"):
        if severity == "LOW" and (issue, emitted.name.split(".")[0], sid) in ALLOWED:
            continue
        left.append(f"{emitted.name} [{sid}] {severity} {issue}: {detail}")
    return left


def test_no_finding_remains_in_any_policy(documents):
    assert [line for emitted in documents for line in unallowed(emitted)] == []


@pytest.mark.parametrize(
    ("statement", "issue"),
    [
        # A bucket action on an object ARN matches nothing: the grant silently does not work.
        (iam.statement("Bad", ["s3:ListBucket"], ["arn:aws:s3:::quest-data/bls/*"]), "RESOURCE_MISMATCH"),
        (iam.statement("Bad", ["s3:GetObjects"], ["arn:aws:s3:::quest-data/bls/*"]), "UNKNOWN_ACTION"),
        (
            iam.statement(
                "Bad",
                ["s3:ListBucket"],
                ["arn:aws:s3:::quest-data"],
                condition={"StringLike": {"s3:prefixes": ["bls/*"]}},
            ),
            "UNKNOWN_CONDITION_FOR_ACTION",
        ),
    ],
)
def test_the_audit_flags_a_bad_statement(statement, issue):
    """The test can fail: parliament names what is wrong with a deliberately bad grant."""
    found = findings(iam.document(statement))
    assert issue in {i for _, i, _, _ in found}
    assert unallowed(Emitted("quest-dev-runner-policy.policy", "identity", iam.document(statement)))


def test_the_trust_exception_is_only_for_a_service_assuming_the_role():
    """A trust statement that lets anyone (or an account) assume the role is still flagged."""
    anyone = iam.document(
        {"Sid": "Anyone", "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}
    )
    anyone["Statement"][0]["Resource"] = "arn:aws:iam::123456789012:role/runner"
    assert "CREDENTIALS_EXPOSURE" in {i for _, i, _, _ in findings(anyone, trust=True)}


def test_the_readme_documents_exactly_the_workers_policy():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"The least its credentials need.*?```json\n(.*?)```", text, re.S)
    assert block, "README: the worker's minimal policy block is gone"
    documented = json.loads(block.group(1))
    expected = iam.worker_policy("<functionArn>", "<arn of invokeFailureQueueUrl>", "<log group arn>")
    assert documented == expected
