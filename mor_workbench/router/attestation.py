"""TEE models: which models are "secure" (tagged `tee`) and what we can say about their providers.

The tag rule is the live proxy-router's (`internal/blockchainapi/model_tags.go`, `IsTeeModel`):
a model is a TEE model when one of its on-chain tags, lower-cased, is exactly `tee` (no
trimming; since the v7 refactor, PRs #708/#709, `tee-gpu` no longer counts and the on-chain
tag is the only source). Desktop v7.3 sells these models as "Secure".

For a TEE model the reference consumer runs `VerifyProviderQuick`
(`internal/attestation/verifier.go`) at session open and before every prompt (Phase 1):
fetch `https://<provider host>:29343/cpu` (TLS not CA-checked) for a quote (hex for Intel
TDX, base64 for AMD SEV-SNP); POST `{"quote": …}` to the SecretAI portal
(`…/api/quote-parse`, `…/quote-parse-sev` for SEV), which verifies it and returns its
registers; check that the first 32 bytes of the quote's report data equal sha256 of the
served certificate's SPKI (current VMs) or of the whole certificate (older ones); compare
RTMR3 (TDX) or the launch measurement (SEV) with cosign-signed golden values for the
provider's version (from its pong); cache sha256(quote) and the certificate digests so later
prompts only re-fetch and compare. Phase 2 (the provider checking its own backend on :21434,
snapshots on `GET /v1/models/attestation`) happens on the provider's side.

This library does not verify quotes: the signature check is delegated by the reference to a
third-party service, the golden values are fetched online, no verifier library is in our
dependencies, and the binding covers the :29343 endpoint, not the MOR-RPC channel we talk
to. So every session reports `attested=False` with the reason, and nothing here ever calls a
provider verified.
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
    """Whether a model's on-chain tags mark it as a TEE ("secure") model: a tag that is `tee`
    in any case, as the live proxy-router's `IsTeeModel` reads them."""
    return any(isinstance(t, str) and t.lower() == TEE_TAG for t in tags)


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
