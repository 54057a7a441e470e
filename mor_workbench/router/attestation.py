"""TEE models: which models are "secure" (tagged `tee`) and what we can say about their providers.

The live network tags models that run in a trusted execution environment `tee` (any case; the
proxy-router folded `tee-gpu` into `tee` in v7.0, and Desktop v7.3 sells them as "Secure").
For such models the reference consumer (proxy-router `internal/attestation`) verifies, at
session open and before every prompt, a quote from the provider's host: it fetches
`https://<provider host>:29343/cpu`, checks that sha256 of the TLS certificate served there
equals the first 32 bytes of the quote's report data, has the quote parsed by a third-party
portal (SecretAI), and compares the measured registers with cosign-signed golden values.

This library does not verify quotes: the parsing service and the golden values are outside
what we can check offline, and the binding covers the :29343 endpoint, not the MOR-RPC channel
we talk to. So every session reports `attested=False` with the reason, and nothing here ever
calls a provider verified.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mor_workbench.errors import ConfigurationError

__all__ = ["TEE_TAG", "Attestation", "attestation_for", "check_tee_model", "is_tee"]

TEE_TAG = "tee"
UNVERIFIED = (
    "unverified: mor-workbench does not check TDX/SEV-SNP quotes; the tee tag is the model "
    "owner's claim"
)


def is_tee(tags: Iterable[str]) -> bool:
    """Whether a model's on-chain tags mark it as a TEE ("secure") model: a `tee` tag, any case."""
    return any(isinstance(t, str) and t.strip().lower() == TEE_TAG for t in tags)


def check_tee_model(name: str, tags: Iterable[str]) -> None:
    """Raise `ConfigurationError` when a tee-only strategy is asked for a model not tagged `tee`."""
    if not is_tee(tags):
        raise ConfigurationError(
            f"model {name!r} is not tagged 'tee' and this workbench requires TEE models "
            "(require_tee=True): pick a model whose tee column is True in wb.models()"
        )


@dataclass(frozen=True)
class Attestation:
    """What is known about a session's provider: `tee` (the model is tagged tee), `attested`
    (a quote was verified: always False here) and `status`, a one-line reason."""

    tee: bool
    attested: bool
    status: str


def attestation_for(tags: Iterable[str]) -> Attestation:
    """The attestation state of a session on a model with these tags: never verified."""
    if is_tee(tags):
        return Attestation(tee=True, attested=False, status=UNVERIFIED)
    return Attestation(tee=False, attested=False, status="not a tee model")
