//! AWS Cognito: the tokens its hosted UI and user-pool API issue, its token
//! endpoint's answers, `InitiateAuth` (AWS JSON 1.1), userInfo and
//! `/logout`, as the Amazon Cognito API Reference and the user-pool
//! endpoints' documentation describe them.

use super::*;

// ---------------------------------------------------------------------------
// Cognito: tokens, the token endpoint's answers and the user-pool API
// ---------------------------------------------------------------------------

/// A Cognito user's attributes as ID-token claims (`sub` aside):
/// `cognito:username` (the email), `email`, `email_verified` (boolean),
/// `name` when set, `cognito:groups` from an `app_metadata.groups` array of
/// strings, and `custom:k` for every string `app_metadata.k`.
pub(crate) fn cognito_attributes(user: &FakeUser) -> Map<String, Value> {
    let mut c = Map::new();
    c.insert("cognito:username".into(), json!(user.email));
    c.insert("email".into(), json!(user.email));
    c.insert("email_verified".into(), json!(user.email_verified));
    if let Some(name) = &user.name {
        c.insert("name".into(), json!(name));
    }
    if let Some(metadata) = user.app_metadata.as_object() {
        for (k, v) in metadata {
            if let Value::String(v) = v {
                c.insert(format!("custom:{k}"), json!(v));
            }
        }
        if let Some(groups) = metadata.get("groups").and_then(Value::as_array)
            && groups.iter().all(Value::is_string)
        {
            c.insert("cognito:groups".into(), json!(groups));
        }
    }
    c
}

/// How Cognito tokens are being handed out.
pub(super) enum CognitoGrant {
    /// Authorization code at `/oauth2/token`: a refresh token; an ID token
    /// (with `at_hash`) when `openid` was asked.
    Code,
    /// Hosted-UI implicit grant: no refresh token.
    Implicit,
    /// A refresh (token endpoint or `REFRESH_TOKEN_AUTH`) with this token,
    /// which stays valid: no new refresh token.
    Refresh(String),
    /// `InitiateAuth` `USER_PASSWORD_AUTH`: always an ID token (no
    /// `at_hash`), a refresh token, scope `aws.cognito.signin.user.admin`.
    InitiateAuth,
}

pub(super) struct CognitoTokens {
    pub(super) access_token: String,
    pub(super) id_token: Option<String>,
    pub(super) refresh_token: Option<String>,
    pub(super) expires_in: u64,
}

/// Signs and records Cognito's tokens; `None` when the user is gone.
pub(super) fn cognito_tokens(
    s: &Shared,
    issue: &Issue,
    grant: CognitoGrant,
) -> Option<CognitoTokens> {
    let (user, key, forger, tamper, ttl) = {
        let state = s.lock();
        (
            state.user_by_sub(&issue.sub)?,
            state.key.clone(),
            state.forger.clone(),
            state.tamper,
            state.access_token_ttl,
        )
    };
    let user = user.user;
    let iat = now();
    let exp = iat + ttl as i64;
    let issuer = s.issuer();
    let attributes = cognito_attributes(&user);
    let scope = match grant {
        CognitoGrant::InitiateAuth => COGNITO_ADMIN_SCOPE.to_string(),
        _ => issue.scope.clone(),
    };
    let event_id = uuid_from(&random_bytes(16));
    let header = json!({"kid": key.kid, "alg": "RS256"});

    let mut access = Map::new();
    access.insert("sub".into(), json!(issue.sub));
    if let Some(groups) = attributes.get("cognito:groups") {
        access.insert("cognito:groups".into(), groups.clone());
    }
    for (k, v) in [
        ("iss", json!(issuer)),
        ("version", json!(2)),
        ("client_id", json!(issue.client_id)),
        ("origin_jti", json!(issue.sid)),
        ("event_id", json!(event_id)),
        ("token_use", json!("access")),
        ("scope", json!(scope)),
        ("auth_time", json!(issue.auth_time)),
        ("exp", json!(exp)),
        ("iat", json!(iat)),
        ("jti", json!(uuid_from(&random_bytes(16)))),
        ("username", json!(user.email)),
    ] {
        access.insert(k.into(), v);
    }
    let access_token = key.sign_with_header(&header, &Value::Object(access));

    // Tokens from the user-pool API (and their refreshes) always carry an
    // ID token, without `at_hash`; the hosted UI's only with `openid`.
    let sdk = scope == COGNITO_ADMIN_SCOPE;
    let with_id_token = sdk || scope.split_whitespace().any(|s| s == "openid");
    let id_token = with_id_token.then(|| {
        let mut claims = attributes.clone();
        for (k, v) in [
            ("sub", json!(issue.sub)),
            ("iss", json!(issuer)),
            ("aud", json!(issue.client_id)),
            ("origin_jti", json!(issue.sid)),
            ("event_id", json!(event_id)),
            ("token_use", json!("id")),
            ("auth_time", json!(issue.auth_time)),
            ("exp", json!(exp)),
            ("iat", json!(iat)),
            ("jti", json!(uuid_from(&random_bytes(16)))),
        ] {
            claims.insert(k.into(), v);
        }
        if !sdk {
            claims.insert("at_hash".into(), json!(at_hash(&access_token)));
        }
        if let Some(nonce) = &issue.nonce {
            claims.insert("nonce".into(), json!(nonce));
        }
        tamper_claims(&mut claims, tamper, iat);
        let signer = match (tamper, &forger) {
            (Tamper::BadSignature, Some(forger)) => forger.clone(),
            _ => key.clone(),
        };
        signer.sign_with_header(&header, &Value::Object(claims))
    });

    let (refresh_token, origin) = match &grant {
        CognitoGrant::Code | CognitoGrant::InitiateAuth => {
            let rt = s.new_refresh_token(&issue.sub, &issue.client_id);
            (Some(rt.clone()), Some(rt))
        }
        CognitoGrant::Implicit => (None, None),
        CognitoGrant::Refresh(presented) => (None, Some(presented.clone())),
    };
    {
        let mut state = s.lock();
        state.access_tokens.insert(
            access_token.clone(),
            AccessGrant {
                sub: issue.sub.clone(),
                scope: scope.clone(),
                expires_at: exp,
                refresh_token: origin,
            },
        );
        if let Some(rt) = &refresh_token {
            state.refresh_tokens.insert(
                rt.clone(),
                RefreshGrant {
                    client_id: issue.client_id.clone(),
                    sub: issue.sub.clone(),
                    scope,
                    audience: None,
                    auth_time: issue.auth_time,
                    sid: issue.sid.clone(),
                    amr: issue.amr.clone(),
                },
            );
        }
    }
    Some(CognitoTokens {
        access_token,
        id_token,
        refresh_token,
        expires_in: ttl,
    })
}

/// The token endpoint's answer: `id_token` (when `openid`),
/// `access_token`, `refresh_token` (not on refresh), `expires_in`,
/// `token_type`; no `scope`.
pub(super) fn cognito_token_response(s: &Shared, issue: &Issue, grant: CognitoGrant) -> Response {
    let Some(tokens) = cognito_tokens(s, issue, grant) else {
        return problem(s, Problem::InvalidCode);
    };
    let mut body = json!({
        "access_token": tokens.access_token,
        "expires_in": tokens.expires_in,
        "token_type": "Bearer",
    });
    if let Some(id_token) = tokens.id_token {
        body["id_token"] = json!(id_token);
    }
    if let Some(rt) = tokens.refresh_token {
        body["refresh_token"] = json!(rt);
    }
    no_store(json_response(StatusCode::OK, &body))
}

/// Machine-to-machine: an access token whose `sub` is the client.
pub(super) fn cognito_client_credentials_grant(
    s: &Shared,
    client: &FakeClient,
    params: &HashMap<String, String>,
) -> Response {
    let (key, ttl) = {
        let state = s.lock();
        (state.key.clone(), state.access_token_ttl)
    };
    let iat = now();
    let scope = params.get("scope").cloned().unwrap_or_default();
    let access_token = key.sign_with_header(
        &json!({"kid": key.kid, "alg": "RS256"}),
        &json!({
            "sub": client.client_id, "token_use": "access", "scope": scope,
            "auth_time": iat, "iss": s.issuer(), "exp": iat + ttl as i64, "iat": iat,
            "version": 2, "jti": uuid_from(&random_bytes(16)), "client_id": client.client_id,
        }),
    );
    no_store(json_response(
        StatusCode::OK,
        &json!({"access_token": access_token, "expires_in": ttl, "token_type": "Bearer"}),
    ))
}

/// An AWS JSON 1.1 error: `{"__type", "message"}` (no `message` when
/// empty, as for the protocol-level errors) and `x-amzn-ErrorType`.
pub(crate) fn aws_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut body = json!({"__type": kind});
    if !message.is_empty() {
        body["message"] = json!(message);
    }
    let mut response = aws_json(status, &body);
    response.headers_mut().insert(
        HeaderName::from_static("x-amzn-errortype"),
        HeaderValue::from_str(kind).expect("error type header"),
    );
    response
}

pub(crate) fn aws_json(status: StatusCode, body: &Value) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response();
    response.headers_mut().insert(
        HeaderName::from_static("x-amzn-requestid"),
        HeaderValue::from_str(&uuid_from(&random_bytes(16))).expect("request id header"),
    );
    response
}

/// Cognito's user-pool API: `InitiateAuth`, and the signed `ListUsers` and
/// `AdminUpdateUserAttributes` (see [`Flavor::Cognito`]).
pub(super) async fn user_api(
    State(s): State<Arc<Shared>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bad = |kind: &str, message: &str| aws_error(StatusCode::BAD_REQUEST, kind, message);
    let invalid = |message: &str| bad("InvalidParameterException", message);
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if target == COGNITO_LIST_USERS {
        return management::cognito::list_users(&s, &uri, &headers, &body);
    }
    if target == COGNITO_ADMIN_UPDATE_USER_ATTRIBUTES {
        return management::cognito::admin_update_user_attributes(&s, &uri, &headers, &body);
    }
    if [
        COGNITO_ADMIN_SET_USER_PASSWORD,
        COGNITO_ADMIN_DISABLE_USER,
        COGNITO_ADMIN_ENABLE_USER,
    ]
    .contains(&target)
    {
        return management::cognito::admin_user_operation(&s, target, &uri, &headers, &body);
    }
    if target != COGNITO_INITIATE_AUTH {
        return bad("UnknownOperationException", "");
    }
    let json_1_1 = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-amz-json-1.1"));
    let request = serde_json::from_slice::<Value>(&body);
    let Some(request) = request.ok().filter(|_| json_1_1).filter(Value::is_object) else {
        return bad("SerializationException", "");
    };
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    const FLOWS: [&str; 8] = [
        "USER_SRP_AUTH",
        "REFRESH_TOKEN_AUTH",
        "REFRESH_TOKEN",
        "CUSTOM_AUTH",
        "ADMIN_NO_SRP_AUTH",
        "USER_PASSWORD_AUTH",
        "ADMIN_USER_PASSWORD_AUTH",
        "USER_AUTH",
    ];
    let (Some(flow), Some(client_id)) = (text(&request, "AuthFlow"), text(&request, "ClientId"))
    else {
        let field = if request.get("AuthFlow").is_none() {
            "authFlow"
        } else {
            "clientId"
        };
        return invalid(&format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: \
             Member must not be null"
        ));
    };
    if !FLOWS.contains(&flow.as_str()) {
        return invalid(&format!(
            "1 validation error detected: Value '{flow}' at 'authFlow' failed to satisfy \
             constraint: Member must satisfy enum value set: [{}]",
            FLOWS.join(", ")
        ));
    }
    let params: HashMap<String, String> = request
        .get("AuthParameters")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let client = s.lock().clients.get(&client_id).cloned();
    let Some(client) = client else {
        return bad(
            "ResourceNotFoundException",
            &format!("User pool client {client_id} does not exist."),
        );
    };
    match flow.as_str() {
        "USER_PASSWORD_AUTH" if !client.user_password_auth => {
            invalid("USER_PASSWORD_AUTH flow not enabled for this client")
        }
        "USER_PASSWORD_AUTH" => initiate_password_auth(&s, &client, &params),
        "REFRESH_TOKEN_AUTH" | "REFRESH_TOKEN" => initiate_refresh_auth(&s, &client, &params),
        "ADMIN_NO_SRP_AUTH" | "ADMIN_USER_PASSWORD_AUTH" => {
            invalid("Initiate Auth method not supported.")
        }
        "USER_SRP_AUTH" => invalid("USER_SRP_AUTH is not enabled for the client."),
        "CUSTOM_AUTH" => invalid("Custom auth lambda trigger is not configured for the user pool."),
        _ => invalid(&format!("{flow} flow not enabled for this client")),
    }
}

/// Why `SECRET_HASH` is refused, if it is: a client with a secret needs
/// one computed over any of `usernames` (the one sent, the user's own).
fn secret_hash_refusal(
    client: &FakeClient,
    params: &HashMap<String, String>,
    usernames: &[&str],
) -> Option<Response> {
    let secret = client.secret.as_ref()?;
    let id = &client.client_id;
    let message = match params.get("SECRET_HASH") {
        None => format!("Client {id} is configured for secret but secret was not received"),
        Some(given) => {
            let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
            let tag = STANDARD.decode(given.trim()).unwrap_or_default();
            if usernames
                .iter()
                .any(|u| hmac::verify(&key, format!("{u}{id}").as_bytes(), &tag).is_ok())
            {
                return None;
            }
            format!("Unable to verify secret hash for client {id}")
        }
    };
    Some(aws_error(
        StatusCode::BAD_REQUEST,
        "NotAuthorizedException",
        &message,
    ))
}

fn initiate_password_auth(
    s: &Shared,
    client: &FakeClient,
    params: &HashMap<String, String>,
) -> Response {
    let bad = |kind: &str, message: &str| aws_error(StatusCode::BAD_REQUEST, kind, message);
    let Some(username) = params.get("USERNAME").filter(|u| !u.is_empty()) else {
        return bad(
            "InvalidParameterException",
            "Missing required parameter USERNAME",
        );
    };
    let Some(password) = params.get("PASSWORD").filter(|p| !p.is_empty()) else {
        return bad(
            "InvalidParameterException",
            "Missing required parameter PASSWORD",
        );
    };
    let (user, prevent, new_password, locked) = {
        let state = s.lock();
        let user = state.user_by_login(s.flavor, username).map(|u| u.user);
        let new_password = user
            .as_ref()
            .is_some_and(|u| state.new_password_required.contains(&u.sub));
        let locked = user
            .as_ref()
            .is_some_and(|u| state.locked_out.contains(&u.sub));
        (
            user,
            state.prevent_user_existence_errors,
            new_password,
            locked,
        )
    };
    let mut usernames = vec![username.as_str()];
    if let Some(u) = &user {
        usernames.push(&u.email);
    }
    if let Some(refused) = secret_hash_refusal(client, params, &usernames) {
        return refused;
    }
    // The pool's lockout after repeated failures answers before the
    // password is looked at (Cognito Developer Guide, "User sign-in lockout
    // behavior for failed attempts").
    if locked {
        return bad("NotAuthorizedException", "Password attempts exceeded");
    }
    let user = match user {
        Some(u) if u.password == *password => u,
        None if !prevent => return bad("UserNotFoundException", "User does not exist."),
        _ => return bad("NotAuthorizedException", "Incorrect username or password."),
    };
    if user.blocked {
        return bad("NotAuthorizedException", "User is disabled.");
    }
    let session = || STANDARD.encode(random_bytes(192));
    if new_password {
        let mut attributes = Map::new();
        for (k, v) in cognito_attributes(&user) {
            match v {
                Value::String(v) => {
                    attributes.insert(k, json!(v));
                }
                Value::Bool(b) => {
                    attributes.insert(k, json!(b.to_string()));
                }
                _ => {}
            }
        }
        attributes.remove("cognito:username");
        attributes.remove("cognito:groups");
        return aws_json(
            StatusCode::OK,
            &json!({
                "ChallengeName": "NEW_PASSWORD_REQUIRED",
                "Session": session(),
                "ChallengeParameters": {
                    "USER_ID_FOR_SRP": user.email,
                    "requiredAttributes": "[]",
                    "userAttributes": Value::Object(attributes).to_string(),
                },
            }),
        );
    }
    if user.mfa_required {
        return aws_json(
            StatusCode::OK,
            &json!({
                "ChallengeName": "SOFTWARE_TOKEN_MFA",
                "Session": session(),
                "ChallengeParameters": {},
            }),
        );
    }
    let issue = Issue {
        client_id: client.client_id.clone(),
        sub: user.sub.clone(),
        scope: COGNITO_ADMIN_SCOPE.into(),
        nonce: None,
        audience: None,
        auth_time: now(),
        sid: s.new_sid(),
        amr: vec!["pwd"],
        refresh: None,
    };
    authentication_result(s, &issue, CognitoGrant::InitiateAuth)
}

fn initiate_refresh_auth(
    s: &Shared,
    client: &FakeClient,
    params: &HashMap<String, String>,
) -> Response {
    let bad = |kind: &str, message: &str| aws_error(StatusCode::BAD_REQUEST, kind, message);
    let Some(token) = params.get("REFRESH_TOKEN").filter(|t| !t.is_empty()) else {
        return bad(
            "InvalidParameterException",
            "Missing required parameter REFRESH_TOKEN",
        );
    };
    let (grant, user, revoked) = {
        let state = s.lock();
        let grant = state
            .refresh_tokens
            .get(token)
            .filter(|g| g.client_id == client.client_id)
            .cloned();
        let user = grant.as_ref().and_then(|g| state.user_by_sub(&g.sub));
        (grant, user, state.spent_refresh_tokens.contains(token))
    };
    let (Some(grant), Some(user)) = (grant, user) else {
        let message = if revoked {
            "Refresh Token has been revoked"
        } else {
            "Invalid Refresh Token"
        };
        return bad("NotAuthorizedException", message);
    };
    let given = params.get("USERNAME").map(String::as_str).unwrap_or("");
    if let Some(refused) =
        secret_hash_refusal(client, params, &[given, &user.user.email, &grant.sub])
    {
        return refused;
    }
    if user.user.blocked {
        return bad("NotAuthorizedException", "User is disabled.");
    }
    let issue = grant.reissue(&client.client_id, true);
    authentication_result(s, &issue, CognitoGrant::Refresh(token.clone()))
}

/// `{"AuthenticationResult": {…}, "ChallengeParameters": {}}`.
fn authentication_result(s: &Shared, issue: &Issue, grant: CognitoGrant) -> Response {
    let Some(tokens) = cognito_tokens(s, issue, grant) else {
        return aws_error(
            StatusCode::BAD_REQUEST,
            "UserNotFoundException",
            "User does not exist.",
        );
    };
    let mut result = json!({
        "AccessToken": tokens.access_token,
        "ExpiresIn": tokens.expires_in,
        "TokenType": "Bearer",
    });
    if let Some(id_token) = tokens.id_token {
        result["IdToken"] = json!(id_token);
    }
    if let Some(rt) = tokens.refresh_token {
        result["RefreshToken"] = json!(rt);
    }
    aws_json(
        StatusCode::OK,
        &json!({"AuthenticationResult": result, "ChallengeParameters": {}}),
    )
}

/// Cognito's userInfo: a token from the token endpoint with `openid`, and
/// the attributes with `email_verified` as a string; errors only in
/// `WWW-Authenticate` (no `Bearer` scheme, as Cognito writes it).
pub(super) fn cognito_userinfo(s: &Shared, bearer: Option<String>) -> Response {
    let refuse = |status: StatusCode, error: &str, description: &str| {
        let mut response = status.into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&format!(
                "error=\"{error}\", error_description=\"{description}\""
            ))
            .expect("header"),
        );
        response
    };
    let Some(token) = bearer.filter(|t| !t.is_empty()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Bad OAuth2 request at UserInfo Endpoint",
        );
    };
    let found = {
        let state = s.lock();
        state
            .access_tokens
            .get(&token)
            .filter(|g| g.expires_at > now())
            .filter(|g| g.scope.split_whitespace().any(|s| s == "openid"))
            .and_then(|g| state.user_by_sub(&g.sub).map(|u| (g.sub.clone(), u)))
    };
    let Some((sub, user)) = found else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "Access token is expired, disabled, or deleted, or the user has globally signed out.",
        );
    };
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(sub));
    for (k, v) in cognito_attributes(&user.user) {
        match (k.as_str(), v) {
            ("cognito:username", v) => {
                claims.insert("username".into(), v);
            }
            ("cognito:groups", _) => {}
            (_, Value::Bool(b)) => {
                claims.insert(k, json!(b.to_string()));
            }
            (_, v) => {
                claims.insert(k, v);
            }
        }
    }
    tamper_userinfo(s.lock().userinfo_tamper, &mut claims);
    let mut response = json_response(StatusCode::OK, &Value::Object(claims));
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, max-age=0, must-revalidate"),
    );
    response
}

/// Cognito's `/logout`: `client_id` (required) and `logout_uri` (redirected
/// to, nothing added), or `redirect_uri` and `response_type` (…) to sign in
/// again through `/oauth2/authorize`.
pub(super) fn cognito_logout(
    s: &Shared,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Response {
    let known = q
        .get("client_id")
        .is_some_and(|id| s.lock().clients.contains_key(id));
    let target = match (q.get("logout_uri"), q.get("redirect_uri")) {
        _ if !known => None,
        (Some(logout_uri), _) if url::Url::parse(logout_uri).is_ok() => Some(logout_uri.clone()),
        (None, Some(_)) => {
            let mut url = url::Url::parse(&s.url(&s.paths.authorize)).expect("authorize URL");
            url.query_pairs_mut().extend_pairs(q.iter());
            Some(url.to_string())
        }
        _ => None,
    };
    let Some(target) = target else {
        return error_page(
            s,
            StatusCode::BAD_REQUEST,
            "An error was encountered with the requested page.",
        );
    };
    if let Some(cookie) = read_cookie(headers, s.session_cookie()) {
        s.lock().sessions.remove(&cookie);
    }
    let mut response = redirect(&target);
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
