//! The binaries' command line: `--help` lists the settings, `token` signs a usable token.

use std::process::Command;

use courier_shared::auth::{JwtConfig, JwtVerifier};

const API: &str = env!("CARGO_BIN_EXE_courier-api");

#[test]
fn help_lists_every_setting() {
    let output = Command::new(API).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for variable in ["DATABASE_URL", "AMQP_URL", "JWT_SECRET", "JWT_PUBLIC_KEY_FILE", "API_ADDR", "ADMIN_ADDR", "NODE_ID", "BROKER_PREFIX"] {
        assert!(help.contains(&format!("env: {variable}")), "--help does not mention {variable}");
    }
    assert!(help.contains("refuses to start"), "--help says what happens without JWT_SECRET");
}

/// A command of the API binary with no key configured and a database that is
/// never reached: the key check comes first.
fn api_without_a_key() -> Command {
    let mut command = Command::new(API);
    for variable in ["JWT_SECRET", "JWT_PUBLIC_KEY_FILE", "DEV_TOKENS", "INSECURE_DEV_SECRET"] {
        command.env_remove(variable);
    }
    command.env("DATABASE_URL", "postgres://127.0.0.1:1/x");
    command
}

#[test]
fn serve_refuses_to_start_without_a_key() {
    let output = api_without_a_key().arg("serve").output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no JWT key configured") && stderr.contains("--insecure-dev-secret"), "{stderr}");
}

#[test]
fn token_refuses_to_sign_without_a_key_or_with_a_short_one() {
    let output = api_without_a_key().args(["token", "--user", "dora"]).output().unwrap();
    assert!(!output.status.success(), "signed with the built-in secret");
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no JWT key configured"));

    let output = api_without_a_key().args(["token", "--user", "dora"]).env("JWT_SECRET", "short").output().unwrap();
    assert!(!output.status.success(), "signed with a secret the server refuses");
    assert!(String::from_utf8_lossy(&output.stderr).contains("at least 16 bytes"));

    // Asked for explicitly, the public secret signs (and the server accepts it only under the same flag).
    let output = api_without_a_key().args(["--insecure-dev-secret", "token", "--user", "dora"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap();
    let insecure = JwtConfig { insecure_dev_secret: true, ..Default::default() };
    assert_eq!(JwtVerifier::new(&insecure, false).unwrap().verify(token.trim()).unwrap().sub, "dora");
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
    let config = JwtConfig { jwt_secret: Some(secret.into()), ..Default::default() };
    let claims = JwtVerifier::new(&config, false).unwrap().verify(token.trim()).unwrap();
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
    let config = JwtConfig { jwt_secret: Some(secret.into()), ..Default::default() };
    let claims = JwtVerifier::new(&config, false).unwrap().verify(token.trim()).unwrap();
    assert_eq!(claims.role.as_deref(), Some("admin"));
    assert!(claims.is_admin());
}
