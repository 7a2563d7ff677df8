"""The name rule shared by workspaces and deployments.

A deployment's name is its id everywhere: URLs, Kubernetes namespaces (`sextant-<name>`), metric
labels and Elasticsearch data streams. So it is a DNS-1123 label that starts with a letter, and at
most 40 characters, leaving room for prefixes and suffixes within Kubernetes' 63.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX_LENGTH = 40

ResourceName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=NAME_MAX_LENGTH,
        pattern=NAME_PATTERN,
        description="Lower-case DNS-1123 label starting with a letter, at most 40 characters",
        examples=["etl-prod"],
    ),
]
