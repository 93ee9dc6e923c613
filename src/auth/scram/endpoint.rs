//! The `tls-server-end-point` channel-binding value (RFC 5929): a hash of our DER certificate,
//! with the hash chosen from the certificate's signature algorithm.

use sha2::{Digest, Sha256, Sha384, Sha512};

/// DER encodings of the signature-algorithm OIDs that select SHA-384.
const SHA384_OIDS: [&[u8]; 2] = [
    // sha384WithRSAEncryption 1.2.840.113549.1.1.12
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
    // ecdsa-with-SHA384 1.2.840.10045.4.3.3
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
];

/// DER encodings of the signature-algorithm OIDs that select SHA-512.
const SHA512_OIDS: [&[u8]; 2] = [
    // sha512WithRSAEncryption 1.2.840.113549.1.1.13
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
    // ecdsa-with-SHA512 1.2.840.10045.4.3.4
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
];

/// Splits one DER TLV off `input`: returns (tag, contents, rest). Only definite lengths of up to
/// four length bytes are accepted, which covers any certificate.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(count)?;
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// The OID of `signatureAlgorithm` in a DER X.509 certificate, if it parses that far.
fn signature_algorithm_oid(cert_der: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (tag, cert, _) = read_tlv(cert_der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _tbs_certificate, rest) = read_tlv(cert)?;
    let (tag, algorithm_identifier, _) = read_tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, oid, _) = read_tlv(algorithm_identifier)?;
    (tag == OID).then_some(oid)
}

/// Hash of a DER certificate for `tls-server-end-point` (RFC 5929 section 4.1): SHA-384 or SHA-512
/// when the certificate's signature uses them (RSA PKCS#1 v1.5 or ECDSA), SHA-256 otherwise
/// (md5/sha1/sha256 signatures, and also RSA-PSS, Ed25519 or a certificate that does not parse —
/// it is our own configured certificate, so this is a best effort rather than validation).
pub fn tls_server_end_point(cert_der: &[u8]) -> Vec<u8> {
    match signature_algorithm_oid(cert_der) {
        Some(oid) if SHA384_OIDS.contains(&oid) => Sha384::digest(cert_der).to_vec(),
        Some(oid) if SHA512_OIDS.contains(&oid) => Sha512::digest(cert_der).to_vec(),
        _ => Sha256::digest(cert_der).to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn sha256_signed_cert_uses_sha256() {
        let der = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(tls_server_end_point(&der), Sha256::digest(&der).to_vec());
    }

    #[test]
    fn sha384_signed_cert_uses_sha384() {
        let der = self_signed(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(tls_server_end_point(&der), Sha384::digest(&der).to_vec());
    }

    #[test]
    fn garbage_falls_back_to_sha256() {
        for der in [
            &b""[..],
            b"\x30",
            b"\x30\x84\xff\xff\xff\xff",
            b"\x30\x02\x30\x00",
        ] {
            assert_eq!(tls_server_end_point(der), Sha256::digest(der).to_vec());
        }
    }
}
