"""Transport security of the exchange: mutual TLS between the agents of one job attempt.

Each agent holds its own key and a certificate issued for one attempt of one job, plus the certificate
of the authority (CA) that issued them. `issue_job_certificates` makes a new CA per attempt, signs one
certificate per agent and drops the CA's private key on return: nothing can issue another certificate
the agents trust. (With cert-manager the issuer is shared, which is why identities are checked too.)

Identity. The first subject alternative name (SAN) of an agent certificate is its name
``agent-<i>.attempt-<n>.<job>.<scope>.sabot.internal`` (scope: the namespace in a cluster, ``local``
for `sabot run`). gRPC reports the first SAN of a verified client certificate as the peer's identity
(pyarrow's ``ServerCallContext.peer_identity()``), so a server knows which agent calls; a client pins
the server it wanted by asking for that same name (pyarrow's ``override_hostname``), whatever address
it dialled. A DNS name rather than the URI SAN because cert-manager (Go's x509) writes every DNS name
before any URI; the URI ``sabot://<job>/attempt-<n>/agent-<i>`` and the addresses peers dial follow.

``SECURITY_SCHEMA`` is `spec.security` of the job schema (sabot_agent.jobspec): ``tls`` is read by the
agents and `sabot run`, the other fields only by the operator.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ENABLED, DISABLED = "enabled", "disabled"
IDENTITY_DOMAIN = "sabot.internal"
LOCAL_SCOPE = "local"
# Agents read their certificate once, at start; an attempt running longer than this needs new ones.
CERTIFICATE_VALIDITY = datetime.timedelta(days=366)
# Accepted clock difference between the machine that issues the certificates and the agents.
CLOCK_SKEW = datetime.timedelta(minutes=5)

_SWITCH = {"type": "string", "enum": [ENABLED, DISABLED]}
_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "maxProperties": 64, "additionalProperties": {"type": "string", "maxLength": 63}},
        "matchExpressions": {
            "type": "array",
            "maxItems": 16,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string", "minLength": 1, "maxLength": 317},
                    "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                    "values": {"type": "array", "maxItems": 64, "items": {"type": "string", "maxLength": 63}},
                },
            },
        },
    },
}
# A NetworkPolicyPeer (networking.k8s.io/v1): who may reach the agents' metrics port.
_NETWORK_POLICY_PEER = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "podSelector": _LABEL_SELECTOR,
        "namespaceSelector": _LABEL_SELECTOR,
        "ipBlock": {
            "type": "object",
            "additionalProperties": False,
            "required": ["cidr"],
            "properties": {
                "cidr": {"type": "string", "minLength": 1, "maxLength": 64},
                "except": {"type": "array", "maxItems": 16, "items": {"type": "string", "minLength": 1, "maxLength": 64}},
            },
        },
    },
}
SECURITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        # mutual TLS between the agents; disabled means plaintext Flight (insecure)
        "tls": _SWITCH,
        # the job's NetworkPolicy (operator only)
        "networkPolicy": _SWITCH,
        # who may reach the metrics port under that policy; absent: any source (operator only)
        "metricsFrom": {"type": "array", "minItems": 1, "maxItems": 16, "items": _NETWORK_POLICY_PEER},
        # cert-manager issues the agents' certificates instead of the operator's own CA (operator only)
        "issuerRef": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 253},
                "kind": {"type": "string", "enum": ["Issuer", "ClusterIssuer"]},
                "group": {"type": "string", "enum": ["cert-manager.io"]},
            },
        },
    },
}


def tls_enabled(spec: dict[str, Any]) -> bool:
    """Whether a job spec (as written; TLS is the default) has its agents talk mutual TLS."""
    return (spec.get("security") or {}).get("tls", ENABLED) == ENABLED


class TLSConfigError(ValueError):
    """Certificate material an agent cannot use; the message is one line."""


_IDENTITY = re.compile(
    r"agent-(0|[1-9][0-9]{0,3})\.attempt-(0|[1-9][0-9]{0,9})\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)\."
    + re.escape(IDENTITY_DOMAIN)
)


@dataclass(frozen=True)
class AgentIdentity:
    job: str
    attempt: int
    index: int
    scope: str = LOCAL_SCOPE

    @property
    def name(self) -> str:
        """The certificate's first SAN: what peer_identity() reports and clients ask servers for."""
        return f"agent-{self.index}.attempt-{self.attempt}.{self.job}.{self.scope}.{IDENTITY_DOMAIN}"

    @property
    def uri(self) -> str:
        return f"sabot://{self.job}/attempt-{self.attempt}/agent-{self.index}"

    def peer(self, index: int) -> AgentIdentity:
        """Agent `index` of the same job attempt."""
        return replace(self, index=index)

    @classmethod
    def parse(cls, name: str) -> AgentIdentity | None:
        match = _IDENTITY.fullmatch(name)
        if match is None:
            return None
        return cls(job=match[3], attempt=int(match[2]), index=int(match[1]), scope=match[5])


@dataclass(frozen=True)
class KeyPair:
    certificate: bytes  # PEM
    key: bytes  # PEM, PKCS#8, unencrypted: it is only ever written to a private file or a Secret


@dataclass(frozen=True)
class JobCertificates:
    ca: bytes  # PEM of the attempt's CA certificate (its key no longer exists)
    agents: list[KeyPair]  # in agent index order


def _subject_alternative_names(identity: AgentIdentity, hostnames: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(identity.name)]
    for hostname in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(hostname)))
        except ValueError:
            names.append(x509.DNSName(hostname))
    return [*names, x509.UniformResourceIdentifier(identity.uri)]


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def issue_job_certificates(identities: list[AgentIdentity], hostnames: list[list[str]]) -> JobCertificates:
    """A new CA and, signed by it, one certificate per identity (with SANs: its name, `hostnames[i]`
    — DNS names or IP addresses peers dial —, its URI). The CA's private key is dropped on return."""
    now = datetime.datetime.now(datetime.timezone.utc)
    first = identities[0]
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sabot"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"attempt-{first.attempt}"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"{first.job}-ca"),
    ])  # fmt: skip
    ca_public = ca_key.public_key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CERTIFICATE_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_public), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    agents = []
    for identity, names in zip(identities, hostnames, strict=True):
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{identity.job}-agent-{identity.index}")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + CERTIFICATE_VALIDITY)
            .add_extension(x509.SubjectAlternativeName(_subject_alternative_names(identity, names)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(key_cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        agents.append(KeyPair(_pem(certificate), pem_key))
    return JobCertificates(_pem(ca), agents)


def _key_usage(key_cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                         key_agreement=False, key_cert_sign=key_cert_sign, crl_sign=key_cert_sign, encipher_only=False,
                         decipher_only=False)  # fmt: skip


def _read(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise TLSConfigError(f"cannot read {flag} {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class AgentTLS:
    """An agent's TLS material, loaded and checked; `identity` is the agent its certificate names."""

    certificate: bytes
    key: bytes
    ca: bytes
    identity: AgentIdentity

    @classmethod
    def load(cls, certificate_path: str, key_path: str, ca_path: str) -> AgentTLS:
        """Read the three PEM files and check they fit together: the key is the certificate's, one of
        the CA certificates issued it, it is valid now and names an agent. Raises TLSConfigError."""
        certificate_pem, key_pem, ca_pem = _read(certificate_path, "--tls-cert"), _read(key_path, "--tls-key"), _read(ca_path, "--tls-ca")
        try:
            certificate = x509.load_pem_x509_certificate(certificate_pem)
        except ValueError:
            raise TLSConfigError(f"--tls-cert {certificate_path} is not a PEM certificate") from None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError):
            raise TLSConfigError(f"--tls-key {key_path} is not an unencrypted PEM private key") from None
        try:
            authorities = x509.load_pem_x509_certificates(ca_pem)
        except ValueError:
            raise TLSConfigError(f"--tls-ca {ca_path} is not a PEM certificate") from None
        if key.public_key() != certificate.public_key():
            raise TLSConfigError(f"--tls-key {key_path} is not the key of --tls-cert {certificate_path}")
        if not any(_issued_by(certificate, authority) for authority in authorities):
            raise TLSConfigError(f"--tls-cert {certificate_path} was not issued by --tls-ca {ca_path}")
        now = datetime.datetime.now(datetime.timezone.utc)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise TLSConfigError(f"--tls-cert {certificate_path} is not valid now (valid {certificate.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} "
                                 f"to {certificate.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ})")  # fmt: skip
        identity = _first_name(certificate)
        if identity is None:
            raise TLSConfigError(f"--tls-cert {certificate_path} names no agent: its first subject alternative name must be "
                                 f"agent-<index>.attempt-<attempt>.<job>.<scope>.{IDENTITY_DOMAIN}")  # fmt: skip
        return cls(certificate_pem, key_pem, ca_pem, identity)

    def peer_name(self, index: int) -> str:
        """The name agent `index` of this job attempt presents, which a client insists on."""
        return self.identity.peer(index).name

    def caller(self, peer_identity: bytes, agent_count: int) -> int | None:
        """The index of the calling agent from the identity gRPC verified, or None when it is not an
        agent of this job attempt (another job, attempt or namespace, or no agent name at all)."""
        try:
            identity = AgentIdentity.parse(peer_identity.decode("ascii"))
        except UnicodeDecodeError:
            return None
        if identity is None or identity.peer(0) != self.identity.peer(0) or identity.index >= agent_count:
            return None
        return identity.index


def _issued_by(certificate: x509.Certificate, authority: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _first_name(certificate: x509.Certificate) -> AgentIdentity | None:
    """The identity in the certificate's first SAN, the one gRPC reports for it."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    first = next(iter(names), None)
    return AgentIdentity.parse(first.value) if isinstance(first, x509.DNSName) else None
