"""MOR-RPC, the consumer ↔ provider protocol of the live Morpheus network, sans-IO.

Messages encode to the exact bytes a Go peer produces (so signatures match), parse from decoded
JSON, sign and verify; `Decoder` splits a byte stream into messages; ECIES is go-ethereum's.
Encrypted prompts are our extension: a provider whose pong `version` carries the token
`encrypted-prompts` accepts a session.prompt whose `message` is 0x-hex ECIES of the JSON
(a JSON body always starts with "{", so the two forms cannot be confused).
"""

from mor_workbench.protocol.ecies import ecies_decrypt, ecies_encrypt
from mor_workbench.protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from mor_workbench.protocol.framing import PEER_REQUEST_LIMIT, Decoder
from mor_workbench.protocol.messages import (
    Message,
    PingReq,
    PongRes,
    Request,
    Response,
    RpcError,
    SessionPromptReq,
    SessionPromptRes,
    SessionReportReq,
    SessionReportRes,
    SessionReq,
    SessionRes,
)
from mor_workbench.protocol.security import ReplayGuard, check_fresh
from mor_workbench.protocol.signing import (
    Approval,
    Receipt,
    address_of,
    decode_approval,
    decode_receipt,
    encode_approval,
    encode_receipt,
    eth_recover,
    eth_sign,
    public_key_of,
    sign,
    sign_error,
    verify,
)

ENCRYPTED_PROMPTS = "encrypted-prompts"
EMBEDDINGS_PROMPT_TYPE = "embeddings"
"""The live wire's mark of an embeddings request (proxy-router `SendEmbeddings`): the
session.prompt body is OpenAI's embeddings request plus `"type": "embeddings"`, which the
provider takes out before posting the rest to the model's embeddings endpoint."""

__all__ = [
    "EMBEDDINGS_PROMPT_TYPE",
    "ENCRYPTED_PROMPTS",
    "PEER_REQUEST_LIMIT",
    "Approval",
    "Decoder",
    "LocalProtocolError",
    "Message",
    "PingReq",
    "PongRes",
    "ProtocolError",
    "Receipt",
    "RemoteProtocolError",
    "ReplayGuard",
    "Request",
    "Response",
    "RpcError",
    "SessionPromptReq",
    "SessionPromptRes",
    "SessionReportReq",
    "SessionReportRes",
    "SessionReq",
    "SessionRes",
    "address_of",
    "check_fresh",
    "decode_approval",
    "decode_receipt",
    "ecies_decrypt",
    "ecies_encrypt",
    "encode_approval",
    "encode_receipt",
    "eth_recover",
    "eth_sign",
    "public_key_of",
    "sign",
    "sign_error",
    "verify",
]
