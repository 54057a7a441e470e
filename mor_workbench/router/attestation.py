"""TEE models: which models are "secure" (tagged `tee`) and whether their providers attest.

The tag rule is the live proxy-router's (`internal/blockchainapi/model_tags.go`, `IsTeeModel`):
a model is a TEE model when one of its on-chain tags, lower-cased, is exactly `tee` (no
trimming; since the v7 refactor, PRs #708/#709, `tee-gpu` no longer counts and the on-chain
tag is the only source). Desktop v7.3 sells these models as "Secure".

For a TEE model the reference consumer runs `VerifyProviderQuick`
(`proxy-router/internal/attestation/verifier.go` of MorpheusAIs/Morpheus-Lumerin-Node, read
at `main` 04e6c425 and `dev` 1c2896fe) at session open and before every prompt (Phase 1):

1. fetch `https://<provider host>:29343/cpu`, TLS not CA-checked (`InsecureSkipVerify`: the
   certificate is checked through the quote instead); the trimmed body is the quote, hex for
   Intel TDX, base64 for AMD SEV-SNP (dev, PR #718);
2. have the quote verified (the reference POSTs it to the SecretAI portal, `…/quote-parse`,
   `…/quote-parse-sev` for SEV, and reads back its registers);
3. check that the first 32 bytes of the report data equal sha256 of the served certificate's
   SubjectPublicKeyInfo (current SecretVMs) or of the whole DER certificate (older ones;
   PRs #675, #805);
4. compare RTMR3 (TDX) or the launch measurement (SEV) with the golden value for the
   provider's version (from its pong), read from a cosign-signed in-toto attestation on
   `ghcr.io/morpheusais/morpheus-lumerin-node-tee:<version>` (`golden.go`,
   `measurements.intel_tdx.rtmr3`);
5. cache sha256 of the served quote text and the certificate, so later prompts re-fetch and
   compare, and verify in full again when either changed.

`TeeVerifier` does steps 1, 3, 4 and 5 as the reference does. Step 2 is done offline with
Intel's own chain instead of the portal: `dcap-qvl` checks the quote's signature chain up to
Intel's SGX root CA against collateral (fetched from Intel's PCS by default), and the report
data and RTMR3 are read from the verified report. A TCB status of `UpToDate` or
`SWHardeningNeeded` is accepted (Intel's definitions: the platform's TCB is current; the
second only asks for software mitigations); any other is refused with the status.

What public material does not let us confirm, so a provider is never called verified on it:
- the golden values' source: verifying the Sigstore bundle on GHCR needs the network and a
  Sigstore verifier this library does not have, so RTMR3 is compared only with values the
  caller pins (`golden_rtmr3`, by provider version, e.g. read with `cosign
  verify-attestation`); without one the status says the quote is genuine and bound but
  RTMR3 was not compared;
- AMD SEV-SNP: no verifier for its report (AMD's VCEK chain) is in our dependencies and the
  portal's SEV response is not public, so a SEV quote is reported unverified;
- the portal's own checks and answer (its response shape is known only from the reference's
  parser), which we do not use.
So on the live network a provider attests only once its golden RTMR3 is pinned, e.g.
`wb.router.tee_verifier = TeeVerifier(golden_rtmr3={"<version from its pong>": "<hex>"})`;
each full check (a new quote or certificate) fetches collateral from Intel's PCS.
The binding covers the :29343 endpoint on the provider's host, not the MOR-RPC channel we
talk to (as in the reference). Phase 2 (the provider checking its own backend,
`GET /v1/models/attestation`) happens on the provider's side.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import dcap_qvl
import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mor_workbench.errors import AttestationUnverified, ConfigurationError

__all__ = [
    "ATTESTATION_PORT",
    "TEE_TAG",
    "Attestation",
    "AttestationUnverified",
    "ServedQuote",
    "TeeVerifier",
    "VerifiedQuote",
    "attestation_for",
    "attestation_url",
    "certificate_binding",
    "check_tee_model",
    "fetch_quote",
    "intel_collateral",
    "is_tee",
    "verify_tdx_quote",
]

TEE_TAG = "tee"
ATTESTATION_PORT = 29343  # SecretVM's attestation server (`AttestationPort` in verifier.go)
ACCEPTED_TCB = ("UpToDate", "SWHardeningNeeded")
GOLDEN_IMAGE = "ghcr.io/morpheusais/morpheus-lumerin-node-tee"
MAX_QUOTE_TEXT = 1 << 20  # bytes; a TDX quote is about 10 kB of hex
NOT_CHECKED = "unverified: not checked yet (a tee model's provider is checked at open)"

CollateralSource = Callable[[bytes], Awaitable[dcap_qvl.QuoteCollateralV3]]


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
    (its quote verified, is bound to the certificate it was served with, and its RTMR3
    equals a golden value) and `status`, a one-line reason. The evidence, when a quote was
    read: `quote_sha256` (hex, of the served text, as the reference caches it), `tcb_status`
    (Intel's, from the verified quote), `binding` ("spki" or "certificate": what the report
    data's first 32 bytes hash), `rtmr3` (hex) and `version` (the provider's, from its pong,
    whose golden value RTMR3 is compared with)."""

    tee: bool
    attested: bool
    status: str
    quote_sha256: str | None = None
    tcb_status: str | None = None
    binding: str | None = None
    rtmr3: str | None = None
    version: str | None = None


def attestation_for(tags: Iterable[str]) -> Attestation:
    """The attestation state of a session on a model with these tags before any check: a tee
    model's provider is not verified until `TeeVerifier.check` says so."""
    if is_tee(tags):
        return Attestation(tee=True, attested=False, status=NOT_CHECKED)
    return Attestation(tee=False, attested=False, status="not a tee model")


def attestation_url(endpoint: str, port: int = ATTESTATION_PORT) -> str:
    """The quote's URL for a provider's on-chain endpoint (`host:port` or a URL): its host on
    `port`, path `/cpu` (`DeriveAttestationURL` in verifier.go)."""
    host = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}").hostname or endpoint
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"https://{host}:{port}/cpu"


@dataclass(frozen=True)
class ServedQuote:
    """A quote as an attestation endpoint served it: `text` (the trimmed body) and
    `certificate` (DER of the TLS certificate the endpoint presented)."""

    text: str
    certificate: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


async def fetch_quote(url: str, *, timeout: float = 10.0) -> ServedQuote:
    """GET `url` over TLS without checking the certificate against any CA (it is checked
    through the quote's report data), keeping the certificate the server presented.
    `timeout` is in seconds. Raises `AttestationUnverified` with the reason when there is no
    quote to read."""
    try:
        async with (
            httpx.AsyncClient(verify=False, timeout=timeout) as client,
            client.stream("GET", url) as response,
        ):
            stream = response.extensions.get("network_stream")
            tls = stream.get_extra_info("ssl_object") if stream is not None else None
            certificate = tls.getpeercert(binary_form=True) if tls is not None else None
            if response.status_code != 200:
                raise AttestationUnverified(f"{url} answered HTTP {response.status_code}")
            body = bytearray()
            async for part in response.aiter_bytes():
                body += part
                if len(body) > MAX_QUOTE_TEXT:
                    raise AttestationUnverified(f"{url} served more than {MAX_QUOTE_TEXT} bytes")
    except httpx.HTTPError as exc:
        raise AttestationUnverified(f"no quote at {url} ({type(exc).__name__}: {exc})") from None
    if not certificate:
        raise AttestationUnverified(f"{url} presented no TLS certificate")
    text = body.decode("ascii", "replace").strip()
    if not text:
        raise AttestationUnverified(f"{url} served an empty quote")
    return ServedQuote(text, certificate)


def certificate_binding(report_data: bytes, certificate_der: bytes) -> str | None:
    """What the first 32 bytes of a quote's report data bind: "spki" when they are sha256 of
    the certificate's DER SubjectPublicKeyInfo (current SecretVMs), "certificate" when they
    are sha256 of the whole DER certificate (older ones), None when neither (PRs #675,
    #805 of Morpheus-Lumerin-Node). A certificate that cannot be parsed binds nothing."""
    bound = report_data[:32]
    try:
        spki = (
            x509.load_der_x509_certificate(certificate_der)
            .public_key()
            .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        )
    except ValueError:
        return None
    if len(bound) == 32 and hmac.compare_digest(bound, hashlib.sha256(spki).digest()):
        return "spki"
    if len(bound) == 32 and hmac.compare_digest(bound, hashlib.sha256(certificate_der).digest()):
        return "certificate"
    return None


@dataclass(frozen=True)
class VerifiedQuote:
    """The parts of a verified TDX quote the check uses, read from dcap-qvl's verified
    report: Intel's TCB status and advisories, the report data and RTMR3."""

    tcb_status: str
    advisory_ids: tuple[str, ...]
    report_data: bytes
    rtmr3: bytes


def verify_tdx_quote(
    raw_quote: bytes, collateral: dcap_qvl.QuoteCollateralV3, now: int
) -> VerifiedQuote:
    """Verify an Intel TDX quote's signature chain up to Intel's SGX root CA with `collateral`
    at `now` (Unix seconds), with dcap-qvl. Raises `AttestationUnverified` with dcap-qvl's
    reason."""
    try:
        verified = dcap_qvl.verify(raw_quote, collateral, now)
    except ValueError as exc:
        raise AttestationUnverified(f"the TDX quote does not verify: {exc}") from None
    body = dcap_qvl.parse_quote(raw_quote).report  # the bytes just verified
    if isinstance(body, dcap_qvl.SgxEnclaveReport):  # else TD10, TD15 or TD15ex
        raise AttestationUnverified("the verified quote is not an Intel TDX quote")
    return VerifiedQuote(
        verified.status, tuple(verified.advisory_ids), body.report_data, body.rt_mr3
    )


async def intel_collateral(raw_quote: bytes) -> dcap_qvl.QuoteCollateralV3:
    """The quote's collateral from Intel's Provisioning Certification Service (network)."""
    return await dcap_qvl.get_collateral_from_pcs(raw_quote)


def _tdx_bytes(text: str) -> bytes:
    """The raw quote of a served text: hex (optionally 0x-prefixed) of an Intel TDX quote."""
    try:
        raw = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        try:
            binascii.a2b_base64(text, strict_mode=True)
        except binascii.Error:
            raise AttestationUnverified(
                "the served quote is neither hex (TDX) nor base64 (SEV)"
            ) from None
        raise AttestationUnverified(
            "an AMD SEV-SNP quote (base64): mor-workbench does not verify SEV-SNP reports"
        ) from None
    try:
        quote = dcap_qvl.parse_quote(raw)
    except ValueError as exc:
        raise AttestationUnverified(f"the served hex is not a TDX quote ({exc})") from None
    if not quote.is_tdx():
        raise AttestationUnverified(f"the served quote is {quote.quote_type()}, not Intel TDX")
    return raw


@dataclass(frozen=True)
class _Checked:
    quote_sha256: str
    certificate: bytes
    version: str
    attestation: Attestation


class TeeVerifier:
    """Checks a TEE provider as the reference consumer's `VerifyProviderQuick` does (see the
    module docstring): quote from `https://<host>:<port>/cpu`, signature chain, binding to
    the served certificate, RTMR3 against `golden_rtmr3[version]` (hex, pinned by the
    caller), results cached per attestation URL by sha256 of the quote and the certificate.

    `collateral` fetches a quote's collateral (Intel's PCS by default; tests pass recorded
    collateral), `clock` gives the verification time in Unix seconds, `port` is the
    attestation port (29343 on the live network), `timeout` bounds the fetch (s)."""

    def __init__(
        self,
        *,
        golden_rtmr3: Mapping[str, str] | None = None,
        collateral: CollateralSource = intel_collateral,
        clock: Callable[[], float] = time.time,
        port: int = ATTESTATION_PORT,
        timeout: float = 10.0,
    ) -> None:
        self.golden_rtmr3 = {
            v: g.lower().removeprefix("0x") for v, g in (golden_rtmr3 or {}).items()
        }
        self.collateral = collateral
        self.clock = clock
        self.port = port
        self.timeout = timeout
        self._checked: dict[str, _Checked] = {}  # by attestation URL

    async def check(self, endpoint: str, version: str) -> Attestation:
        """The attestation of the provider at `endpoint` (its on-chain `host:port`) whose pong
        reported `version`: never raises; a failed step gives `attested=False` and why."""
        url = attestation_url(endpoint, self.port)
        try:
            served = await fetch_quote(url, timeout=self.timeout)
        except AttestationUnverified as exc:
            return Attestation(True, False, f"unverified: {exc}", version=version)
        known = self._checked.get(url)
        if known and (known.quote_sha256, known.certificate, known.version) == (
            served.sha256,
            served.certificate,
            version,
        ):
            return known.attestation
        try:
            attestation = await self._verify(url, served, version)
        except AttestationUnverified as exc:
            return Attestation(
                True, False, f"unverified: {exc}", quote_sha256=served.sha256, version=version
            )
        self._checked[url] = _Checked(served.sha256, served.certificate, version, attestation)
        return attestation

    async def _verify(self, url: str, served: ServedQuote, version: str) -> Attestation:
        raw = _tdx_bytes(served.text)
        try:
            collateral = await self.collateral(raw)
        except (ValueError, RuntimeError, OSError) as exc:
            raise AttestationUnverified(f"no collateral for the quote ({exc})") from None
        quote = verify_tdx_quote(raw, collateral, int(self.clock()))
        return self.judge(quote, served, url, version)

    def judge(
        self, quote: VerifiedQuote, served: ServedQuote, url: str, version: str
    ) -> Attestation:
        """The attestation of a quote that verified: its TCB status accepted, its report data
        bound to the certificate `served` came with (from `url`), its RTMR3 equal to the
        golden value for `version`; each step refused says why."""
        evidence = {
            "quote_sha256": served.sha256,
            "tcb_status": quote.tcb_status,
            "version": version,
        }
        if quote.tcb_status not in ACCEPTED_TCB:
            advisories = ", ".join(quote.advisory_ids) or "none"
            return Attestation(
                True,
                False,
                f"unverified: the TDX quote's TCB status is {quote.tcb_status} "
                f"(advisories: {advisories}); accepted: {', '.join(ACCEPTED_TCB)}",
                **evidence,
            )
        binding = certificate_binding(quote.report_data, served.certificate)
        if binding is None:
            return Attestation(
                True,
                False,
                "unverified: the TDX quote verifies but its report data is not bound to the "
                f"certificate {url} served (neither sha256 of its SPKI nor of the "
                "certificate): a quote replayed from another machine looks like this",
                **evidence,
            )
        rtmr3 = quote.rtmr3.hex()
        evidence.update(binding=binding, rtmr3=rtmr3)
        golden = self.golden_rtmr3.get(version)
        if golden is None:
            return Attestation(
                True,
                False,
                f"unverified: the TDX quote verifies and is bound to the {url} certificate "
                f"({binding}), but RTMR3 was not compared: no golden value for provider "
                f"version {version!r} (the reference reads cosign-signed values from "
                f"{GOLDEN_IMAGE}:<version>; pin one with golden_rtmr3)",
                **evidence,
            )
        if not hmac.compare_digest(golden, rtmr3):
            return Attestation(
                True,
                False,
                f"unverified: RTMR3 {rtmr3} differs from the golden value {golden} for "
                f"version {version!r}",
                **evidence,
            )
        return Attestation(
            True,
            True,
            f"verified: TDX quote (TCB {quote.tcb_status}) bound to the {url} certificate "
            f"({binding}), RTMR3 equals the golden value for version {version!r}",
            **evidence,
        )
