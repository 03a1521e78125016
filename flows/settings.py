"""The one settings object. Nothing else in the project reads `os.environ` for QUEST_* values.

Built once at the edge (CLI, Lambda handler, flow entry) and passed down. AWS settings are
boto3's own (`AWS_ENDPOINT_URL`, `AWS_REGION`, the credentials chain) and are not duplicated here.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from flows import __version__
from flows.errors import QuestError
from flows.names import ENV_PREFIX, PROJECT

DEFAULT_BLS_BASE_URL = "https://download.bls.gov/pub/time.series/"
DEFAULT_POPULATION_URL = (
    "https://honolulu-api.datausa.io/tesseract/data.jsonrecords"
    "?cube=acs_yg_total_population_1&drilldowns=Year%2CNation&locale=en&measures=Population"
)
# Hosts that refuse anonymous clients: a real run against them needs QUEST_CONTACT.
CONTACT_REQUIRED_HOSTS = frozenset({"download.bls.gov", "www.bls.gov"})
NEUTRAL_CONTACT = "https://example.invalid/quest-local-run"


class ConfigError(QuestError, ValueError):
    """A setting is missing or invalid; the message says how to fix it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    store: str = Field("./data", description="s3://BUCKET[/PREFIX] or a local directory")
    bls_base_url: str = DEFAULT_BLS_BASE_URL
    bls_surveys: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["pr"])
    population_url: str = DEFAULT_POPULATION_URL
    contact: str | None = Field(None, description="email or URL put into the User-Agent")

    concurrency: int = Field(4, ge=1, le=64)
    max_delete_fraction: float = Field(0.5, ge=0.0, le=1.0)
    retries: int = Field(4, ge=0, le=20)
    retry_delay_seconds: float = Field(1.0, ge=0.0, description="base of the exponential backoff")
    retry_max_delay_seconds: float = Field(60.0, ge=0.0)
    http_timeout_seconds: float = Field(60.0, gt=0)
    # Overall deadline of one request (not only between reads): a floor, plus the size divided by
    # the slowest transfer rate we accept, so a peer trickling 1 byte/s cannot hold a run forever.
    http_deadline_floor_seconds: float = Field(60.0, gt=0, le=86400)
    http_min_rate_bytes_per_second: float = Field(256 * 1024, gt=0)
    multipart_threshold_bytes: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024)
    multipart_chunk_bytes: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024)
    # Two syncs of one store must not interleave: a lease in the store, renewed while a sync runs,
    # taken over by another sync only once it has expired (a killed sync cannot renew it).
    lease_seconds: float = Field(300.0, ge=5, le=86400)
    # What a killed sync left behind (open multipart uploads, temp files) is removed by a later
    # sync once it is older than this, so a sync still running elsewhere is never disturbed.
    stale_upload_grace_seconds: float = Field(6 * 3600.0, ge=0)
    # The real DataUSA body is about 1.3 KB; anything far larger is not a population response.
    population_max_bytes: int = Field(1024 * 1024, ge=1024, le=256 * 1024 * 1024)

    @field_validator("bls_surveys", mode="before")
    @classmethod
    def _split_surveys(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        if isinstance(value, list | tuple):
            surveys = [str(s).strip().lower() for s in value if str(s).strip()]
            for survey in surveys:
                if not survey.isalnum():
                    raise ValueError(f"survey names are letters and digits, got {survey!r}")
            if not surveys:
                raise ValueError("at least one survey is required")
            return surveys
        return value

    @field_validator("bls_base_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    def survey_url(self, survey: str) -> str:
        return f"{self.bls_base_url}{survey}/"

    def user_agent(self, url: str) -> str:
        """User-Agent naming a contact; BLS answers 403 to clients without one."""
        return f"{PROJECT}/{__version__} (+{self.contact_for(url)})"

    def contact_for(self, url: str) -> str:
        if self.contact:
            return self.contact
        host = (urlsplit(url).hostname or "").lower()
        if host in CONTACT_REQUIRED_HOSTS:
            raise ConfigError(
                f"{host} refuses clients whose User-Agent names no contact: set QUEST_CONTACT "
                "to your email or project URL, e.g. `export QUEST_CONTACT=you@example.com`"
            )
        return NEUTRAL_CONTACT
