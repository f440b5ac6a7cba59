//! A certificate's subject distinguished name as `tls-authz` rules match
//! it: the way QEMU gets it from GnuTLS (`gnutls_x509_crt_get_dn`).
//!
//! RDNs come in the order the certificate stores them, joined with `,`
//! (`C=GB,O=Acme,CN=client1`), not the reversed RFC 4514 order that
//! `openssl` and `certtool -i` print. Attributes of one multi-valued RDN
//! are joined with `+`. Known attribute types use GnuTLS's short names;
//! others appear as the dotted OID with `#` and the value's DER in hex.
//! Values escape `,` `+` `"` `\` `<` `>` `;` (and a leading `#` or space,
//! a trailing space) with `\`, as GnuTLS does.

use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::AttributeTypeAndValue;

/// GnuTLS's names of attribute types (`lib/x509/common.c`).
const NAMES: &[(&str, &str)] = &[
    ("2.5.4.6", "C"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.3", "CN"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.9", "street"),
    ("2.5.4.17", "postalCode"),
    ("2.5.4.5", "serialNumber"),
    ("2.5.4.12", "title"),
    ("2.5.4.4", "surName"),
    ("2.5.4.42", "givenName"),
    ("2.5.4.43", "initials"),
    ("2.5.4.44", "generationQualifier"),
    ("2.5.4.46", "dnQualifier"),
    ("2.5.4.65", "pseudonym"),
    ("2.5.4.41", "name"),
    ("2.5.4.15", "businessCategory"),
    ("2.5.4.20", "telephoneNumber"),
    ("2.5.4.97", "organizationIdentifier"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("1.2.840.113549.1.9.1", "EMAIL"),
];

/// Why a certificate's subject could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot parse the certificate's subject: {0}")]
pub struct DnError(String);

/// The subject DN of the DER certificate `der`. See the module docs.
pub fn subject_dn(der: &[u8]) -> Result<String, DnError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| DnError(e.to_string()))?;
    let mut out = String::new();
    for (i, rdn) in cert.subject().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            push_attribute(&mut out, attr);
        }
    }
    Ok(out)
}

fn push_attribute(out: &mut String, attr: &AttributeTypeAndValue<'_>) {
    let oid = attr.attr_type().to_id_string();
    let known = NAMES.iter().find(|(o, _)| *o == oid).map(|(_, n)| *n);
    let text = value_text(attr);
    match (known, text) {
        (Some(name), Some(text)) => {
            out.push_str(name);
            out.push('=');
            escape_into(out, &text);
        }
        _ => {
            out.push_str(&oid);
            out.push_str("=#");
            push_der_hex(out, attr);
        }
    }
}

/// The value as text, for the string types certificates use.
fn value_text(attr: &AttributeTypeAndValue<'_>) -> Option<String> {
    if let Ok(s) = attr.as_str() {
        return Some(s.to_string());
    }
    let data = attr.as_slice();
    match attr.attr_value().tag().0 {
        // BMPString: UTF-16BE.
        30 if data.len().is_multiple_of(2) => {
            let units = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        // TeletexString, in practice Latin-1.
        20 => Some(data.iter().map(|&b| char::from(b)).collect()),
        _ => None,
    }
}

fn escape_into(out: &mut String, value: &str) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The value's DER (tag, length, contents) in hex.
fn push_der_hex(out: &mut String, attr: &AttributeTypeAndValue<'_>) {
    let data = attr.as_slice();
    let mut der = vec![(attr.attr_value().tag().0 & 0x1f) as u8];
    match data.len() {
        n if n < 0x80 => der.push(n as u8),
        n => {
            let bytes: Vec<u8> = (n as u64)
                .to_be_bytes()
                .into_iter()
                .skip_while(|&b| b == 0)
                .collect();
            der.push(0x80 | bytes.len() as u8);
            der.extend(bytes);
        }
    }
    der.extend_from_slice(data);
    for b in der {
        out.push_str(&format!("{b:02x}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_follows_gnutls() {
        let mut s = String::new();
        escape_into(&mut s, "#a,b+c \"d\" ");
        assert_eq!(s, "\\#a\\,b\\+c \\\"d\\\"\\ ");
        let mut s = String::new();
        escape_into(&mut s, " x");
        assert_eq!(s, "\\ x");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(subject_dn(b"not a certificate").is_err());
    }
}
