//! The OpenID Connect endpoints every flavor serves: discovery and JWKS,
//! the authorization endpoint and its hosted login page, the token endpoint
//! and its grants, userinfo, RFC 7009 revocation and logout. Where the
//! vendors differ (paths, error bodies, claim shapes) the difference is an
//! arm of a `match` on [`Flavor`] here; Cognito's answers, which share
//! little with the others', are in `cognito`.

use super::*;

// ---------------------------------------------------------------------------
// Discovery and JWKS
// ---------------------------------------------------------------------------

pub(super) async fn discovery(State(s): State<Arc<Shared>>) -> Response {
    let p = &s.paths;
    if s.flavor == Flavor::Cognito {
        // Cognito's document, field for field: no grant types, no PKCE
        // methods, no `end_session_endpoint`.
        return json_response(
            StatusCode::OK,
            &json!({
                "authorization_endpoint": s.url(&p.authorize),
                "id_token_signing_alg_values_supported": ["RS256"],
                "issuer": s.issuer(),
                "jwks_uri": s.url(&p.jwks),
                "response_types_supported": ["code", "token"],
                "revocation_endpoint": s.url(&p.revoke),
                "scopes_supported": ["openid", "email", "phone", "profile"],
                "subject_types_supported": ["public"],
                "token_endpoint": s.url(&p.token),
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "userinfo_endpoint": s.url(&p.userinfo),
            }),
        );
    }
    let mut grant_types = vec!["authorization_code", "refresh_token"];
    match s.flavor {
        Flavor::Auth0 => {
            grant_types.extend(["client_credentials", "password", AUTH0_PASSWORD_REALM])
        }
        Flavor::Okta | Flavor::Keycloak => grant_types.extend(["client_credentials", "password"]),
        Flavor::Generic | Flavor::Cognito => {}
    }
    let mut doc = json!({
        "issuer": s.issuer(),
        "authorization_endpoint": s.url(&p.authorize),
        "token_endpoint": s.url(&p.token),
        "userinfo_endpoint": s.url(&p.userinfo),
        "jwks_uri": s.url(&p.jwks),
        "revocation_endpoint": s.url(&p.revoke),
        "end_session_endpoint": s.url(&p.logout[0]),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": grant_types,
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": match s.flavor {
            Flavor::Auth0 => json!(["aud", "auth_time", "email", "email_verified", "exp", "iat",
                "iss", "name", "nickname", "picture", "sid", "sub", "updated_at"]),
            Flavor::Okta => json!(["aud", "auth_time", "email", "email_verified", "exp", "iat",
                "iss", "name", "preferred_username", "sub", "updated_at", "ver", "jti", "amr", "idp"]),
            Flavor::Keycloak => json!(["aud", "sub", "iss", "auth_time", "name", "given_name",
                "family_name", "preferred_username", "email", "email_verified", "acr"]),
            Flavor::Generic | Flavor::Cognito => json!(["aud", "auth_time", "email", "email_verified", "exp", "iat",
                "iss", "name", "picture", "sub", "updated_at"]),
        },
        "request_uri_parameter_supported": false,
    });
    if s.flavor.sends_iss_in_authorization_response() {
        doc["authorization_response_iss_parameter_supported"] = json!(true);
    }
    if s.flavor == Flavor::Auth0 {
        doc["mfa_challenge_endpoint"] = json!(s.url("/mfa/challenge"));
        doc["device_authorization_endpoint"] = json!(s.url("/oauth/device/code"));
    }
    json_response(StatusCode::OK, &doc)
}

pub(super) async fn jwks(State(s): State<Arc<Shared>>) -> Response {
    let key = s.lock().key.clone();
    json_response(StatusCode::OK, &json!({"keys": [key.jwk]}))
}

// ---------------------------------------------------------------------------
// Authorization endpoint and the hosted login page
// ---------------------------------------------------------------------------

pub(super) async fn authorize(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let session_cookie = read_cookie(&headers, s.session_cookie());
    let (client, session) = {
        let mut state = s.lock();
        state.last_authorize = Some(q.clone());
        let client = q
            .get("client_id")
            .and_then(|id| state.clients.get(id).cloned());
        let session = session_cookie.and_then(|c| state.sessions.get(&c).cloned());
        (client, session)
    };
    // Before the redirect URI is known good, errors are a page, never a
    // redirect (RFC 6749 §4.1.2.1).
    let Some(client) = client else {
        let message = match s.flavor {
            Flavor::Auth0 => "Unknown client",
            Flavor::Okta => "Invalid value for 'client_id' parameter.",
            Flavor::Keycloak => "Client not found.",
            Flavor::Generic => "Unknown client_id",
            Flavor::Cognito => "An error was encountered with the requested page. (invalid_client)",
        };
        return error_page(&s, StatusCode::BAD_REQUEST, message);
    };
    let redirect_uri = q.get("redirect_uri").cloned().unwrap_or_default();
    if !client.redirect_uris.contains(&redirect_uri) {
        let message = match s.flavor {
            Flavor::Auth0 => "Callback URL mismatch.",
            Flavor::Okta => {
                "The 'redirect_uri' parameter must be a Login redirect URI in the client app settings"
            }
            Flavor::Keycloak => "Invalid parameter: redirect_uri",
            Flavor::Generic => "redirect_uri is not registered for this client",
            Flavor::Cognito => {
                "An error was encountered with the requested page. (redirect_mismatch)"
            }
        };
        return error_page(&s, StatusCode::BAD_REQUEST, message);
    }
    let tx = Transaction {
        client_id: client.client_id.clone(),
        redirect_uri,
        response_type: q.get("response_type").cloned().unwrap_or_default(),
        state: q.get("state").cloned(),
        nonce: q.get("nonce").cloned(),
        scope: q.get("scope").cloned().unwrap_or_default(),
        challenge: q.get("code_challenge").cloned(),
        audience: q.get("audience").cloned(),
        login_hint: q.get("login_hint").cloned(),
    };
    let fail = |error: &str, description: &str| error_redirect(&s, &tx, error, description);
    let implicit = s.flavor == Flavor::Cognito && tx.response_type == "token";
    if tx.response_type != "code" && !implicit {
        return fail(
            "unsupported_response_type",
            "Unsupported response_type; only code is supported",
        );
    }
    if tx.challenge.is_some() && q.get("code_challenge_method").map(String::as_str) != Some("S256")
    {
        return fail(
            "invalid_request",
            "code_challenge_method must be S256 (plain is not supported)",
        );
    }
    // Cognito does not insist on PKCE.
    if tx.challenge.is_none() && client.secret.is_none() && s.flavor != Flavor::Cognito {
        return fail(
            "invalid_request",
            "PKCE code challenge is required when the token endpoint authentication method is 'NONE'.",
        );
    }
    if s.flavor == Flavor::Okta && tx.state.is_none() {
        return fail(
            "invalid_request",
            "The authorization request is missing a required parameter: 'state'.",
        );
    }
    let prompt = q.get("prompt").cloned().unwrap_or_default();
    let prompts: Vec<&str> = prompt.split(' ').collect();
    // OIDC Core §3.1.2.1, as Auth0, Okta and Keycloak document it: a
    // session older than `max_age` does not count, and `prompt=login`
    // always shows the login page.
    let ignore = s.lock().ignore_reauthentication;
    let max_age = q.get("max_age").and_then(|m| m.parse::<i64>().ok());
    let session = session.filter(|s| ignore || max_age.is_none_or(|m| now() - s.auth_time <= m));
    if prompts.contains(&"none") {
        return match session {
            Some(session) => complete_authorization(&s, tx, &session),
            None => fail("login_required", "Login required"),
        };
    }
    if let Some(session) = session
        && (ignore || !prompts.contains(&"login"))
    {
        return complete_authorization(&s, tx, &session);
    }
    let id = random_token();
    s.lock().transactions.insert(id.clone(), tx.clone());
    login_page(&s, &id, tx.login_hint.as_deref().unwrap_or(""), None)
}

pub(super) async fn login(
    State(s): State<Arc<Shared>>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let tx_id = form.get("tx").cloned().unwrap_or_default();
    let username = form.get("username").cloned().unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let (tx, user) = {
        let state = s.lock();
        (
            state.transactions.get(&tx_id).cloned(),
            state.user_by_login(s.flavor, &username),
        )
    };
    let Some(tx) = tx else {
        return error_page(
            &s,
            StatusCode::BAD_REQUEST,
            "Your login session has expired. Go back to the application and try again.",
        );
    };
    let user = match user {
        Some(u) if u.user.password == password => u.user,
        // Cognito's hosted UI tells an unknown user apart unless
        // PreventUserExistenceErrors is on.
        None if s.flavor == Flavor::Cognito && !s.lock().prevent_user_existence_errors => {
            return login_page(&s, &tx_id, &username, Some("User does not exist."));
        }
        _ => {
            let message = match s.flavor {
                Flavor::Auth0 => "Wrong email or password",
                Flavor::Okta => "Unable to sign in",
                Flavor::Keycloak | Flavor::Generic => "Invalid username or password.",
                Flavor::Cognito => "Incorrect username or password.",
            };
            return login_page(&s, &tx_id, &username, Some(message));
        }
    };
    if user.blocked {
        let message = match s.flavor {
            Flavor::Auth0 => "Your account has been blocked. Contact your administrator.",
            Flavor::Okta => "Unable to sign in",
            Flavor::Keycloak => "Account is disabled, contact your administrator.",
            Flavor::Generic => "Account disabled.",
            Flavor::Cognito => "User is disabled.",
        };
        return login_page(&s, &tx_id, &username, Some(message));
    }
    // A user with MFA passes the (simulated) second factor here: the
    // browser track is how such users migrate.
    let session = Session {
        sub: user.sub.clone(),
        auth_time: now(),
        sid: s.new_sid(),
        amr: if user.mfa_required {
            vec!["pwd", "mfa"]
        } else {
            vec!["pwd"]
        },
    };
    let cookie = random_token();
    {
        let mut state = s.lock();
        state.transactions.remove(&tx_id);
        state.sessions.insert(cookie.clone(), session.clone());
    }
    let mut response = complete_authorization(&s, tx, &session);
    let set_cookie = format!(
        "{}={cookie}; Path=/; HttpOnly; SameSite=Lax",
        s.session_cookie()
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_str(&set_cookie).expect("cookie header"),
    );
    response
}

/// Issues a code and redirects back to the client.
fn complete_authorization(s: &Shared, tx: Transaction, session: &Session) -> Response {
    if tx.response_type == "token" {
        return complete_implicit(s, tx, session);
    }
    let code = match s.flavor {
        Flavor::Keycloak => format!(
            "{}.{}.{}",
            uuid_from(&random_bytes(16)),
            session.sid,
            uuid_from(&random_bytes(16))
        ),
        Flavor::Cognito => uuid_from(&random_bytes(16)),
        _ => random_token(),
    };
    let mut params = vec![("code", code.clone())];
    if let Some(state) = &tx.state {
        params.push(("state", state.clone()));
    }
    if s.flavor == Flavor::Keycloak {
        params.push(("session_state", session.sid.clone()));
    }
    if s.flavor.sends_iss_in_authorization_response() {
        params.push(("iss", s.issuer()));
    }
    let location = with_query(&tx.redirect_uri, &params);
    s.lock().codes.insert(
        code,
        CodeGrant {
            tx,
            sub: session.sub.clone(),
            auth_time: session.auth_time,
            sid: session.sid.clone(),
            amr: session.amr.clone(),
            expires_at: now() + 60,
        },
    );
    redirect(&location)
}

/// Cognito's implicit grant: the tokens (no refresh token) in the
/// fragment of the redirect.
fn complete_implicit(s: &Shared, tx: Transaction, session: &Session) -> Response {
    let issue = Issue {
        client_id: tx.client_id.clone(),
        sub: session.sub.clone(),
        scope: tx.scope.clone(),
        nonce: tx.nonce.clone(),
        audience: None,
        auth_time: session.auth_time,
        sid: session.sid.clone(),
        amr: session.amr.clone(),
        refresh: None,
    };
    let Some(tokens) = cognito_tokens(s, &issue, CognitoGrant::Implicit) else {
        return error_redirect(s, &tx, "server_error", "The user no longer exists");
    };
    let mut fragment = form_urlencoded::Serializer::new(String::new());
    if let Some(id_token) = &tokens.id_token {
        fragment.append_pair("id_token", id_token);
    }
    fragment
        .append_pair("access_token", &tokens.access_token)
        .append_pair("expires_in", &tokens.expires_in.to_string())
        .append_pair("token_type", "Bearer");
    if let Some(state) = &tx.state {
        fragment.append_pair("state", state);
    }
    let mut url = url::Url::parse(&tx.redirect_uri).expect("an absolute redirect URI");
    url.set_fragment(Some(&fragment.finish()));
    redirect(url.as_str())
}

fn error_redirect(s: &Shared, tx: &Transaction, error: &str, description: &str) -> Response {
    let mut params = vec![
        ("error", error.to_string()),
        ("error_description", description.to_string()),
    ];
    if let Some(state) = &tx.state {
        params.push(("state", state.clone()));
    }
    if s.flavor.sends_iss_in_authorization_response() {
        params.push(("iss", s.issuer()));
    }
    redirect(&with_query(&tx.redirect_uri, &params))
}

fn login_page(s: &Shared, tx: &str, username: &str, error: Option<&str>) -> Response {
    let (title, heading) = match s.flavor {
        Flavor::Auth0 => ("Log in | Acme", "Welcome"),
        Flavor::Okta => ("Acme - Sign In", "Sign In"),
        Flavor::Keycloak => ("Sign in to acme", "Sign in to your account"),
        Flavor::Generic => ("Sign in", "Sign in"),
        Flavor::Cognito => ("Signin", "Sign in with your email and password"),
    };
    let error = error
        .map(|e| {
            format!(
                r#"<div class="error" id="error" role="alert">{}</div>"#,
                escape(e)
            )
        })
        .unwrap_or_default();
    let html = format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title></head>
<body>
<h1>{heading}</h1>
{error}
<form method="post" action="{action}">
  <input type="hidden" name="tx" value="{tx}">
  <label>Email address <input type="text" name="username" value="{username}" autocomplete="username"></label>
  <label>Password <input type="password" name="password" autocomplete="current-password"></label>
  <button type="submit" name="action" value="default">Continue</button>
</form>
</body>
</html>
"#,
        action = escape(&s.url(&s.paths.login)),
        tx = escape(tx),
        username = escape(username),
    );
    html_response(StatusCode::OK, html)
}

pub(super) fn error_page(s: &Shared, status: StatusCode, message: &str) -> Response {
    let title = match s.flavor {
        Flavor::Keycloak => "We are sorry...",
        _ => "Error",
    };
    html_response(
        status,
        format!(
            "<!DOCTYPE html><html><head><title>{title}</title></head>\
             <body><h1>{title}</h1><p id=\"error\">{}</p></body></html>",
            escape(message)
        ),
    )
}

// ---------------------------------------------------------------------------
// Token endpoint
// ---------------------------------------------------------------------------

/// Why a token request failed; rendered in each vendor's words and status.
pub(super) enum Problem {
    WrongCredentials,
    Blocked,
    /// Locked by brute-force protection.
    LockedOut,
    MfaRequired,
    InvalidCode,
    RedirectMismatch,
    PkceFailed,
    InvalidRefreshToken,
    UnsupportedGrant(String),
    InvalidClient {
        basic: bool,
    },
    MissingParameter(&'static str),
    MissingScope,
}

pub(super) fn problem(s: &Shared, p: Problem) -> Response {
    use Flavor::*;
    let f = s.flavor;
    if f == Cognito {
        // Cognito's token and revocation endpoints: 400 and the code alone.
        let error = match p {
            Problem::WrongCredentials
            | Problem::Blocked
            | Problem::LockedOut
            | Problem::MfaRequired
            | Problem::InvalidCode
            | Problem::RedirectMismatch
            | Problem::PkceFailed
            | Problem::InvalidRefreshToken => "invalid_grant",
            Problem::UnsupportedGrant(_) => "unsupported_grant_type",
            Problem::InvalidClient { .. } => "invalid_client",
            Problem::MissingParameter(_) => "invalid_request",
            Problem::MissingScope => "invalid_scope",
        };
        return no_store(json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": error}),
        ));
    }
    // Cognito has answered above; it sits in Generic's arms below only to
    // keep the matches exhaustive.
    // Auth0 answers invalid_grant with 403.
    let grant_status = if f == Auth0 {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::BAD_REQUEST
    };
    let (status, error, description): (StatusCode, &str, String) = match p {
        Problem::WrongCredentials => match f {
            Auth0 => (grant_status, "invalid_grant", "Wrong email or password.".into()),
            Okta => (grant_status, "invalid_grant", "The credentials provided were invalid.".into()),
            Keycloak => (StatusCode::UNAUTHORIZED, "invalid_grant", "Invalid user credentials".into()),
            Generic | Cognito => (grant_status, "invalid_grant", "Invalid username or password".into()),
        },
        Problem::Blocked => match f {
            Auth0 => (StatusCode::UNAUTHORIZED, "unauthorized", "user is blocked".into()),
            Okta => (grant_status, "invalid_grant", "The credentials provided were invalid.".into()),
            Keycloak => (grant_status, "invalid_grant", "Account disabled".into()),
            Generic | Cognito => (grant_status, "invalid_grant", "Account disabled".into()),
        },
        Problem::LockedOut => match f {
            // Auth0 Authentication API, Resource Owner Password "Get Token":
            // brute-force protection answers 429 too_many_attempts.
            Auth0 => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "Your account has been blocked after multiple consecutive login attempts. We've sent you an email with instructions on how to unblock it.".into(),
            ),
            // Okta's password grant does not tell a locked-out user apart.
            Okta => (grant_status, "invalid_grant", "The credentials provided were invalid.".into()),
            // Keycloak's brute-force detection on the direct grant.
            Keycloak => (grant_status, "invalid_grant", "Account temporarily disabled".into()),
            Generic | Cognito => (grant_status, "invalid_grant", "Account temporarily locked".into()),
        },
        Problem::MfaRequired => match f {
            Auth0 => {
                let body = json!({
                    "error": "mfa_required",
                    "error_description": "Multifactor authentication required",
                    "mfa_token": URL_SAFE_NO_PAD.encode(random_bytes(32)),
                });
                return no_store(json_response(StatusCode::FORBIDDEN, &body));
            }
            Okta => (
                StatusCode::FORBIDDEN,
                "access_denied",
                "Policy evaluation failed for this request, please check the policy configurations.".into(),
            ),
            // The direct grant cannot complete the OTP step.
            Keycloak => (StatusCode::UNAUTHORIZED, "invalid_grant", "Invalid user credentials".into()),
            Generic | Cognito => (grant_status, "invalid_grant", "Multi-factor authentication required".into()),
        },
        Problem::InvalidCode => match f {
            Auth0 => (grant_status, "invalid_grant", "Invalid authorization code".into()),
            Okta => (grant_status, "invalid_grant", "The authorization code is invalid or has expired.".into()),
            Keycloak => (grant_status, "invalid_grant", "Code not valid".into()),
            Generic | Cognito => (grant_status, "invalid_grant", "invalid or expired authorization code".into()),
        },
        Problem::RedirectMismatch => match f {
            Auth0 => (grant_status, "invalid_grant", "Invalid redirect_uri".into()),
            Okta => (
                grant_status,
                "invalid_grant",
                "The 'redirect_uri' does not match the redirection URI used in the authorization request.".into(),
            ),
            Keycloak => (grant_status, "invalid_grant", "Incorrect redirect_uri".into()),
            Generic | Cognito => (grant_status, "invalid_grant", "redirect_uri mismatch".into()),
        },
        Problem::PkceFailed => match f {
            Auth0 => (grant_status, "invalid_grant", "Failed to verify code verifier".into()),
            Okta => (grant_status, "invalid_grant", "PKCE verification failed.".into()),
            Keycloak => (grant_status, "invalid_grant", "PKCE verification failed: Invalid code verifier".into()),
            Generic | Cognito => (grant_status, "invalid_grant", "PKCE verification failed".into()),
        },
        Problem::InvalidRefreshToken => match f {
            Auth0 => (grant_status, "invalid_grant", "Unknown or invalid refresh token.".into()),
            Okta => (grant_status, "invalid_grant", "The refresh token is invalid or expired.".into()),
            Keycloak => (grant_status, "invalid_grant", "Invalid refresh token".into()),
            Generic | Cognito => (grant_status, "invalid_grant", "invalid refresh token".into()),
        },
        Problem::UnsupportedGrant(g) => (
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            match f {
                Auth0 => format!("Unsupported grant type: {g}"),
                Okta => "The authorization grant type is not supported by the authorization server. Configured grant types: [authorization_code, refresh_token, password, client_credentials].".into(),
                Keycloak => "Unsupported grant_type".into(),
                Generic | Cognito => format!("grant_type {g} is not supported"),
            },
        ),
        Problem::InvalidClient { basic } => {
            let description = match f {
                Auth0 => "Client authentication failed",
                Okta => "Client authentication failed. Either the client or the client credentials are invalid.",
                Keycloak => "Invalid client or Invalid client credentials",
                Generic | Cognito => "client authentication failed",
            };
            let mut response = no_store(json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "invalid_client", "error_description": description}),
            ));
            if basic {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"token\""),
                );
            }
            return response;
        }
        Problem::MissingParameter(name) => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            match f {
                Okta => format!("The request is missing a required parameter: {name}."),
                Keycloak => format!("Missing parameter: {name}"),
                Auth0 | Generic | Cognito => format!("Missing required parameter: {name}"),
            },
        ),
        Problem::MissingScope => (
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "The authorization server resource does not have any configured default scopes, 'scope' must be provided.".into(),
        ),
    };
    no_store(json_response(
        status,
        &json!({"error": error, "error_description": description}),
    ))
}

pub(super) async fn token(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = parse_params(&headers, &body);
    let client = match authenticate_client(&s, &headers, &params) {
        Ok(c) => c,
        Err(p) => return problem(&s, p),
    };
    let grant_type = params.get("grant_type").cloned().unwrap_or_default();
    match grant_type.as_str() {
        "" => problem(&s, Problem::MissingParameter("grant_type")),
        "authorization_code" => authorization_code_grant(&s, &client, &params),
        "refresh_token" => refresh_token_grant(&s, &client, &params),
        "password" if s.flavor.supports_password_grant() => password_grant(&s, &client, &params),
        AUTH0_PASSWORD_REALM if s.flavor == Flavor::Auth0 => {
            if params.get("realm").is_none_or(|r| r.is_empty()) {
                return problem(&s, Problem::MissingParameter("realm"));
            }
            password_grant(&s, &client, &params)
        }
        "client_credentials" if s.flavor == Flavor::Cognito && client.secret.is_some() => {
            cognito_client_credentials_grant(&s, &client, &params)
        }
        "client_credentials" if s.flavor != Flavor::Generic && client.secret.is_some() => {
            client_credentials_grant(&s, &client, &params)
        }
        other => problem(&s, Problem::UnsupportedGrant(other.to_string())),
    }
}

/// Basic (RFC 6749 §2.3.1, form-encoded id and secret), `client_secret_post`,
/// or a public client's bare `client_id`.
fn authenticate_client(
    s: &Shared,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<FakeClient, Problem> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .map(|b| {
            let decoded = STANDARD
                .decode(b.trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .unwrap_or_default();
            let (id, secret) = decoded.split_once(':').unwrap_or((&decoded, ""));
            (form_decode(id), Some(form_decode(secret)))
        });
    let used_basic = basic.is_some();
    let (id, secret) = match basic {
        Some(pair) => pair,
        None => match params.get("client_id") {
            Some(id) => (id.clone(), params.get("client_secret").cloned()),
            None => return Err(Problem::InvalidClient { basic: false }),
        },
    };
    let client = s.lock().clients.get(&id).cloned();
    let invalid = || Problem::InvalidClient { basic: used_basic };
    let Some(client) = client else {
        return Err(invalid());
    };
    match (&client.secret, &secret) {
        (Some(expected), Some(given)) if expected == given => Ok(client),
        (Some(_), _) => Err(invalid()),
        (None, _) => Ok(client),
    }
}

fn authorization_code_grant(
    s: &Shared,
    client: &FakeClient,
    params: &HashMap<String, String>,
) -> Response {
    let Some(code) = params.get("code") else {
        return problem(s, Problem::MissingParameter("code"));
    };
    // Single use: the code is gone whatever happens next.
    let grant = s.lock().codes.remove(code);
    let Some(grant) = grant else {
        return problem(s, Problem::InvalidCode);
    };
    if grant.tx.client_id != client.client_id || grant.expires_at < now() {
        return problem(s, Problem::InvalidCode);
    }
    if params.get("redirect_uri") != Some(&grant.tx.redirect_uri) {
        return problem(s, Problem::RedirectMismatch);
    }
    if let Some(challenge) = &grant.tx.challenge {
        let verified = params.get("code_verifier").is_some_and(|v| {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, v.as_bytes());
            URL_SAFE_NO_PAD.encode(digest.as_ref()) == *challenge
        });
        if !verified {
            return problem(s, Problem::PkceFailed);
        }
    }
    issue_tokens(
        s,
        Issue {
            client_id: client.client_id.clone(),
            sub: grant.sub,
            scope: grant.tx.scope,
            nonce: grant.tx.nonce,
            audience: grant.tx.audience,
            auth_time: grant.auth_time,
            sid: grant.sid,
            amr: grant.amr,
            refresh: None,
        },
    )
}

fn refresh_token_grant(
    s: &Shared,
    client: &FakeClient,
    params: &HashMap<String, String>,
) -> Response {
    let Some(presented) = params.get("refresh_token") else {
        return problem(s, Problem::MissingParameter("refresh_token"));
    };
    let grant = {
        let mut state = s.lock();
        match state.refresh_tokens.get(presented) {
            // Cognito does not rotate: the token stays valid.
            Some(g) if g.client_id == client.client_id && s.flavor == Flavor::Cognito => {
                Some(g.clone())
            }
            Some(g) if g.client_id == client.client_id => {
                // Rotation: the presented token is spent.
                let g = state.refresh_tokens.remove(presented);
                state.spent_refresh_tokens.insert(presented.clone());
                g
            }
            _ => None,
        }
    };
    let Some(grant) = grant else {
        return problem(s, Problem::InvalidRefreshToken);
    };
    let user = s.lock().user_by_sub(&grant.sub);
    match user {
        None => return problem(s, Problem::InvalidRefreshToken),
        Some(u) if u.user.blocked => return problem(s, Problem::Blocked),
        Some(_) => {}
    }
    if s.flavor == Flavor::Cognito {
        let issue = grant.reissue(&client.client_id, true);
        return cognito_token_response(s, &issue, CognitoGrant::Refresh(presented.clone()));
    }
    issue_tokens(s, grant.reissue(&client.client_id, false))
}

fn password_grant(s: &Shared, client: &FakeClient, params: &HashMap<String, String>) -> Response {
    let (Some(username), Some(password)) = (params.get("username"), params.get("password")) else {
        let missing = if params.contains_key("username") {
            "password"
        } else {
            "username"
        };
        return problem(s, Problem::MissingParameter(missing));
    };
    let scope = match (params.get("scope"), s.flavor) {
        (Some(scope), _) => scope.clone(),
        (None, Flavor::Okta) => return problem(s, Problem::MissingScope),
        (None, Flavor::Keycloak) => "profile email".into(),
        (None, _) => "openid".into(),
    };
    let (user, locked) = {
        let state = s.lock();
        let user = state.user_by_login(s.flavor, username);
        let locked = user
            .as_ref()
            .is_some_and(|u| state.locked_out.contains(&u.user.sub));
        (user, locked)
    };
    // Brute-force protection answers before the password is looked at.
    if locked {
        return problem(s, Problem::LockedOut);
    }
    let user = match user {
        Some(u) if u.user.password == *password => u.user,
        _ => return problem(s, Problem::WrongCredentials),
    };
    if user.blocked {
        return problem(s, Problem::Blocked);
    }
    if user.mfa_required {
        return problem(s, Problem::MfaRequired);
    }
    issue_tokens(
        s,
        Issue {
            client_id: client.client_id.clone(),
            sub: user.sub,
            scope,
            nonce: None,
            audience: params.get("audience").cloned(),
            auth_time: now(),
            sid: s.new_sid(),
            amr: vec!["pwd"],
            refresh: None,
        },
    )
}

fn client_credentials_grant(
    s: &Shared,
    client: &FakeClient,
    params: &HashMap<String, String>,
) -> Response {
    let for_management = match management::client_credentials_audience(s, params) {
        Ok(m) => m,
        Err(refusal) => return refusal,
    };
    let (key, ttl) = {
        let state = s.lock();
        (state.key.clone(), state.access_token_ttl)
    };
    let iat = now();
    let audience = params
        .get("audience")
        .cloned()
        .unwrap_or_else(|| s.issuer());
    let scope = params.get("scope").cloned().unwrap_or_default();
    let access_token = key.sign(
        &key.kid,
        "JWT",
        &json!({
            "iss": s.issuer(), "sub": format!("{}@clients", client.client_id),
            "aud": audience, "iat": iat, "exp": iat + ttl as i64,
            "scope": scope, "gty": "client-credentials", "azp": client.client_id,
        }),
    );
    if for_management {
        management::record_management_token(s, &access_token, ttl);
    }
    no_store(json_response(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": scope,
        }),
    ))
}

fn issue_tokens(s: &Shared, issue: Issue) -> Response {
    if s.flavor == Flavor::Cognito {
        return cognito_token_response(s, &issue, CognitoGrant::Code);
    }
    let (user, key, forger, tamper, ttl) = {
        let state = s.lock();
        (
            state.user_by_sub(&issue.sub),
            state.key.clone(),
            state.forger.clone(),
            state.tamper,
            state.access_token_ttl,
        )
    };
    let Some(user) = user else {
        return problem(s, Problem::InvalidCode);
    };
    let scopes: Vec<&str> = issue.scope.split_whitespace().collect();
    let iat = now();
    // A test may ask for a lifetime past the end of the clock.
    let exp = iat.saturating_add(ttl as i64);
    let issuer = s.issuer();

    let access_token = match s.flavor {
        Flavor::Auth0 => match &issue.audience {
            Some(audience) => key.sign(
                &key.kid,
                "JWT",
                &json!({
                    "iss": issuer, "sub": issue.sub,
                    "aud": [audience, s.url("/userinfo")],
                    "iat": iat, "exp": exp, "scope": issue.scope, "azp": issue.client_id,
                }),
            ),
            // Without an audience Auth0 hands out an encrypted token the
            // client cannot read (JWE compact, `dir` + A256GCM).
            None => format!(
                "{}..{}.{}.{}",
                URL_SAFE_NO_PAD
                    .encode(json!({"alg": "dir", "enc": "A256GCM", "iss": issuer}).to_string()),
                URL_SAFE_NO_PAD.encode(random_bytes(12)),
                URL_SAFE_NO_PAD.encode(random_bytes(96)),
                URL_SAFE_NO_PAD.encode(random_bytes(16))
            ),
        },
        // Okta's access token names the login in `sub` and the id in `uid`.
        Flavor::Okta => key.sign(
            &key.kid,
            "application/okta-internal-at+jwt",
            &json!({
                "ver": 1, "jti": format!("AT.{}", URL_SAFE_NO_PAD.encode(random_bytes(24))),
                "iss": issuer, "aud": "api://default", "iat": iat, "exp": exp,
                "cid": issue.client_id, "uid": issue.sub, "scp": scopes,
                "auth_time": issue.auth_time, "sub": user.user.email,
            }),
        ),
        Flavor::Keycloak => key.sign(
            &key.kid,
            "JWT",
            &json!({
                "exp": exp, "iat": iat, "auth_time": issue.auth_time,
                "jti": uuid_from(&random_bytes(16)), "iss": issuer, "aud": "account",
                "sub": issue.sub, "typ": "Bearer", "azp": issue.client_id,
                "sid": issue.sid, "scope": issue.scope,
                "preferred_username": keycloak_username(&user.user),
                "email": user.user.email, "email_verified": user.user.email_verified,
            }),
        ),
        Flavor::Generic => URL_SAFE_NO_PAD.encode(random_bytes(32)),
        Flavor::Cognito => unreachable!("Cognito issues through cognito_tokens"),
    };

    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ttl,
        "scope": issue.scope,
    });

    if scopes.contains(&"openid") {
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(issuer));
        claims.insert("sub".into(), json!(issue.sub));
        claims.insert("aud".into(), json!(issue.client_id));
        claims.insert("iat".into(), json!(iat));
        let id_ttl = match s.flavor {
            Flavor::Auth0 => 36_000,
            Flavor::Keycloak | Flavor::Cognito => ttl as i64,
            Flavor::Okta | Flavor::Generic => 3_600,
        };
        claims.insert("exp".into(), json!(iat + id_ttl));
        claims.insert("auth_time".into(), json!(issue.auth_time));
        if let Some(nonce) = &issue.nonce {
            claims.insert("nonce".into(), json!(nonce));
        }
        match s.flavor {
            Flavor::Auth0 => {
                claims.insert("sid".into(), json!(issue.sid));
            }
            Flavor::Okta => {
                claims.insert("ver".into(), json!(1));
                claims.insert(
                    "jti".into(),
                    json!(format!("ID.{}", URL_SAFE_NO_PAD.encode(random_bytes(24)))),
                );
                claims.insert("amr".into(), json!(issue.amr));
                claims.insert("idp".into(), json!("00o1a2b3c4d5e6f7g8h9"));
                claims.insert("at_hash".into(), json!(at_hash(&access_token)));
            }
            Flavor::Keycloak => {
                claims.insert("jti".into(), json!(uuid_from(&random_bytes(16))));
                claims.insert("typ".into(), json!("ID"));
                claims.insert("azp".into(), json!(issue.client_id));
                claims.insert("sid".into(), json!(issue.sid));
                claims.insert("session_state".into(), json!(issue.sid));
                claims.insert("acr".into(), json!("1"));
                claims.insert("at_hash".into(), json!(at_hash(&access_token)));
            }
            Flavor::Generic => {
                claims.insert("sid".into(), json!(issue.sid));
                claims.insert("amr".into(), json!(issue.amr));
                claims.insert("at_hash".into(), json!(at_hash(&access_token)));
            }
            Flavor::Cognito => unreachable!("Cognito issues through cognito_tokens"),
        }
        claims.extend(profile_claims(s.flavor, &user, &scopes));
        tamper_claims(&mut claims, tamper, iat);
        let signer = match (tamper, &forger) {
            (Tamper::BadSignature, Some(forger)) => forger.clone(),
            _ => key.clone(),
        };
        body["id_token"] = json!(signer.sign(&key.kid, "JWT", &Value::Object(claims)));
    }

    let refresh_token = match &issue.refresh {
        Some(_) => true,
        None => s.flavor == Flavor::Keycloak || scopes.contains(&"offline_access"),
    }
    .then(|| s.new_refresh_token(&issue.sub, &issue.client_id));
    if let Some(rt) = &refresh_token {
        body["refresh_token"] = json!(rt);
        if s.flavor == Flavor::Keycloak {
            body["refresh_expires_in"] = json!(1800);
            body["session_state"] = json!(issue.sid);
            body["not-before-policy"] = json!(0);
        }
    }

    {
        let mut state = s.lock();
        state.access_tokens.insert(
            access_token,
            AccessGrant {
                sub: issue.sub.clone(),
                scope: issue.scope.clone(),
                expires_at: exp,
                refresh_token: refresh_token.clone(),
            },
        );
        if let Some(rt) = refresh_token {
            state.refresh_tokens.insert(
                rt,
                RefreshGrant {
                    client_id: issue.client_id,
                    sub: issue.sub,
                    scope: issue.scope,
                    audience: issue.audience,
                    auth_time: issue.auth_time,
                    sid: issue.sid,
                    amr: issue.amr,
                },
            );
        }
    }
    no_store(json_response(StatusCode::OK, &body))
}

/// The profile claims a vendor puts in ID tokens and userinfo for `scopes`.
fn profile_claims(flavor: Flavor, stored: &StoredUser, scopes: &[&str]) -> Map<String, Value> {
    let user = &stored.user;
    let profile = scopes.contains(&"profile");
    let email = scopes.contains(&"email");
    let mut c = Map::new();
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            c.insert(k.into(), v);
        }
    };
    match flavor {
        Flavor::Auth0 => {
            if profile {
                put("nickname", json!(user.nickname));
                put("name", json!(user.name));
                put("picture", json!(user.picture));
                // Auth0 sends `updated_at` as an ISO-8601 string, not the
                // number OIDC Core §5.1 specifies.
                put("updated_at", json!(iso8601(stored.updated_at)));
            }
            if email {
                put("email", json!(user.email));
                put("email_verified", json!(user.email_verified));
            }
            if let Some(roles) = user.app_metadata.get("roles") {
                put(AUTH0_ROLES_CLAIM, roles.clone());
            }
        }
        Flavor::Okta => {
            if profile {
                put("name", json!(user.name));
                put("preferred_username", json!(user.email));
                put("updated_at", json!(stored.updated_at));
            }
            if email {
                put("email", json!(user.email));
                put("email_verified", json!(user.email_verified));
            }
        }
        // Keycloak's default client scopes put these in whatever is asked.
        Flavor::Keycloak => {
            put("email_verified", json!(user.email_verified));
            if let Some(name) = &user.name {
                put("name", json!(name));
                let mut parts = name.splitn(2, ' ');
                put("given_name", json!(parts.next()));
                put("family_name", json!(parts.next()));
            }
            put("preferred_username", json!(keycloak_username(user)));
            put("email", json!(user.email));
        }
        Flavor::Generic => {
            if profile {
                put("name", json!(user.name));
                put("nickname", json!(user.nickname));
                put("picture", json!(user.picture));
                put("updated_at", json!(stored.updated_at));
            }
            if email {
                put("email", json!(user.email));
                put("email_verified", json!(user.email_verified));
            }
        }
        // Every readable attribute, whatever the scopes.
        Flavor::Cognito => c.extend(cognito_attributes(user)),
    }
    c
}

// ---------------------------------------------------------------------------
// Userinfo, revocation, logout
// ---------------------------------------------------------------------------

pub(super) async fn userinfo(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
        .or_else(|| parse_params(&headers, &body).remove("access_token"));
    if s.flavor == Flavor::Cognito {
        return cognito_userinfo(&s, bearer);
    }
    let Some(token) = bearer else {
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"userinfo\""),
        );
        return response;
    };
    let found = {
        let state = s.lock();
        state
            .access_tokens
            .get(&token)
            .filter(|g| g.expires_at > now())
            .and_then(|g| Some((g.clone(), state.user_by_sub(&g.sub)?)))
    };
    let Some((grant, user)) = found else {
        let description = match s.flavor {
            Flavor::Auth0 => "Invalid token",
            Flavor::Okta => "The access token is invalid.",
            Flavor::Keycloak => "Token verification failed",
            Flavor::Generic => "The access token is invalid or expired",
            Flavor::Cognito => unreachable!("Cognito answers in cognito_userinfo"),
        };
        let mut response = match s.flavor {
            Flavor::Auth0 => (StatusCode::UNAUTHORIZED, "Unauthorized").into_response(),
            _ => json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "invalid_token", "error_description": description}),
            ),
        };
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&format!(
                "Bearer error=\"invalid_token\", error_description=\"{description}\""
            ))
            .expect("header"),
        );
        return response;
    };
    let scopes: Vec<&str> = grant.scope.split_whitespace().collect();
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(grant.sub));
    claims.extend(profile_claims(s.flavor, &user, &scopes));
    tamper_userinfo(s.lock().userinfo_tamper, &mut claims);
    json_response(StatusCode::OK, &Value::Object(claims))
}

pub(super) async fn revoke(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = parse_params(&headers, &body);
    let client = match authenticate_client(&s, &headers, &params) {
        Ok(c) => c,
        Err(p) => return problem(&s, p),
    };
    let Some(token) = params.get("token").filter(|t| !t.is_empty()) else {
        return problem(&s, Problem::MissingParameter("token"));
    };
    let mut state = s.lock();
    if s.flavor == Flavor::Cognito {
        // Cognito revokes refresh tokens only, and with one every access
        // token issued with it or refreshed from it.
        if state.access_tokens.contains_key(token) {
            drop(state);
            return no_store(json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "unsupported_token_type"}),
            ));
        }
        state.revoked.push(token.clone());
        if state
            .refresh_tokens
            .get(token)
            .is_some_and(|g| g.client_id == client.client_id)
        {
            state.refresh_tokens.remove(token);
            state.spent_refresh_tokens.insert(token.clone());
            state
                .access_tokens
                .retain(|_, g| g.refresh_token.as_deref() != Some(token.as_str()));
        }
        return StatusCode::OK.into_response();
    }
    if state.access_tokens.remove(token).is_some() {
        return StatusCode::OK.into_response();
    }
    state.revoked.push(token.clone());
    // RFC 7009 §2.1: a token of another client is left alone, and the
    // answer is the same.
    if state
        .refresh_tokens
        .get(token)
        .is_some_and(|g| g.client_id == client.client_id)
    {
        state.refresh_tokens.remove(token);
        state.spent_refresh_tokens.insert(token.clone());
    }
    StatusCode::OK.into_response()
}

pub(super) async fn logout(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if s.flavor == Flavor::Cognito {
        return cognito_logout(&s, &headers, &q);
    }
    if let Some(cookie) = read_cookie(&headers, s.session_cookie()) {
        s.lock().sessions.remove(&cookie);
    }
    let target = q
        .get("returnTo")
        .or_else(|| q.get("post_logout_redirect_uri"))
        .filter(|t| !t.is_empty());
    let mut response = match target {
        Some(target) => {
            let mut params = vec![];
            if let Some(state) = q.get("state")
                && !q.contains_key("returnTo")
            {
                params.push(("state", state.clone()));
            }
            redirect(&with_query(target, &params))
        }
        None => html_response(
            StatusCode::OK,
            "<!DOCTYPE html><html><head><title>Signed out</title></head>\
             <body><p>You are signed out.</p></body></html>"
                .into(),
        ),
    };
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax",
            s.session_cookie()
        ))
        .expect("cookie header"),
    );
    response
}
