"""The settings of the ``sanctions`` hook plugin (``[hooks.sanctions]``, docs/settings.md)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from payhub.api import ConfigPath, PluginSettings
from payhub.compliance.sanctions.formats import Format

ListName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class ListFiles(PluginSettings):
    """One list read from local files: ``ofac_csv`` takes the primary, aliases and addresses files in that order
    (the last two optional); ``ofac_xml`` and ``eu_xml`` one XML file."""

    name: ListName
    format: Format
    files: list[ConfigPath] = Field(min_length=1, max_length=3)

    @model_validator(mode="after")
    def _file_count(self) -> ListFiles:
        if self.format != "ofac_csv" and len(self.files) != 1:
            raise ValueError(f"format {self.format} takes exactly one file")
        return self


class SanctionsSettings(PluginSettings):
    """Lists, matching, staleness and the checks a load must pass. The database URL is not a key: payhub passes its
    own (``database.url``) when it validates these settings, so the plugin screens against the lists stored there."""

    lists: list[ListFiles] = Field(default_factory=list, max_length=50,
                                   description="The list files `payhub screening refresh` loads.")
    threshold: int = Field(90, ge=0, le=100, description="A name scoring at least this (0-100) is a hit.")
    country_mismatch_penalty: int = Field(
        0, ge=0, le=100, description="Points taken from a hit whose listed countries do not include the payee's.")
    max_list_age_days: int = Field(7, ge=1, le=366,
                                   description="A current list dated more days ago than this stops all payouts.")
    max_hits_shown: int = Field(5, ge=1, le=100, description="Hits named in a hold's reason (the best first).")
    max_skipped_share: float = Field(
        0.01, ge=0, le=1,
        description="A load whose skipped records exceed this share of the records read is refused.")
    max_drop_share: float = Field(
        0.2, ge=0, le=1,
        description="A load with more than this share fewer entries than the current version is refused "
                    "(unless `payhub screening refresh --accept-drop NAME`).")

    max_file_mb: int = Field(
        200, ge=1, le=4096,
        description="A list file larger than this many MiB is refused (not read); the list fails and its current "
                    "version stays.")

    _database_url: str | None = PrivateAttr(default=None)

    @field_validator("lists")
    @classmethod
    def _distinct(cls, value: list[ListFiles]) -> list[ListFiles]:
        names = [item.name for item in value]
        if len(set(names)) != len(names):
            raise ValueError("each list needs its own name")
        return value

    @model_validator(mode="after")
    def _database(self, info: ValidationInfo) -> SanctionsSettings:
        context: dict[str, Any] = info.context or {}
        url = context.get("database_url")
        self._database_url = url if isinstance(url, str) else None
        return self

    @property
    def max_file_bytes(self) -> int:
        """:attr:`max_file_mb` in bytes."""
        return self.max_file_mb * 1024 * 1024

    @property
    def database_url(self) -> str | None:
        """The database the lists are read from (payhub's own), given through the validation context."""
        return self._database_url
