//! Cognito at the edge against moto, the AWS emulator from PyPI
//! (`moto[server]`), started by the test: its user-pool API and keys are
//! served at a local address while its tokens carry the AWS issuer, and
//! its discovery document is missing. `[upstream] api_endpoint` and
//! `[upstream.endpoints] jwks` are what make that work, as they do for
//! FIPS and VPC endpoints.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use switchyard::config::{UpstreamSettings, WriteBack, WriteKind, WriteMode};
use switchyard::store::UserState;

use crate::helpers::*;
use crate::upstream::{END_USER, login_through_proxy_at};
use switchyard_kit::fake::sign_cognito_request;
use switchyard_kit::fake::{AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, COGNITO_REGION};
use switchyard_kit::process::{Spawned, free_port, python_module};

const DEADLINE: Duration = Duration::from_secs(30);

/// `python3 -m moto.server` on a free port; killed when dropped.
struct Moto {
    _server: Spawned,
    url: String,
}

impl Moto {
    /// The server, answering; `None` (with a notice) when moto is not
    /// installed, which CI does not allow (.ci/run installs it).
    async fn start() -> Option<Self> {
        if !python_module("moto.server", "moto[server]") {
            return None;
        }
        let port = free_port();
        let mut server = Spawned::start(
            std::process::Command::new("python3")
                .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
                .arg(port.to_string()),
        );
        let url = format!("http://127.0.0.1:{port}/");
        // moto answers its own dashboard once it is up.
        let dashboard = format!("{url}moto-api/");
        server
            .wait_until(DEADLINE, || async {
                reqwest::get(&dashboard)
                    .await
                    .is_ok_and(|r| r.status().is_success())
            })
            .await;
        Some(Self {
            _server: server,
            url,
        })
    }

    /// One Cognito operation, SigV4-signed as an administrator would.
    async fn call(&self, operation: &str, body: Value) -> Value {
        let target = format!("AWSCognitoIdentityProviderService.{operation}");
        let body = body.to_string();
        let mut request = reqwest::Client::new().post(&self.url);
        for (k, v) in sign_cognito_request(&self.url, &target, body.as_bytes()) {
            request = request.header(k, v);
        }
        let response = request.body(body).send().await.unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{operation}: {status} {answer}");
        answer
    }
}

/// A pool with an app client allowing USER_PASSWORD_AUTH, and users with
/// permanent passwords.
struct Pool {
    id: String,
    client_id: String,
}

impl Pool {
    async fn create(moto: &Moto, users: &[(&str, &str)]) -> Self {
        let pool = moto
            .call(
                "CreateUserPool",
                json!({
                    "PoolName": "switchyard-test",
                    // The tests' shared password, whatever its shape.
                    "Policies": { "PasswordPolicy": {
                        "MinimumLength": 6,
                        "RequireUppercase": false,
                        "RequireLowercase": false,
                        "RequireNumbers": false,
                        "RequireSymbols": false,
                    } },
                }),
            )
            .await;
        let id = pool["UserPool"]["Id"].as_str().unwrap().to_string();
        let client = moto
            .call(
                "CreateUserPoolClient",
                json!({
                    "UserPoolId": id,
                    "ClientName": "switchyard",
                    "ExplicitAuthFlows": ["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
                    // What the ID token carries (as on AWS, a client reads
                    // the attributes it is given).
                    "ReadAttributes": ["email", "email_verified", "name"],
                }),
            )
            .await;
        let client_id = client["UserPoolClient"]["ClientId"]
            .as_str()
            .unwrap()
            .to_string();
        for (email, name) in users {
            moto.call(
                "AdminCreateUser",
                json!({
                    "UserPoolId": id,
                    "Username": email,
                    "UserAttributes": [
                        { "Name": "email", "Value": email },
                        { "Name": "email_verified", "Value": "true" },
                        { "Name": "name", "Value": name },
                    ],
                    "MessageAction": "SUPPRESS",
                }),
            )
            .await;
            moto.call(
                "AdminSetUserPassword",
                json!({ "UserPoolId": id, "Username": email, "Password": PASSWORD, "Permanent": true }),
            )
            .await;
        }
        Self { id, client_id }
    }

    /// The pool's user record (`AdminGetUser`).
    async fn user(&self, moto: &Moto, username: &str) -> Value {
        moto.call(
            "AdminGetUser",
            json!({ "UserPoolId": self.id, "Username": username }),
        )
        .await
    }

    /// `[upstream]` for this pool behind moto: the AWS issuer, the API and
    /// the keys at moto's address, no discovery.
    fn settings(&self, moto: &Moto) -> UpstreamSettings {
        let mut up = UpstreamSettings::for_provider("cognito");
        up.region = Some(COGNITO_REGION.into());
        up.user_pool_id = Some(self.id.clone());
        up.client_id = self.client_id.clone();
        up.api_endpoint = Some(moto.url.clone());
        up.endpoints.jwks = Some(format!("{}{}/.well-known/jwks.json", moto.url, self.id));
        up.token_keys_env = "SWITCHYARD_TEST_TOKEN_KEYS".into();
        up.timeout_secs = 5;
        up
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cognito_users_migrate_backfill_and_get_written_back_against_moto() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let pool = Pool::create(
        &moto,
        &[
            ("ivy@example.com", "Ivy Lee"),
            ("jon@example.com", "Jon Snow"),
        ],
    )
    .await;
    let mut up = pool.settings(&moto);
    up.management.aws_access_key_id_env = Some("SWITCHYARD_TEST_AWS_ACCESS_KEY_ID".into());
    up.management.aws_secret_access_key_env = Some("SWITCHYARD_TEST_AWS_SECRET_ACCESS_KEY".into());
    up.management.aws_session_token_env = Some("SWITCHYARD_TEST_NO_AWS_SESSION".into());
    // Sent before the local change commits, so the test reads the pool
    // right after the command.
    up.management.write_back = WriteBack(
        [WriteKind::Password, WriteKind::Profile, WriteKind::Blocked]
            .into_iter()
            .map(|k| (k, WriteMode::Blocking))
            .collect(),
    );
    let app = spawn_app_with(|s| {
        s.trusted_proxies = vec!["127.0.0.0/8".into()];
        s.password.failure_floor_ms = 10;
        s.upstream = Some(up.clone());
    })
    .await;
    app.add_client("web", false).await;

    // Lazy migration: the password is checked by InitiateAuth at moto, the
    // ID token (AWS issuer) against moto's keys.
    let issuer = format!(
        "https://cognito-idp.{COGNITO_REGION}.amazonaws.com/{}",
        pool.id
    );
    assert_eq!(app.state.upstream.as_ref().unwrap().client.issuer, issuer);
    let r = login_through_proxy_at(&app, "ivy@example.com", "wrong").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = login_through_proxy_at(&app, "ivy@example.com", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "back to the client");
    let ivy_sub = pool.user(&moto, "ivy@example.com").await["UserAttributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["Name"] == "sub")
        .and_then(|a| a["Value"].as_str())
        .unwrap()
        .to_string();
    let ivy = app
        .state
        .db
        .get_user(&ivy_sub)
        .await
        .unwrap()
        .expect("migrated under moto's sub");
    assert_eq!(ivy.state, UserState::Migrated);
    assert_eq!(ivy.profile.email.as_deref(), Some("ivy@example.com"));

    // Backfill: ListUsers at moto, signed for the pool's region.
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "[upstream]\n\
             provider = \"cognito\"\n\
             region = \"{COGNITO_REGION}\"\n\
             user_pool_id = \"{pool}\"\n\
             client_id = \"{client}\"\n\
             api_endpoint = \"{api}\"\n\
             token_keys_env = \"SWITCHYARD_TEST_TOKEN_KEYS\"\n\
             [upstream.endpoints]\n\
             jwks = \"{api}{pool}/.well-known/jwks.json\"\n",
            pool = pool.id,
            client = pool.client_id,
            api = moto.url,
        ),
    )
    .unwrap();
    let out = run_cli(
        &app._isolated,
        &[
            "--config",
            &config.path().to_string_lossy(),
            "backfill",
            "--json",
        ],
        None,
        &[
            ("AWS_ACCESS_KEY_ID", AWS_ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", AWS_SECRET_ACCESS_KEY),
            ("SWITCHYARD_LOG", "warn"),
        ],
    );
    assert!(
        out.status.success(),
        "backfill: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let jon = app
        .state
        .db
        .find_user_by_login("jon@example.com")
        .await
        .unwrap()
        .expect("backfilled from ListUsers");
    assert_eq!(jon.profile.name.as_deref(), Some("Jon Snow"));
    assert_eq!(
        app.state
            .db
            .get_user(&ivy_sub)
            .await
            .unwrap()
            .unwrap()
            .state,
        UserState::Migrated,
        "the migrated user stays migrated"
    );

    // Write-back: AdminSetUserPassword, AdminUpdateUserAttributes,
    // AdminDisableUser at moto, made by the operator's commands.
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), toml::to_string(&app.state.settings).unwrap()).unwrap();
    let operator = |args: &[&str], stdin: Option<&str>| {
        let mut all = vec!["--config", config.path().to_str().unwrap()];
        all.extend_from_slice(args);
        let out = run_cli(&app._isolated, &all, stdin, &[("SWITCHYARD_LOG", "warn")]);
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    const NEW_PASSWORD: &str = "a brand new passphrase for the pool";
    operator(
        &["users", "set-password", &ivy_sub, "--password-stdin"],
        Some(NEW_PASSWORD),
    );
    let moto_url = moto.url.clone();
    let initiate = |password: &'static str| {
        let url = moto_url.clone();
        let body = json!({
            "AuthFlow": "USER_PASSWORD_AUTH",
            "ClientId": pool.client_id,
            "AuthParameters": { "USERNAME": "ivy@example.com", "PASSWORD": password },
        })
        .to_string();
        async move {
            reqwest::Client::new()
                .post(url)
                .header("content-type", "application/x-amz-json-1.1")
                .header(
                    "x-amz-target",
                    "AWSCognitoIdentityProviderService.InitiateAuth",
                )
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert!(
        initiate(NEW_PASSWORD).await.is_success(),
        "the pool takes the new password"
    );
    assert!(
        !initiate(PASSWORD).await.is_success(),
        "and refuses the old one"
    );

    operator(&["users", "update", &ivy_sub, "--given-name", "Ivy"], None);
    let record = pool.user(&moto, "ivy@example.com").await;
    assert!(
        record["UserAttributes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["Name"] == "given_name" && a["Value"] == "Ivy"),
        "{record}"
    );

    operator(&["users", "block", &ivy_sub], None);
    let record = pool.user(&moto, "ivy@example.com").await;
    assert_eq!(record["Enabled"], false, "{record}");
    let _ = END_USER;
}
