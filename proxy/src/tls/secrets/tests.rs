use super::testing::{Ca, inline};
use super::*;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::{AggregatedConfigSource, ConfigSource};

const SPIFFE: &str = "spiffe://cluster.local/ns/default/sa/a";

fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

fn sds_ref(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.into(),
        sds_config: Some(ads()),
    }
}

fn cert_of(slot: &SecretSlot) -> Arc<CertificateSecret> {
    match slot.as_deref() {
        Some(SecretValue::Certificate(c)) => c.clone(),
        other => panic!("expected a certificate, got {other:?}"),
    }
}

fn tls_secret(name: &str, chain: &str, key: &str) -> Secret {
    Secret {
        name: name.into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(chain)),
            private_key: Some(inline(key)),
            ..Default::default()
        })),
    }
}

fn rejection(store: &SecretStore, s: Secret) -> String {
    let errs = store.apply(&[s]).unwrap_err();
    assert_eq!(errs.len(), 1);
    errs[0].error.to_string()
}

#[test]
fn bad_sds_secrets_are_refused_with_a_reason() {
    let store = SecretStore::new();
    let ca = Ca::new("cluster.local");
    let a = ca.leaf(SPIFFE);
    let b = ca.leaf(SPIFFE);
    assert_eq!(
        rejection(&store, tls_secret("default", &a.cert_pem, &b.key_pem)),
        "private_key does not match the certificate: its public key differs from the first \
         certificate of certificate_chain"
    );
    assert_eq!(
        rejection(
            &store,
            tls_secret("default", "hello, not a certificate", &a.key_pem)
        ),
        "certificate_chain: not PEM: no \"-----BEGIN CERTIFICATE-----\" block found"
    );
    assert!(
        rejection(
            &store,
            tls_secret(
                "default",
                "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
                &a.key_pem
            )
        )
        .starts_with("certificate_chain: malformed PEM")
    );
    assert!(
        rejection(&store, tls_secret("default", &a.cert_pem, &a.cert_pem))
            .starts_with("private_key: no PEM private key found")
    );
    assert_eq!(
        rejection(&store, tls_secret("default", "", &a.key_pem)),
        "certificate_chain: is empty"
    );
    let expired = ca.leaf_with(SPIFFE, |p| {
        p.not_before = rcgen::date_time_ymd(2001, 1, 1);
        p.not_after = rcgen::date_time_ymd(2002, 1, 1);
    });
    let e = rejection(&store, expired.secret("default"));
    assert!(
        e.starts_with("certificate_chain: the certificate \"O=cluster.local\" expired on"),
        "{e}"
    );
    assert_eq!(
        rejection(
            &store,
            Secret {
                name: "x".into(),
                r#type: None
            }
        ),
        "secret has no type; expected tls_certificate or validation_context"
    );
    let mut bad_ca = ca.root_secret("ROOTCA");
    if let Some(secret::Type::ValidationContext(v)) = &mut bad_ca.r#type {
        v.trusted_ca = Some(inline("junk"));
    }
    assert_eq!(
        rejection(&store, bad_ca),
        "trusted_ca: not PEM: no \"-----BEGIN CERTIFICATE-----\" block found"
    );
    // Nothing was stored.
    assert!(store.get("default", true).is_none());
}

#[test]
fn a_bad_update_keeps_the_good_secret_and_applies_the_rest() {
    let store = SecretStore::new();
    let ca = Ca::new("cluster.local");
    let a = ca.leaf(SPIFFE);
    store.apply(&[a.secret("default")]).unwrap();
    let before = cert_of(&store.get("default", true));
    let b = ca.leaf(SPIFFE);
    let errs = store
        .apply(&[
            tls_secret("default", &b.cert_pem, &a.key_pem),
            ca.root_secret("ROOTCA"),
        ])
        .unwrap_err();
    assert_eq!(
        errs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["default"]
    );
    assert!(Arc::ptr_eq(&before, &cert_of(&store.get("default", true))));
    assert!(matches!(
        store.get("ROOTCA", true).as_deref(),
        Some(SecretValue::Validation(_))
    ));
}

#[tokio::test]
async fn rotation_notifies_watchers_and_bumps_the_generation() {
    let store = SecretStore::new();
    let ca = Ca::new("cluster.local");
    let mut rx = store.watch(&sds_ref("default")).unwrap();
    assert!(rx.borrow().is_none(), "not ready before SDS delivers it");
    let generation = store.generation();
    store.apply(&[ca.leaf(SPIFFE).secret("default")]).unwrap();
    rx.changed().await.unwrap();
    let first = cert_of(&rx.borrow_and_update());
    assert_eq!(first.uri_sans, [SPIFFE]);
    assert!(store.generation() > generation);
    store
        .apply(&[ca
            .leaf("spiffe://cluster.local/ns/default/sa/b")
            .secret("default")])
        .unwrap();
    rx.changed().await.unwrap();
    assert_eq!(
        cert_of(&rx.borrow()).uri_sans,
        ["spiffe://cluster.local/ns/default/sa/b"]
    );
    store.remove(&["default".to_string()]);
    rx.changed().await.unwrap();
    assert!(rx.borrow().is_none());
}

#[test]
fn static_secrets_are_checked_and_looked_up_without_sds_config() {
    let store = SecretStore::new();
    let ca = Ca::new("cluster.local");
    store
        .add_static(&[
            ca.leaf(SPIFFE).secret("server_cert"),
            ca.root_secret("validation"),
        ])
        .unwrap();
    let static_ref = |n: &str| SdsSecretConfig {
        name: n.into(),
        sds_config: None,
    };
    assert!(
        store
            .watch(&static_ref("server_cert"))
            .unwrap()
            .borrow()
            .is_some()
    );
    assert_eq!(
        store.watch(&static_ref("nope")).unwrap_err().to_string(),
        "unknown static secret: nope"
    );
    // Static and SDS names are separate, as in Envoy.
    assert!(store.get("server_cert", true).is_none());
    let dup = SecretStore::new()
        .add_static(&[ca.root_secret("a"), ca.root_secret("a")])
        .unwrap_err();
    assert_eq!(
        dup.to_string(),
        "secrets[1]: duplicate static secret name \"a\""
    );
    let bad = SecretStore::new()
        .add_static(&[tls_secret("c", "x", "y")])
        .unwrap_err();
    assert_eq!(
        bad.to_string(),
        "secrets[0]: secret \"c\": certificate_chain: not PEM: no \"-----BEGIN CERTIFICATE-----\" block found"
    );
}

#[test]
fn sds_subscriptions_follow_live_contexts() {
    let store = SecretStore::new();
    let rx_default = store.watch(&sds_ref("default")).unwrap();
    let rx_root = store.watch(&sds_ref("ROOTCA")).unwrap();
    let names = |s: &SecretStore| {
        s.sds_subscriptions()
            .into_iter()
            .map(|s| s.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&store), ["ROOTCA", "default"]);
    assert_eq!(store.sds_subscriptions()[0].source, ads());
    drop(rx_root);
    assert_eq!(names(&store), ["default"]);
    drop(rx_default);
    assert!(names(&store).is_empty());
}

#[test]
fn istio_file_names_are_read_and_reloaded_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, root) = (
        dir.path().join("cert-chain.pem"),
        dir.path().join("key.pem"),
        dir.path().join("root-cert.pem"),
    );
    let ca = Ca::new("cluster.local");
    let a = ca.leaf(SPIFFE);
    std::fs::write(&cert, &a.cert_pem).unwrap();
    std::fs::write(&key, &a.key_pem).unwrap();
    std::fs::write(&root, &ca.pem).unwrap();
    let store = SecretStore::new();
    let name = format!("file-cert:{}~{}", cert.display(), key.display());
    let rx = store.watch(&sds_ref(&name)).unwrap();
    assert_eq!(cert_of(&rx.borrow()).uri_sans, [SPIFFE]);
    let roots = store
        .watch(&sds_ref(&format!("file-root:{}", root.display())))
        .unwrap();
    assert!(
        matches!(roots.borrow().as_deref(), Some(SecretValue::Validation(v)) if v.roots.len() == 1)
    );
    // Read from disk by us: nothing to subscribe to over SDS.
    assert!(store.sds_subscriptions().is_empty());
    assert_eq!(store.reload_files(), 0, "unchanged files are not re-parsed");

    // A half-written rotation (new certificate, old key) is refused; the old pair stays.
    let b = ca.leaf("spiffe://cluster.local/ns/default/sa/b");
    std::fs::write(&cert, &b.cert_pem).unwrap();
    assert_eq!(store.reload_files(), 0);
    assert_eq!(cert_of(&rx.borrow()).uri_sans, [SPIFFE]);
    // Once the key is written too, the new pair is used.
    std::fs::write(&key, &b.key_pem).unwrap();
    assert_eq!(store.reload_files(), 1);
    assert_eq!(
        cert_of(&rx.borrow()).uri_sans,
        ["spiffe://cluster.local/ns/default/sa/b"]
    );
}

#[test]
fn sds_secrets_naming_files_are_watched_too() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    let ca = Ca::new("cluster.local");
    let a = ca.leaf(SPIFFE);
    std::fs::write(&cert, &a.cert_pem).unwrap();
    std::fs::write(&key, &a.key_pem).unwrap();
    let store = SecretStore::new();
    let secret = Secret {
        name: "default".into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(file(&cert.display().to_string())),
            private_key: Some(file(&key.display().to_string())),
            ..Default::default()
        })),
    };
    store.apply(&[secret]).unwrap();
    let b = ca.leaf("spiffe://cluster.local/ns/default/sa/b");
    std::fs::write(&cert, &b.cert_pem).unwrap();
    std::fs::write(&key, &b.key_pem).unwrap();
    assert_eq!(store.reload_files(), 1);
    assert_eq!(
        cert_of(&store.get("default", true)).uri_sans,
        ["spiffe://cluster.local/ns/default/sa/b"]
    );
    let missing = Secret {
        name: "x".into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(file("/nonexistent/c.pem")),
            private_key: Some(file(&key.display().to_string())),
            ..Default::default()
        })),
    };
    let e = rejection(&store, missing);
    assert!(
        e.starts_with("certificate_chain: cannot read \"/nonexistent/c.pem\""),
        "{e}"
    );
}
