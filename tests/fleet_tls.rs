//! The shared fleet over `rediss://` with a password: a real redis-server
//! with TLS and a certificate from a test CA made with `openssl`.
//!
//! A binary of its own, with one test: it sets `SSL_CERT_FILE` (where
//! rustls-native-certs looks for the CA), which no other thread may race.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use _core::core::fleet::{Fleet, FleetCandidate, FleetError, FleetNode, FleetOptions};

#[path = "../src/core/fleet_test_server.rs"]
mod test_server;
use test_server::RedisServer;

/// A CA and a certificate for 127.0.0.1 signed by it, in `dir`.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is needed to make the test certificates");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509", "-days", "1", "-subj", "/CN=fleet test CA"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.crt"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    ]);
}

fn options(url: String) -> FleetOptions {
    FleetOptions {
        url,
        ..FleetOptions::default()
    }
}

fn node() -> Vec<FleetNode> {
    vec![FleetNode {
        key: "http://10.0.0.1:8050".to_owned(),
        maxconn: 1,
        weight: 1,
    }]
}

#[test]
fn rediss_with_a_password_verifies_the_certificate_and_authenticates() {
    let dir: PathBuf = std::env::temp_dir().join(format!("fleet-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    make_certificates(&dir);
    let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (cert, key, ca) = (file("server.crt"), file("server.key"), file("ca.crt"));
    let server = RedisServer::start_on(
        "--tls-port",
        &[
            "--port",
            "0",
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
            "--requirepass",
            "tls-pw",
        ],
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = format!("rediss://:tls-pw@127.0.0.1:{}", server.port);
        // The test CA is not trusted yet: the certificate is refused.
        let err = Fleet::connect(options(url.clone()), node())
            .await
            .unwrap_err();
        assert!(matches!(err, FleetError::Connect { .. }), "{err:?}");
        assert!(!format!("{err} {err:?}").contains("tls-pw"), "{err}");

        std::env::set_var("SSL_CERT_FILE", &ca);
        let (fleet, _) = Fleet::connect(options(url), node()).await.unwrap();
        let candidates = [FleetCandidate {
            node: 0,
            tried: false,
            preferred: false,
        }];
        let taken = fleet.take(&candidates, 0).await.unwrap().unwrap();
        assert!(fleet.take(&candidates, 0).await.unwrap().is_none());
        fleet.release(&[(taken.node, taken.lease)]).await.unwrap();
        assert_eq!(fleet.renew(&[]).await.unwrap().in_flight, vec![0]);

        let wrong = format!("rediss://:s3cret@127.0.0.1:{}", server.port);
        let err = Fleet::connect(options(wrong), node()).await.unwrap_err();
        assert!(matches!(err, FleetError::AuthFailed { .. }), "{err:?}");
        assert!(!format!("{err} {err:?}").contains("s3cret"), "{err}");

        // Plain text to the TLS port fails without hanging.
        let plain = format!("redis://:tls-pw@127.0.0.1:{}", server.port);
        let started = std::time::Instant::now();
        let err = Fleet::connect(options(plain), node()).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    });
    let _ = std::fs::remove_dir_all(&dir);
}
