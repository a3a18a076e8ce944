//! Static mTLS rules: allow or deny a client certificate by fingerprint, CA, subject fields,
//! SANs, SPIFFE ID or issuer. Plain data, no I/O.
//!
//! # Evaluation order (documented for operators)
//! 1. Gateway-wide **deny** rules, then the route's **deny** rules: any match → 403.
//! 2. Gateway-wide **allow** rules (if there are any): one must match, else 403.
//! 3. The route's **allow** rules (if there are any): one must match, else 403.
//!
//! Allow rules only ever match a certificate that passed verification (`X-Client-Verify:
//! SUCCESS`); deny rules match any presented certificate.

use serde::{Deserialize, Serialize};

use crate::pki::CertInfo;

/// One rule: an effect and what it matches. Exactly one matcher field is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// `allow` or `deny`.
    pub effect: Effect,
    /// SHA-256 fingerprint (hex) of the client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// SHA-256 fingerprint (hex) of a CA certificate the client's verified chain passes through
    /// (the trust anchor or an intermediate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_fingerprint: Option<String>,
    /// Subject common name, exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cn: Option<String>,
    /// Subject organisation, exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub o: Option<String>,
    /// Subject organisational unit, exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ou: Option<String>,
    /// A DNS SAN; `*.example.com` matches one label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub san_dns: Option<String>,
    /// A URI SAN, exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub san_uri: Option<String>,
    /// An email SAN, exact (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub san_email: Option<String>,
    /// SPIFFE ID, exact (`spiffe://td/path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// SPIFFE trust domain (`example.org`); with `spiffe_path_prefix`, the path must start with it
    /// on a segment boundary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_trust_domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_path_prefix: Option<String>,
    /// Issuer common name, exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_cn: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    #[default]
    Allow,
    Deny,
}

/// A certificate as the rules see it.
pub struct Presented<'a> {
    pub info: &'a CertInfo,
    pub verified: bool,
    /// Fingerprints of the CA certificates on the verified path.
    pub ca_fingerprints: &'a [String],
}

impl Rule {
    /// Checks that exactly one matcher is set and values are well-formed.
    pub fn validate(&self) -> Result<(), String> {
        let set = [
            self.fingerprint.is_some(),
            self.ca_fingerprint.is_some(),
            self.cn.is_some(),
            self.o.is_some(),
            self.ou.is_some(),
            self.san_dns.is_some(),
            self.san_uri.is_some(),
            self.san_email.is_some(),
            self.spiffe_id.is_some(),
            self.spiffe_trust_domain.is_some(),
            self.issuer_cn.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            return Err(format!(
                "a rule needs exactly one matcher (fingerprint, ca_fingerprint, cn, o, ou, san_dns, san_uri, san_email, spiffe_id, spiffe_trust_domain or issuer_cn); this one has {set}"
            ));
        }
        if self.spiffe_path_prefix.is_some() && self.spiffe_trust_domain.is_none() {
            return Err("spiffe_path_prefix needs spiffe_trust_domain".into());
        }
        for fp in [&self.fingerprint, &self.ca_fingerprint]
            .into_iter()
            .flatten()
        {
            if fp.len() != 64 || !fp.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!(
                    "'{fp}' is not a SHA-256 fingerprint (64 hex characters)"
                ));
            }
        }
        if let Some(id) = &self.spiffe_id
            && !id.starts_with("spiffe://")
        {
            return Err(format!("spiffe_id '{id}' must start with spiffe://"));
        }
        Ok(())
    }

    /// Lower-cases fingerprints so comparisons are exact.
    pub fn normalised(mut self) -> Self {
        self.fingerprint = self
            .fingerprint
            .map(|f| f.to_ascii_lowercase().replace(':', ""));
        self.ca_fingerprint = self
            .ca_fingerprint
            .map(|f| f.to_ascii_lowercase().replace(':', ""));
        self
    }

    pub fn matches(&self, p: &Presented<'_>) -> bool {
        let i = p.info;
        if let Some(fp) = &self.fingerprint {
            return &i.fingerprint_sha256 == fp;
        }
        if let Some(fp) = &self.ca_fingerprint {
            return p.ca_fingerprints.iter().any(|c| c == fp);
        }
        if let Some(cn) = &self.cn {
            return self.one_name(dn_values(&i.subject_attrs, "CN"), cn);
        }
        if let Some(o) = &self.o {
            return self.any_name(dn_values(&i.subject_attrs, "O"), o);
        }
        if let Some(ou) = &self.ou {
            return self.any_name(dn_values(&i.subject_attrs, "OU"), ou);
        }
        if let Some(pattern) = &self.san_dns {
            return i.dns_sans.iter().any(|d| dns_matches(pattern, d));
        }
        if let Some(uri) = &self.san_uri {
            return i.uri_sans.iter().any(|u| u == uri);
        }
        if let Some(email) = &self.san_email {
            return i.email_sans.iter().any(|e| e.eq_ignore_ascii_case(email));
        }
        if let Some(id) = &self.spiffe_id {
            return i.spiffe_id.as_deref() == Some(id.as_str());
        }
        if let Some(td) = &self.spiffe_trust_domain {
            let Some(rest) = i
                .spiffe_id
                .as_deref()
                .and_then(|s| s.strip_prefix("spiffe://"))
            else {
                return false;
            };
            let (domain, path) = rest.split_once('/').map_or((rest, ""), |(d, p)| (d, p));
            if !domain.eq_ignore_ascii_case(td) {
                return false;
            }
            return match &self.spiffe_path_prefix {
                None => true,
                Some(prefix) => {
                    let prefix = prefix.trim_matches('/');
                    let path = path.trim_matches('/');
                    prefix.is_empty()
                        || path == prefix
                        || path
                            .strip_prefix(prefix)
                            .is_some_and(|r| r.starts_with('/'))
                }
            };
        }
        if let Some(cn) = &self.issuer_cn {
            return self.one_name(dn_values(&i.issuer_attrs, "CN"), cn);
        }
        false
    }
}

impl Rule {
    /// A common name identifies one subject: with several CN attributes (tools disagree on
    /// which one counts), an allow rule needs all of them to be its value, while a deny rule
    /// matches any of them. So an ambiguous name never gains access and never escapes a deny.
    /// A value that is not a well-formed string (`None`) matches every deny and no allow.
    fn one_name<'a>(&self, mut values: impl Iterator<Item = Option<&'a str>>, want: &str) -> bool {
        match self.effect {
            Effect::Deny => values.any(|v| v.is_none_or(|v| v == want)),
            Effect::Allow => {
                let mut seen = false;
                for v in values {
                    if v != Some(want) {
                        return false;
                    }
                    seen = true;
                }
                seen
            }
        }
    }

    /// O and OU: any one value matches (a subject may belong to several units); a value that
    /// is not a well-formed string matches every deny.
    fn any_name<'a>(&self, mut values: impl Iterator<Item = Option<&'a str>>, want: &str) -> bool {
        match self.effect {
            Effect::Deny => values.any(|v| v.is_none_or(|v| v == want)),
            Effect::Allow => values.any(|v| v == Some(want)),
        }
    }
}

/// Values of one attribute of a parsed name (every RDN, multi-valued ones included).
fn dn_values<'a>(
    attrs: &'a [(String, Option<String>)],
    attr: &'a str,
) -> impl Iterator<Item = Option<&'a str>> + 'a {
    attrs
        .iter()
        .filter(move |(k, _)| k.eq_ignore_ascii_case(attr))
        .map(|(_, v)| v.as_deref())
}

fn dns_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(suffix)),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

/// Why the rules refused a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleDenial {
    /// A deny rule matched (its index in the gateway-wide or route list).
    Denied { scope: &'static str, index: usize },
    /// Allow rules exist and none matched.
    NotAllowed { scope: &'static str },
    /// Allow rules exist but the client presented no verified certificate.
    NoVerifiedCertificate { scope: &'static str },
}

impl RuleDenial {
    pub fn reason(&self) -> String {
        match self {
            RuleDenial::Denied { scope, index } => {
                format!(
                    "the client certificate matches {scope} deny rule #{}",
                    index + 1
                )
            }
            RuleDenial::NotAllowed { scope } => {
                format!(
                    "the client certificate is valid but matches none of the {scope} allow rules"
                )
            }
            RuleDenial::NoVerifiedCertificate { scope } => {
                format!("the {scope} allow rules need a verified client certificate")
            }
        }
    }
}

/// Applies the gateway-wide and the route's rules in the documented order.
pub fn evaluate(
    global: &[Rule],
    route: &[Rule],
    p: Option<&Presented<'_>>,
) -> Result<(), RuleDenial> {
    for (scope, rules) in [("gateway-wide", global), ("route", route)] {
        if let Some(p) = p
            && let Some(index) = rules
                .iter()
                .position(|r| r.effect == Effect::Deny && r.matches(p))
        {
            return Err(RuleDenial::Denied { scope, index });
        }
    }
    for (scope, rules) in [("gateway-wide", global), ("route", route)] {
        let mut allows = rules
            .iter()
            .filter(|r| r.effect == Effect::Allow)
            .peekable();
        if allows.peek().is_none() {
            continue;
        }
        match p {
            Some(p) if p.verified => {
                if !allows.any(|r| r.matches(p)) {
                    return Err(RuleDenial::NotAllowed { scope });
                }
            }
            _ => return Err(RuleDenial::NoVerifiedCertificate { scope }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> CertInfo {
        CertInfo {
            subject: "CN=svc-a,OU=Payments,O=Acme".into(),
            issuer: "CN=Acme Issuing CA".into(),
            subject_attrs: vec![
                ("O".into(), Some("Acme".into())),
                ("OU".into(), Some("Payments".into())),
                ("CN".into(), Some("svc-a".into())),
            ],
            issuer_attrs: vec![("CN".into(), Some("Acme Issuing CA".into()))],
            subject_raw: vec![],
            issuer_raw: vec![],
            serial_hex: "01".into(),
            not_before: 0,
            not_after: 0,
            is_ca: false,
            dns_sans: vec!["a.svc.acme.test".into()],
            uri_sans: vec!["spiffe://acme.test/ns/prod/sa/svc-a".into()],
            email_sans: vec!["ops@acme.test".into()],
            spiffe_id: Some("spiffe://acme.test/ns/prod/sa/svc-a".into()),
            fingerprint_sha256: "ab".repeat(32),
            eku: None,
            key_type: "ECDSA P-256".into(),
        }
    }

    fn rule(effect: Effect, f: impl FnOnce(&mut Rule)) -> Rule {
        let mut r = Rule {
            effect,
            ..Rule::default()
        };
        f(&mut r);
        r.validate().unwrap();
        r
    }

    #[test]
    fn each_matcher_kind() {
        let i = info();
        let cas = vec!["cd".repeat(32)];
        let p = Presented {
            info: &i,
            verified: true,
            ca_fingerprints: &cas,
        };
        let yes: Vec<Rule> = vec![
            rule(Effect::Allow, |r| r.fingerprint = Some("ab".repeat(32))),
            rule(Effect::Allow, |r| r.ca_fingerprint = Some("cd".repeat(32))),
            rule(Effect::Allow, |r| r.cn = Some("svc-a".into())),
            rule(Effect::Allow, |r| r.o = Some("Acme".into())),
            rule(Effect::Allow, |r| r.ou = Some("Payments".into())),
            rule(Effect::Allow, |r| {
                r.san_dns = Some("*.svc.acme.test".into())
            }),
            rule(Effect::Allow, |r| {
                r.san_uri = Some("spiffe://acme.test/ns/prod/sa/svc-a".into())
            }),
            rule(Effect::Allow, |r| {
                r.san_email = Some("OPS@acme.test".into())
            }),
            rule(Effect::Allow, |r| {
                r.spiffe_id = Some("spiffe://acme.test/ns/prod/sa/svc-a".into())
            }),
            rule(Effect::Allow, |r| {
                r.spiffe_trust_domain = Some("acme.test".into());
                r.spiffe_path_prefix = Some("/ns/prod".into());
            }),
            rule(Effect::Allow, |r| {
                r.issuer_cn = Some("Acme Issuing CA".into())
            }),
        ];
        for r in &yes {
            assert!(r.matches(&p), "{r:?}");
        }
        let no: Vec<Rule> = vec![
            rule(Effect::Allow, |r| r.fingerprint = Some("00".repeat(32))),
            rule(Effect::Allow, |r| r.cn = Some("svc".into())),
            rule(Effect::Allow, |r| r.san_dns = Some("*.acme.test".into())),
            rule(Effect::Allow, |r| {
                r.spiffe_trust_domain = Some("acme.test".into());
                r.spiffe_path_prefix = Some("/ns/pro".into());
            }),
            rule(Effect::Allow, |r| {
                r.spiffe_trust_domain = Some("other.test".into())
            }),
            rule(Effect::Allow, |r| r.issuer_cn = Some("Acme".into())),
        ];
        for r in &no {
            assert!(!r.matches(&p), "{r:?}");
        }
    }

    #[test]
    #[allow(clippy::cloned_ref_to_slice_refs)]
    fn order_deny_first_then_each_allow_list() {
        let i = info();
        let p = Presented {
            info: &i,
            verified: true,
            ca_fingerprints: &[],
        };
        let allow_o = rule(Effect::Allow, |r| r.o = Some("Acme".into()));
        let deny_cn = rule(Effect::Deny, |r| r.cn = Some("svc-a".into()));
        let allow_other = rule(Effect::Allow, |r| r.cn = Some("other".into()));
        assert_eq!(evaluate(&[], &[], Some(&p)), Ok(()));
        assert_eq!(evaluate(&[allow_o.clone()], &[], Some(&p)), Ok(()));
        assert!(matches!(
            evaluate(&[allow_o.clone()], &[deny_cn], Some(&p)),
            Err(RuleDenial::Denied { scope: "route", .. })
        ));
        assert!(matches!(
            evaluate(&[allow_o.clone()], &[allow_other.clone()], Some(&p)),
            Err(RuleDenial::NotAllowed { scope: "route" })
        ));
        assert!(matches!(
            evaluate(&[allow_other], &[allow_o.clone()], Some(&p)),
            Err(RuleDenial::NotAllowed {
                scope: "gateway-wide"
            })
        ));
        let unverified = Presented {
            info: &i,
            verified: false,
            ca_fingerprints: &[],
        };
        assert!(matches!(
            evaluate(&[], &[allow_o.clone()], Some(&unverified)),
            Err(RuleDenial::NoVerifiedCertificate { .. })
        ));
        assert!(matches!(
            evaluate(&[], &[allow_o], None),
            Err(RuleDenial::NoVerifiedCertificate { .. })
        ));
    }

    #[test]
    fn a_rule_has_exactly_one_matcher() {
        assert!(Rule::default().validate().is_err());
        let two = Rule {
            cn: Some("a".into()),
            o: Some("b".into()),
            ..Rule::default()
        };
        assert!(two.validate().is_err());
        let bad_fp = Rule {
            fingerprint: Some("xyz".into()),
            ..Rule::default()
        };
        assert!(bad_fp.validate().is_err());
    }

    #[test]
    fn several_common_names_never_gain_access_and_never_escape_a_deny() {
        let mut i = info();
        i.subject_attrs = vec![
            ("CN".into(), Some("admin".into())),
            ("CN".into(), Some("mallory".into())),
        ];
        let cas: Vec<String> = vec![];
        let p = Presented {
            info: &i,
            verified: true,
            ca_fingerprints: &cas,
        };
        let allow = rule(Effect::Allow, |r| r.cn = Some("admin".into()));
        assert!(!allow.matches(&p), "an ambiguous name passed an allow rule");
        let deny = rule(Effect::Deny, |r| r.cn = Some("mallory".into()));
        assert!(deny.matches(&p), "a second CN escaped a deny rule");
        i.subject_attrs = vec![("CN".into(), Some("admin".into()))];
        let p = Presented {
            info: &i,
            verified: true,
            ca_fingerprints: &cas,
        };
        assert!(allow.matches(&p));
        // A CN that is not a well-formed string: every deny matches, no allow does.
        i.subject_attrs = vec![("CN".into(), None), ("OU".into(), None)];
        let p = Presented {
            info: &i,
            verified: true,
            ca_fingerprints: &cas,
        };
        assert!(!allow.matches(&p));
        assert!(deny.matches(&p));
        assert!(rule(Effect::Deny, |r| r.ou = Some("Payments".into())).matches(&p));
        assert!(!rule(Effect::Allow, |r| r.ou = Some("Payments".into())).matches(&p));
    }
}
