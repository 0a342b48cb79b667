//! Unit tests of the directory lookup's pure parts (escaping, the attribute order, the cache,
//! the configuration); the LDAP round trips against a real Samba DC are in tests/ad_directory.rs.

use std::time::{Duration, Instant};

use sagw_auth::DirectoryAnswer;

use super::*;
use crate::directory_config::{DirectoryBind, DirectorySection, realm_of_base_dn};

fn attrs(pairs: &[(&str, &[&str])]) -> Attrs {
    Attrs(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
            .collect(),
    )
}

fn id(s: &str) -> DirectoryAnswer {
    DirectoryAnswer::Identity(s.to_owned())
}

#[test]
fn filter_values_cannot_change_the_filter() {
    assert_eq!(filter_value("alice"), "alice");
    assert_eq!(filter_value("a.b_c-d@x"), "a.b_c-d@x");
    assert_eq!(filter_value("*)(uid=*"), "\\2a\\29\\28uid\\3d\\2a");
    assert_eq!(filter_value("a\\b\0"), "a\\5cb\\00");
    // Non-ASCII as its UTF-8 bytes.
    assert_eq!(filter_value("jö"), "j\\c3\\b6");
    let f = Query::Sam("*)(objectClass=*".into()).filter();
    assert_eq!(
        f,
        "(&(objectCategory=person)(objectClass=user)(sAMAccountName=\\2a\\29\\28objectClass\\3d\\2a))"
    );
    // The escaped filter still parses as one equality match (no wildcard, no extra term).
    assert_eq!(f.matches('(').count(), 4);
    assert!(!f.contains('*'));
}

#[test]
fn the_identity_comes_from_the_attributes_in_order() {
    let all = attrs(&[
        ("sAMAccountName", &["alice"]),
        ("userAccountControl", &["512"]),
        (
            "msRTCSIP-PrimaryUserAddress",
            &["sip:alice.sip@example.test"],
        ),
        (
            "proxyAddresses",
            &["SIP:alice.proxy@example.test", "smtp:a@x"],
        ),
        ("mail", &["alice.mail@example.test"]),
        ("userPrincipalName", &["alice@example.test"]),
    ]);
    assert_eq!(
        answer_for(&all, Some("mail"), true),
        (id("sip:alice.sip@example.test"), Some(Source::Primary))
    );
    // Attribute names compare case-insensitively, the scheme is lower-cased.
    let proxy = attrs(&[
        (
            "PROXYADDRESSES",
            &[
                "smtp:erin@example.test",
                "sip:erin.b@example.test",
                "SIP:erin@example.test",
            ],
        ),
        ("userPrincipalName", &["erin@example.test"]),
    ]);
    assert_eq!(
        answer_for(&proxy, None, true),
        (id("sip:erin@example.test"), Some(Source::ProxyAddresses))
    );
    let mail = attrs(&[
        ("mail", &["frank.mail@example.test"]),
        ("userPrincipalName", &["frank@example.test"]),
    ]);
    assert_eq!(
        answer_for(&mail, Some("mail"), true),
        (id("sip:frank.mail@example.test"), Some(Source::Attribute))
    );
    let upn = attrs(&[("userPrincipalName", &["frank@example.test"])]);
    assert_eq!(
        answer_for(&upn, Some("mail"), true),
        (id("sip:frank@example.test"), Some(Source::Upn))
    );
    assert_eq!(
        answer_for(&upn, Some("mail"), false),
        (DirectoryAnswer::NoSipAddress, None)
    );
}

#[test]
fn invalid_values_are_skipped_and_disabled_wins() {
    let bad = attrs(&[
        ("msRTCSIP-PrimaryUserAddress", &["sip:no host <x>"]),
        ("proxyAddresses", &["SIP:", "sip:also bad@x"]),
        ("userPrincipalName", &["gina@example.test"]),
    ]);
    assert_eq!(
        answer_for(&bad, None, true),
        (id("sip:gina@example.test"), Some(Source::Upn))
    );
    assert_eq!(
        answer_for(&bad, None, false).0,
        DirectoryAnswer::NoSipAddress
    );
    for uac in ["514", "2", "66050"] {
        let disabled = attrs(&[
            ("userAccountControl", &[uac]),
            ("msRTCSIP-PrimaryUserAddress", &["sip:bob@example.test"]),
        ]);
        assert_eq!(
            answer_for(&disabled, None, true).0,
            DirectoryAnswer::Disabled,
            "{uac}"
        );
    }
    let enabled = attrs(&[
        ("userAccountControl", &["66048"]),
        ("msRTCSIP-PrimaryUserAddress", &["SIPS:bob@example.test"]),
    ]);
    assert_eq!(
        answer_for(&enabled, None, true).0,
        id("sips:bob@example.test")
    );
    assert_eq!(sip_uri("tel:+1555"), None);
    assert_eq!(sip_uri("x@y"), Some("sip:x@y".into()));
}

#[test]
fn a_principal_query_prefers_the_account_name() {
    let q = Query::Principal {
        name: "alice".into(),
        upn: "alice@example.test".into(),
    };
    let by_upn = attrs(&[
        ("sAMAccountName", &["other"]),
        ("userPrincipalName", &["alice@example.test"]),
    ]);
    let by_sam = attrs(&[
        ("sAMAccountName", &["Alice"]),
        ("userPrincipalName", &["a@elsewhere"]),
    ]);
    let both = [by_upn.clone(), by_sam.clone()];
    assert_eq!(q.pick(&both), Some(&by_sam));
    assert_eq!(q.pick(std::slice::from_ref(&by_upn)), Some(&by_upn));
    assert_eq!(
        Query::Sam("alice".into()).pick(std::slice::from_ref(&by_upn)),
        None
    );
    assert!(
        q.filter()
            .contains("(|(sAMAccountName=alice)(userPrincipalName=alice@example.test))")
    );
}

#[test]
fn the_cache_expires_and_stays_bounded() {
    let t0 = Instant::now();
    let mut c = Cache::new(3);
    c.put("a".into(), id("sip:a@x"), t0 + Duration::from_secs(10), t0);
    assert_eq!(c.get("a", t0 + Duration::from_secs(9)), Some(id("sip:a@x")));
    assert_eq!(c.get("a", t0 + Duration::from_secs(10)), None);
    assert_eq!(c.len(), 0, "an expired entry is dropped when seen");
    for (i, k) in ["b", "c", "d"].iter().enumerate() {
        c.put(
            (*k).into(),
            DirectoryAnswer::NotFound,
            t0 + Duration::from_secs(20 + i as u64),
            t0,
        );
    }
    // Full of fresh entries: the one expiring first ("b") makes room.
    c.put(
        "e".into(),
        DirectoryAnswer::Disabled,
        t0 + Duration::from_secs(30),
        t0,
    );
    assert_eq!(c.len(), 3);
    assert_eq!(c.get("b", t0), None);
    assert_eq!(c.get("e", t0), Some(DirectoryAnswer::Disabled));
    // Expired ones go first when full.
    let later = t0 + Duration::from_secs(25);
    c.put(
        "f".into(),
        DirectoryAnswer::NotFound,
        later + Duration::from_secs(5),
        later,
    );
    assert_eq!(c.get("e", later), Some(DirectoryAnswer::Disabled));
    assert_eq!(c.get("f", later), Some(DirectoryAnswer::NotFound));
    assert_eq!(c.len(), 2, "c and d had expired");
}

fn section() -> DirectorySection {
    DirectorySection {
        url: "ldaps://dc1.example.test".into(),
        ca_file: "/etc/sagw/ad-ca.pem".into(),
        bind_dn: "svc@example.test".into(),
        bind_password_file: "/etc/sagw/ldap.secret".into(),
        base_dn: "DC=example,DC=test".into(),
        ..DirectorySection::default()
    }
}

/// An `attribute` that Active Directory lets each user write on their own account (the
/// Personal-Information property set: `otherIpPhone`, which this page's own example named) is
/// warned about at start and by `check-config`: each user would choose their SIP identity.
#[test]
fn an_attribute_users_write_themselves_is_warned_about() {
    let with = |a: &str| {
        DirectorySection {
            attribute: a.into(),
            ..section()
        }
        .validate()
        .expect("valid")
        .self_writable_attribute()
    };
    for a in ["otherIpPhone", "ipphone", "telephoneNumber", "wWWHomePage"] {
        let w = with(a).unwrap_or_else(|| panic!("{a} not warned about"));
        assert!(w.contains("auth.directory.attribute"), "{w}");
    }
    for a in ["", "mail", "msRTCSIP-PrimaryUserAddress"] {
        assert_eq!(with(a), None, "{a}");
    }
}

#[test]
fn the_section_validates() {
    let c = section().validate().expect("valid");
    assert_eq!(c.host, "dc1.example.test");
    assert_eq!(c.realm, "EXAMPLE.TEST");
    assert_eq!(c.netbios_domain, None);
    assert_eq!(c.cache_ttl, Duration::from_secs(300));
    assert!(matches!(c.bind, DirectoryBind::Simple { .. }));
    assert_eq!(
        realm_of_base_dn("OU=x, dc=corp ,DC=Example,DC=com").as_deref(),
        Some("CORP.EXAMPLE.COM")
    );
    assert_eq!(realm_of_base_dn("O=x"), None);

    let err = |s: DirectorySection| s.validate().expect_err("invalid").to_string();
    let e = err(DirectorySection {
        url: "ldap://dc1".into(),
        ..section()
    });
    assert!(
        e.contains("auth.directory.url") && e.contains("plain LDAP is refused"),
        "{e}"
    );
    let ok = DirectorySection {
        url: "ldap://dc1:389".into(),
        starttls: true,
        ..section()
    };
    assert_eq!(ok.validate().expect("starttls").host, "dc1");
    let e = err(DirectorySection {
        starttls: true,
        ..section()
    });
    assert!(e.contains("auth.directory.starttls"), "{e}");
    for url in [
        "http://dc1",
        "ldapi:///run/x",
        "ldaps://",
        "ldaps://u@dc1",
        "ldaps://dc1/x",
        "ldaps://dc1:0",
        "ldaps://[::1]:636",
    ] {
        assert!(
            err(DirectorySection {
                url: url.into(),
                ..section()
            })
            .contains("auth.directory.url"),
            "{url}"
        );
    }
    let e = err(DirectorySection {
        bind: "sasl".into(),
        ..section()
    });
    assert!(e.contains("auth.directory.bind"), "{e}");
    let e = err(DirectorySection {
        bind_password_file: String::new(),
        ..section()
    });
    assert!(e.contains("auth.directory.bind_password_file"), "{e}");
    let anon = DirectorySection {
        bind: "anonymous".into(),
        bind_dn: String::new(),
        bind_password_file: String::new(),
        ..section()
    };
    assert_eq!(
        anon.validate().expect("anonymous").bind,
        DirectoryBind::Anonymous
    );
    let e = err(DirectorySection {
        bind: "anonymous".into(),
        ..section()
    });
    assert!(e.contains("auth.directory.bind"), "{e}");
    let e = err(DirectorySection {
        ca_file: String::new(),
        ..section()
    });
    assert!(e.contains("auth.directory.ca_file"), "{e}");
    let e = err(DirectorySection {
        base_dn: "example".into(),
        ..section()
    });
    assert!(e.contains("auth.directory.base_dn"), "{e}");
    let e = err(DirectorySection {
        base_dn: "O=x".into(),
        ..section()
    });
    assert!(e.contains("auth.directory.realm"), "{e}");
    let e = err(DirectorySection {
        attribute: "mail)(x".into(),
        ..section()
    });
    assert!(e.contains("auth.directory.attribute"), "{e}");
    let e = err(DirectorySection {
        netbios_domain: "WAY-TOO-LONG-NETBIOS".into(),
        ..section()
    });
    assert!(e.contains("auth.directory.netbios_domain"), "{e}");
    let e = err(DirectorySection {
        cache_ttl_secs: 0,
        ..section()
    });
    assert!(e.contains("auth.directory.cache_ttl_secs"), "{e}");
    let e = err(DirectorySection {
        timeout_secs: 0,
        ..section()
    });
    assert!(e.contains("auth.directory.timeout_secs"), "{e}");
}

#[test]
fn the_password_file_must_be_private_and_the_ca_must_hold_a_certificate() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("ldap.secret");
    std::fs::write(&pw, "S3cret!\nignored\n").expect("write");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let e = read_password_file(&pw)
        .expect_err("group-readable")
        .to_string();
    assert!(
        e.contains("auth.directory.bind_password_file") && e.contains("mode 640"),
        "{e}"
    );
    assert!(!e.contains("S3cret"), "{e}");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert_eq!(
        read_password_file(&pw).expect("private").as_str(),
        "S3cret!"
    );
    std::fs::write(&pw, "\n").expect("write");
    assert!(
        read_password_file(&pw)
            .expect_err("empty")
            .to_string()
            .contains("empty")
    );
    assert!(read_password_file(&dir.path().join("none")).is_err());

    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").expect("write");
    let e = tls_client(&ca).expect_err("no cert").to_string();
    assert!(
        e.contains("auth.directory.ca_file") && e.contains("no PEM certificate"),
        "{e}"
    );
    assert!(tls_client(&dir.path().join("missing.pem")).is_err());
}
