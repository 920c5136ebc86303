//! The binaries' command line: `--help` lists the settings, `token` signs a usable token.

use std::process::Command;

use courier_shared::auth::{JwtConfig, JwtVerifier};

const API: &str = env!("CARGO_BIN_EXE_courier-api");

#[test]
fn help_lists_every_setting() {
    let output = Command::new(API).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for variable in ["DATABASE_URL", "AMQP_URL", "JWT_SECRET", "JWT_PUBLIC_KEY_FILE", "API_ADDR", "NODE_ID", "BROKER_PREFIX"] {
        assert!(help.contains(&format!("env: {variable}")), "--help does not mention {variable}");
    }
}

#[test]
fn token_prints_a_token_the_server_accepts() {
    let secret = "cli-test-secret-0123456789";
    let output = Command::new(API)
        .args(["token", "--user", "dora", "--name", "Dora", "--ttl", "10m"])
        .env("JWT_SECRET", secret)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap();
    let config = JwtConfig { jwt_secret: secret.into(), jwt_public_key_file: None, jwt_audience: None, jwt_issuer: None };
    let claims = JwtVerifier::new(&config).unwrap().verify(token.trim()).unwrap();
    assert_eq!((claims.sub.as_str(), claims.name.as_deref()), ("dora", Some("Dora")));
    let lifetime = claims.exp - claims.iat.unwrap();
    assert_eq!(lifetime, 600);
}

#[test]
fn invalid_settings_fail_fast_with_one_line() {
    let output = Command::new(API).env("API_ADDR", "not-an-address").output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("API_ADDR") || stderr.contains("--api-addr"), "{stderr}");

    let output = Command::new(API).env("JWT_SECRET", "short").env("DATABASE_URL", "postgres://127.0.0.1:1/x").output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("JWT_SECRET must be at least 16 bytes"), "{stderr}");
}

#[test]
fn token_admin_flag_grants_the_admin_role() {
    let secret = "cli-test-secret-0123456789";
    let output = Command::new(API).args(["token", "--user", "ops", "--admin"]).env("JWT_SECRET", secret).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap();
    let config = JwtConfig { jwt_secret: secret.into(), jwt_public_key_file: None, jwt_audience: None, jwt_issuer: None };
    let claims = JwtVerifier::new(&config).unwrap().verify(token.trim()).unwrap();
    assert_eq!(claims.role.as_deref(), Some("admin"));
    assert!(claims.is_admin());
}
