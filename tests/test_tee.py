"""TEE models (issue 12 §2): a `tee` column for models tagged `tee` (any case, as the live
network tags its "secure" models), a tee-only strategy (`require_tee=True` or
`strategy={"tee": True}`) that refuses any other model before a transaction, and the provider
of a tee model checked as the reference consumer checks it (`VerifyProviderQuick`): its TDX
quote fetched over TLS from its attestation port, verified offline with dcap-qvl against
recorded collateral (tests/data/tee, at a fixed time inside the collateral's validity), bound
to the certificate it was served with, RTMR3 compared with a golden value. A genuine quote
cannot be bound to a certificate of ours (only the TEE holds the key), so every provider here
is unverified, with the reason; the binding and the later steps are tested with constructed
report data. No network beyond 127.0.0.1."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import dcap_qvl
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from eth_utils import keccak

import mor_workbench as mor
from mor_workbench.chain.client import Chain
from mor_workbench.chain.deploy import MOR
from mor_workbench.chain.keys import Signer
from mor_workbench.chain.listings import listing
from mor_workbench.chain.rpc import RpcClient
from mor_workbench.provider.config import ModelConfig
from mor_workbench.provider.server import ProviderServer
from mor_workbench.router.attestation import (
    AttestationUnverified,
    ServedQuote,
    TeeVerifier,
    VerifiedQuote,
    attestation_for,
    attestation_url,
    certificate_binding,
    is_tee,
    verify_tdx_quote,
)
from mor_workbench.sandbox.model_server import ModelServer

SECURE = "secure-llm"  # the extra model this file registers, tagged "TEE" (upper case)
DATA = Path(__file__).parent / "data" / "tee"
QUOTE = (DATA / "tdx_quote").read_bytes()  # a genuine Intel TDX quote (dcap-qvl's sample)
# inside the recorded collateral's validity (TCB info and QE identity: 2025-06-19 to 07-19)
IN_VALIDITY = int(datetime.datetime(2025, 7, 1, tzinfo=datetime.UTC).timestamp())
REPORT_DATA_AT = 48 + 520  # header, then the TD report's fields before its report data


def _collateral() -> dcap_qvl.QuoteCollateralV3:
    return dcap_qvl.QuoteCollateralV3.from_json((DATA / "tdx_quote_collateral.json").read_text())


def _tampered(quote: bytes) -> bytes:
    changed = bytearray(quote)
    changed[REPORT_DATA_AT] ^= 0x01  # one bit of the report data
    return bytes(changed)


def _certificate(name: str = "127.0.0.1") -> tuple[bytes, bytes, bytes]:
    """A self-signed certificate: (DER, PEM, its key as PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return (
        cert.public_bytes(serialization.Encoding.DER),
        cert.public_bytes(serialization.Encoding.PEM),
        key_pem,
    )


def _spki(der: bytes) -> bytes:
    return (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _free_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class AttestationServer:
    """A real HTTPS server on 127.0.0.1 that serves `body` on GET /cpu (status `status`), as
    a SecretVM's attestation server does on :29343, with a certificate of its own."""

    port: int
    certificate: bytes  # DER
    body: str
    status: int
    tls: ssl.SSLContext
    directory: Path

    def new_certificate(self) -> bytes:
        """Serve a fresh certificate (a new key) from the next handshake on; its DER."""
        der, pem, key = _certificate()
        (self.directory / "cert.pem").write_bytes(pem)
        (self.directory / "key.pem").write_bytes(key)
        self.tls.load_cert_chain(self.directory / "cert.pem", self.directory / "key.pem")
        self.certificate = der
        return der


@pytest.fixture
async def attestation_server(tmp_path) -> AsyncIterator[AttestationServer]:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server = AttestationServer(0, b"", QUOTE.hex(), 200, tls, tmp_path)
    server.new_certificate()

    async def cpu(_: web.Request) -> web.Response:
        return web.Response(text=server.body, status=server.status)

    app = web.Application()
    app.router.add_get("/cpu", cpu)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    server.port = runner.addresses[0][1]
    yield server
    await runner.cleanup()


class RecordedCollateral:
    """The recorded collateral, counting how often a verifier asked for it (a full check)."""

    def __init__(self) -> None:
        self.asked = 0

    async def __call__(self, raw_quote: bytes) -> dcap_qvl.QuoteCollateralV3:
        self.asked += 1
        return _collateral()


def _verifier(port: int, collateral: RecordedCollateral | None = None, **options) -> TeeVerifier:
    return TeeVerifier(
        port=port,
        collateral=collateral or RecordedCollateral(),
        clock=lambda: IN_VALIDITY,
        **options,
    )


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["llm", "tee"], True),
        (["LLM", "TEE"], True),
        (["Tee"], True),
        ([" tee "], False),  # the live IsTeeModel compares lower-cased tags, untrimmed
        (["llm"], False),
        (["tee-gpu"], False),  # folded into "tee" by proxy-router v7.0: no longer the tag
        (["guarantee"], False),
        ([], False),
    ],
)
def test_tee_is_the_tee_tag_in_any_case(tags, expected) -> None:
    assert is_tee(tags) is expected


def test_a_tee_model_is_unverified_until_checked() -> None:
    tee = attestation_for(["LLM", "TEE"])
    assert (tee.tee, tee.attested) == (True, False) and tee.status.startswith("unverified")
    plain = attestation_for(["llm"])
    assert (plain.tee, plain.attested) == (False, False)


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("provider.example:3333", "https://provider.example:29343/cpu"),
        ("https://provider.example:8082/v1", "https://provider.example:29343/cpu"),
        ("10.0.0.7", "https://10.0.0.7:29343/cpu"),
        ("[2001:db8::1]:3333", "https://[2001:db8::1]:29343/cpu"),
    ],
)
def test_the_quote_is_read_from_the_provider_host_on_the_attestation_port(endpoint, url) -> None:
    assert attestation_url(endpoint) == url


def test_a_recorded_genuine_tdx_quote_verifies_against_intel_s_chain() -> None:
    quote = verify_tdx_quote(QUOTE, _collateral(), IN_VALIDITY)
    assert quote.tcb_status == "UpToDate" and quote.advisory_ids == ()
    assert quote.report_data == QUOTE[REPORT_DATA_AT : REPORT_DATA_AT + 64]
    assert len(quote.rtmr3) == 48


def test_a_tampered_quote_does_not_verify() -> None:
    with pytest.raises(AttestationUnverified, match=r"does not verify: .*signature is invalid"):
        verify_tdx_quote(_tampered(QUOTE), _collateral(), IN_VALIDITY)


def test_a_quote_checked_after_its_collateral_expired_does_not_verify() -> None:
    later = int(datetime.datetime(2026, 11, 30, tzinfo=datetime.UTC).timestamp())
    with pytest.raises(AttestationUnverified, match=r"does not verify: .*Expired"):
        verify_tdx_quote(QUOTE, _collateral(), later)


def test_report_data_binds_the_certificate_s_key_or_the_whole_certificate() -> None:
    der, _, _ = _certificate()
    other, _, _ = _certificate()
    spki_bound = hashlib.sha256(_spki(der)).digest() + bytes(32)
    cert_bound = hashlib.sha256(der).digest() + os.urandom(32)
    assert certificate_binding(spki_bound, der) == "spki"
    assert certificate_binding(cert_bound, der) == "certificate"
    assert certificate_binding(spki_bound, other) is None  # a quote replayed elsewhere
    assert certificate_binding(cert_bound, other) is None
    assert certificate_binding(bytes(32) + spki_bound[:32], der) is None  # only the first 32
    assert certificate_binding(spki_bound[:31], der) is None
    assert certificate_binding(spki_bound, b"not a certificate") is None


def _verified(report_data: bytes, rtmr3: bytes, status: str = "UpToDate") -> VerifiedQuote:
    return VerifiedQuote(status, (), report_data, rtmr3)


def test_a_verified_bound_quote_attests_only_with_its_golden_rtmr3() -> None:
    """The steps after the signature check, on constructed report data (a genuine quote bound
    to our certificate would need the TEE's key): TCB status, binding, golden RTMR3."""
    der, _, _ = _certificate()
    served = ServedQuote("00" * 8, der)
    url = "https://10.0.0.7:29343/cpu"
    rtmr3 = os.urandom(48)
    bound = _verified(hashlib.sha256(_spki(der)).digest() + bytes(32), rtmr3)
    verifier = TeeVerifier(golden_rtmr3={"v7.11.0": "0x" + rtmr3.hex().upper()})

    ok = verifier.judge(bound, served, url, "v7.11.0")
    assert (ok.tee, ok.attested, ok.binding, ok.rtmr3) == (True, True, "spki", rtmr3.hex())
    assert ok.status.startswith("verified:") and ok.quote_sha256 == served.sha256

    unknown = verifier.judge(bound, served, url, "v7.12.0")
    assert not unknown.attested and "no golden value for provider version 'v7.12.0'" in (
        unknown.status
    )
    other = TeeVerifier(golden_rtmr3={"v7.11.0": "ab" * 48}).judge(bound, served, url, "v7.11.0")
    assert not other.attested and f"RTMR3 {rtmr3.hex()} differs" in other.status

    stale = verifier.judge(_verified(bound.report_data, rtmr3, "OutOfDate"), served, url, "v7.11.0")
    assert not stale.attested and "TCB status is OutOfDate" in stale.status
    hardened = _verified(bound.report_data, rtmr3, "SWHardeningNeeded")
    assert verifier.judge(hardened, served, url, "v7.11.0").attested

    unbound = verifier.judge(_verified(os.urandom(64), rtmr3), served, url, "v7.11.0")
    assert not unbound.attested and "not bound" in unbound.status and unbound.binding is None


async def test_a_genuine_quote_served_over_tls_is_not_bound_to_the_served_certificate(
    attestation_server,
) -> None:
    collateral = RecordedCollateral()
    verifier = _verifier(attestation_server.port, collateral)
    found = await verifier.check("127.0.0.1:3333", "v7.11.0")
    assert (found.tee, found.attested, found.tcb_status) == (True, False, "UpToDate")
    assert "the TDX quote verifies but its report data is not bound to the certificate" in (
        found.status
    )
    assert found.quote_sha256 == hashlib.sha256(QUOTE.hex().encode()).hexdigest()
    assert found.version == "v7.11.0" and collateral.asked == 1
    # the quote's bytes bind neither the served certificate's key nor the certificate
    quote = verify_tdx_quote(QUOTE, _collateral(), IN_VALIDITY)
    assert certificate_binding(quote.report_data, attestation_server.certificate) is None


async def test_a_provider_is_checked_in_full_again_only_when_its_quote_or_certificate_changes(
    attestation_server,
) -> None:
    collateral = RecordedCollateral()
    verifier = _verifier(attestation_server.port, collateral)
    first = await verifier.check("127.0.0.1:3333", "v7.11.0")
    assert await verifier.check("127.0.0.1:3333", "v7.11.0") == first
    assert collateral.asked == 1  # the same quote and certificate: re-fetched and compared
    attestation_server.new_certificate()
    assert (await verifier.check("127.0.0.1:3333", "v7.11.0")).status == first.status
    assert collateral.asked == 2
    attestation_server.body = "0x" + QUOTE.hex()  # another text of the same quote
    await verifier.check("127.0.0.1:3333", "v7.11.0")
    assert collateral.asked == 3


async def test_a_tampered_quote_served_over_tls_is_unverified(attestation_server) -> None:
    attestation_server.body = _tampered(QUOTE).hex()
    found = await _verifier(attestation_server.port).check("127.0.0.1:3333", "v7.11.0")
    assert not found.attested
    assert "the TDX quote does not verify" in found.status and "signature" in found.status


async def test_an_unreachable_attestation_port_leaves_the_provider_unverified() -> None:
    port = _free_port()
    found = await _verifier(port).check("127.0.0.1:3333", "v7.11.0")
    assert (found.tee, found.attested) == (True, False)
    assert found.status.startswith(f"unverified: no quote at https://127.0.0.1:{port}/cpu")


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (base64.b64encode(os.urandom(1184)).decode(), 200, "an AMD SEV-SNP quote (base64)"),
        ("<html>nothing here</html>", 200, "neither hex (TDX) nor base64 (SEV)"),
        ("0a0b", 200, "the served hex is not a TDX quote"),
        ("", 200, "served an empty quote"),
        ("not found", 404, "answered HTTP 404"),
    ],
)
async def test_anything_but_a_tdx_quote_leaves_the_provider_unverified(
    attestation_server, body, status, reason
) -> None:
    attestation_server.body, attestation_server.status = body, status
    found = await _verifier(attestation_server.port).check("127.0.0.1:3333", "v7.11.0")
    assert not found.attested and reason in found.status


def test_the_tee_option_is_checked_up_front() -> None:
    assert mor.Strategy.of({"tee": True}).tee is True
    with pytest.raises(mor.ConfigurationError, match="tee='yes' must be True or False"):
        mor.Strategy.of({"tee": "yes"})


@pytest.fixture
async def secure_model(sandbox_info) -> AsyncIterator[bytes]:
    """A model tagged TEE with one bid, served by its own real provider router (a simulated
    backend behind it); bid, provider and model are removed afterwards, so the shared
    sandbox's market is left as other tests expect it."""
    chain = Chain(RpcClient(sandbox_info.rpc_url), sandbox_info.deployment)
    owner, provider = sandbox_info.signer("owner"), Signer(os.urandom(32))
    token, diamond = chain.deployment.token, chain.deployment.diamond
    base_id = keccak(os.urandom(32))
    min_stake = await chain.call("getModelMinimumStake")
    await chain.transact(owner, "approve", diamond, 2**255, to=token)
    await chain.transact(
        owner, "modelRegister", owner.address, base_id, base_id, 0, min_stake, SECURE,
        ["LLM", "TEE"],
    )  # fmt: skip
    model_id = await chain.call("getModelId", owner.address, base_id)
    await chain.rpc.request("anvil_setBalance", [provider.address, hex(10**21)])
    await chain.transact(owner, "transfer", provider.address, 300 * MOR, to=token)
    await chain.transact(provider, "approve", diamond, 2**255, to=token)
    try:
        async with ModelServer([SECURE], profile="instant") as backend:
            config = ModelConfig(model_id, SECURE, backend.base_url + "/chat/completions")
            async with ProviderServer(
                signer=provider, chain=chain, models=[config], claim_interval=None
            ) as server:
                await chain.transact(
                    provider, "providerRegister", provider.address, 200 * MOR, server.endpoint
                )
                await chain.transact(provider, "postModelBid", provider.address, model_id, 10**12)
                yield model_id
    finally:
        (bids,) = await listing(chain, "getProviderActiveBids", [(provider.address,)])
        for bid_id in bids:
            await chain.transact(provider, "deleteModelBid", bid_id)
        await chain.transact(provider, "providerDeregister", provider.address)
        await chain.transact(owner, "modelDeregister", model_id)
        await chain.rpc.aclose()


@pytest.fixture
async def connect(sandbox_info, tmp_path, monkeypatch):
    monkeypatch.setenv("MOR_WORKBENCH_HOME", str(tmp_path / "home"))
    opened: list[mor.AsyncWorkbench] = []

    async def connect(**options) -> mor.AsyncWorkbench:
        wb = await mor.aconnect("sandbox", sandbox_dir=sandbox_info.directory, **options)
        opened.append(wb)
        return wb

    yield connect
    for wb in opened:
        await wb.close()


async def _nonce(wb: mor.AsyncWorkbench) -> int:
    reply = await wb.chain.rpc.request("eth_getTransactionCount", [wb.address, "latest"])
    return int(reply, 16)


async def test_models_and_bids_have_a_tee_column(secure_model, connect) -> None:
    wb = await connect()
    models = (await wb.models()).set_index("name")
    assert models.loc[SECURE, "tee"]
    assert not models.drop(SECURE)["tee"].any()
    bids = await wb.bids()
    assert set(bids[bids["tee"]]["model"]) == {SECURE}
    assert bool((await wb.bids(SECURE))["tee"].all())


@pytest.mark.parametrize("option", [{"require_tee": True}, {"strategy": {"tee": True}}])
async def test_tee_only_refuses_a_model_not_tagged_tee_before_any_transaction(
    secure_model, connect, option
) -> None:
    wb = await connect(**option)
    before = await _nonce(wb)
    with pytest.raises(mor.ConfigurationError, match=r"'llama-3\.3-70b' is not tagged 'tee'"):
        await wb.chat("Hello", model="llama-3.3-70b")
    with pytest.raises(mor.ConfigurationError, match="not tagged 'tee'"):
        await wb.open_session("llama-3.3-70b")
    assert await _nonce(wb) == before


async def test_tee_only_never_pays_a_provider_whose_quote_is_not_bound_to_it(
    secure_model, connect, attestation_server
) -> None:
    """The provider serves a genuine quote from its attestation port, but the quote binds
    another machine's certificate: it is skipped like an unhealthy provider, before any
    transaction."""
    wb = await connect(require_tee=True)
    wb.router.tee_verifier = _verifier(attestation_server.port)
    before = await _nonce(wb)
    with pytest.raises(
        mor.NoProviderAvailable,
        match="TEE attestation failed: unverified: the TDX quote verifies but its report data "
        "is not bound",
    ):
        await wb.open_session(SECURE, duration="5m")
    assert await _nonce(wb) == before


async def test_tee_only_skips_a_provider_without_an_attestation_port(secure_model, connect) -> None:
    wb = await connect(require_tee=True)
    port = _free_port()
    wb.router.tee_verifier = _verifier(port)
    before = await _nonce(wb)
    with pytest.raises(
        mor.NoProviderAvailable, match="TEE attestation failed: unverified: no quote at https://"
    ) as refused:
        await wb.chat("Hello", model=SECURE)
    assert f":{port}/cpu" in str(refused.value)
    assert await _nonce(wb) == before


async def test_a_session_on_a_tee_model_says_why_its_provider_is_unverified(
    secure_model, connect, attestation_server
) -> None:
    wb = await connect()
    wb.router.tee_verifier = _verifier(attestation_server.port)
    session = await wb.open_session(SECURE, duration="5m")
    try:
        assert session.opened.model_id == secure_model
        answer = "".join([d async for d in session.stream("Hello")])
        assert answer
        attestation = wb.attestation(session)
        assert (attestation.tee, attestation.attested) == (True, False)
        assert "report data is not bound to the certificate" in attestation.status
        assert attestation.tcb_status == "UpToDate"
        assert wb.attestation(session.id) == attestation
        assert session.info()["attestation"] == attestation.status
    finally:
        await session.close()
    plain = await connect()
    other = await plain.open_session("llama-3.3-70b", duration="5m")
    try:
        assert plain.attestation(other) == attestation_for(["llm"])
        assert other.info()["attestation"] == "not a tee model"
    finally:
        await other.close()
    with pytest.raises(mor.ConfigurationError, match="not opened by this workbench"):
        wb.attestation(other)


async def test_before_each_prompt_a_provider_that_attested_is_checked_again(
    secure_model, connect, attestation_server
) -> None:
    """A provider recorded as attested at open (set by hand here: no genuine quote can bind a
    certificate of ours) is checked again before each prompt, and its attestation follows
    what it serves now; under a tee-only strategy a provider that no longer attests gets no
    prompt and the call fails over (here to nobody)."""
    wb = await connect()
    wb.router.tee_verifier = _verifier(attestation_server.port)
    session = await wb.open_session(SECURE, duration="5m")
    try:
        opened = wb.router.attestations[session.opened.session_id]
        wb.router.attestations[session.opened.session_id] = replace(
            opened, attested=True, status="verified: recorded by this test"
        )
        assert await session.chat("Hello")
        assert not wb.attestation(session).attested
        assert "not bound" in wb.attestation(session).status
        wb.router.attestations[session.opened.session_id] = replace(opened, attested=True)
        wb.router.strategy = replace(wb.router.strategy, tee=True)
        with pytest.raises(mor.NoProviderAvailable, match="no longer attests: unverified"):
            await session.chat("Hello")
    finally:
        await session.close()


async def test_the_tee_strategy_keeps_its_other_options(connect) -> None:
    wb = await connect(require_tee=True, strategy={"order": "best", "top": 1})
    assert (wb.strategy.tee, wb.strategy.order, wb.strategy.top) == (True, "best", 1)
