//! TLS to PostgreSQL as `DATABASE_SSLMODE` and `DATABASE_SSL_ROOT_CERT` say: encrypted when
//! asked, and the server's certificate really verified (name and issuer) in the `verify-*`
//! modes. Against the server `DATABASE_URL` names: this machine's has TLS on (Debian's
//! self-signed `localhost` certificate); a server without TLS must refuse `require`.

use billing_service::configuration::DatabaseSettings;
use billing_service::db::{ConnectError, Db};
use test_support::db::{Engine, server_or_skip};

async fn connect(
    url: &str,
    host: &str,
    mode: &str,
    root: Option<&str>,
) -> Result<Db, ConnectError> {
    let mut url = url::Url::parse(url).unwrap();
    url.set_host(Some(host)).unwrap();
    let url = url.to_string();
    let env = move |key: &str| -> Option<String> {
        match key {
            "DATABASE_URL" => Some(url.clone()),
            "DATABASE_SSLMODE" => Some(mode.to_owned()),
            "DATABASE_SSL_ROOT_CERT" => root.map(str::to_owned),
            "DATABASE_CONNECT_RETRY_SECS" => Some("0".to_owned()),
            _ => None,
        }
    };
    Db::connect(&DatabaseSettings::from_env(&env).expect("valid settings")).await
}

async fn encrypted(db: &Db) -> bool {
    let ssl: i32 = sqlx::query_scalar(
        "SELECT CASE WHEN ssl THEN 1 ELSE 0 END FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    ssl == 1
}

#[tokio::test]
async fn database_tls_is_used_and_verified_as_configured() {
    let Some(test_db) = server_or_skip(
        Engine::Postgres,
        "database_tls_is_used_and_verified_as_configured",
    )
    .await
    else {
        return;
    };
    let admin = connect(&test_db.url, "127.0.0.1", "prefer", None)
        .await
        .unwrap();
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&admin.pool)
        .await
        .unwrap();
    if ssl != "on" {
        let refused = connect(&test_db.url, "127.0.0.1", "require", None).await;
        assert!(
            refused.is_err(),
            "require against a server without TLS must fail"
        );
        return;
    }
    let plain = connect(&test_db.url, "127.0.0.1", "disable", None)
        .await
        .unwrap();
    assert!(!encrypted(&plain).await);
    let required = connect(&test_db.url, "127.0.0.1", "require", None)
        .await
        .unwrap();
    assert!(encrypted(&required).await, "sslmode=require encrypts");

    // The server's own certificate as the root: valid for the name it carries, not for another.
    let cert_file: String = sqlx::query_scalar("SHOW ssl_cert_file")
        .fetch_one(&admin.pool)
        .await
        .unwrap();
    let cert = std::fs::read_to_string(&cert_file).expect("the server's certificate is readable");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.pem");
    std::fs::write(&root, cert).unwrap();
    let root = root.to_str().unwrap();
    let verified = connect(&test_db.url, "localhost", "verify-full", Some(root))
        .await
        .expect("verify-full with the right root and name");
    assert!(encrypted(&verified).await);
    let wrong_name = connect(&test_db.url, "127.0.0.1", "verify-full", Some(root)).await;
    assert!(
        wrong_name.is_err(),
        "the certificate names localhost, not 127.0.0.1"
    );

    // A root that did not sign the server's certificate: refused, whatever the name.
    let public_roots = "/etc/ssl/certs/ca-certificates.crt";
    let wrong_root = connect(&test_db.url, "localhost", "verify-ca", Some(public_roots)).await;
    let error = wrong_root.expect_err("a certificate no root vouches for is refused");
    assert!(!error.to_string().contains(&test_db.url), "{error}");
}
