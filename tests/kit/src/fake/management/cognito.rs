//! Cognito's user-pool admin API: SigV4-signed `ListUsers` (with its
//! `Filter` and `PaginationToken`) and `AdminUpdateUserAttributes`, and the
//! SigV4 signing both sides use.

use super::*;

pub(super) fn cognito_record(state: &UpstreamState, stored: &StoredUser) -> Value {
    let u = &stored.user;
    let m = &stored.meta;
    let mut attributes = vec![json!({"Name": "sub", "Value": u.sub})];
    for (k, v) in cognito_attributes(u) {
        let value = match (k.as_str(), v) {
            ("cognito:username" | "cognito:groups", _) => continue,
            (_, Value::String(s)) => s,
            (_, other) => other.to_string(),
        };
        attributes.push(json!({"Name": k, "Value": value}));
    }
    let status = if state.new_password_required.contains(&u.sub) {
        "FORCE_CHANGE_PASSWORD"
    } else {
        "CONFIRMED"
    };
    json!({
        "Username": u.email,
        "Attributes": attributes,
        "UserCreateDate": m.created_ms as f64 / 1000.0,
        "UserLastModifiedDate": m.updated_ms as f64 / 1000.0,
        "Enabled": !u.blocked,
        "UserStatus": status,
    })
}

// ---------------------------------------------------------------------------
// Cognito: ListUsers and SigV4
// ---------------------------------------------------------------------------

fn sha256_hex(data: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

/// RFC 3986 unreserved characters stay, everything else is `%XX` (SigV4's
/// `UriEncode`).
fn aws_uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// SigV4's canonical request (AWS General Reference, "Create a canonical
/// request"): method, URI-encoded path (encoded twice for services other
/// than S3), sorted and encoded query, `name:value` lines for the signed
/// headers (lower-case names, values trimmed with inner runs of spaces
/// collapsed), the signed-header list, and the hex SHA-256 of the body.
/// `headers` are (name, value) pairs, a name given more than once has its
/// values joined with commas.
pub fn aws_canonical_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    signed_headers: &[&str],
    body: &[u8],
) -> String {
    let path = if path.is_empty() { "/" } else { path };
    let uri = aws_uri_encode(&aws_uri_encode(path, true), true);
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (aws_uri_encode(&k, false), aws_uri_encode(&v, false)))
        .collect();
    pairs.sort();
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut canonical_headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    format!(
        "{method}\n{uri}\n{query}\n{canonical_headers}\n{}\n{}",
        signed_headers.join(";"),
        sha256_hex(body)
    )
}

/// SigV4's signature over a canonical request: the string to sign
/// (`AWS4-HMAC-SHA256`, the request time, the credential scope, the hex
/// SHA-256 of the canonical request) HMAC'd with the key derived from the
/// secret through the date, region, service and `aws4_request`.
pub fn aws_sigv4_signature(
    secret: &str,
    amz_date: &str,
    region: &str,
    service: &str,
    canonical_request: &str,
) -> String {
    let date = &amz_date[..8.min(amz_date.len())];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    let k_signing = hmac_sha256(&k_service, b"aws4_request");
    hex(&hmac_sha256(&k_signing, string_to_sign.as_bytes()))
}

/// The headers of a SigV4-signed AWS JSON 1.1 `POST {url}` to Cognito with
/// `target` and `body` (`X-Amz-Date` now): `Content-Type`, `X-Amz-Target`,
/// `X-Amz-Date`, `Authorization`. `Host` is signed as reqwest sends it.
pub fn sign_cognito_request(url: &str, target: &str, body: &[u8]) -> Vec<(String, String)> {
    sign_cognito_request_at(url, target, body, &amz_date_now(), AWS_SECRET_ACCESS_KEY)
}

/// `X-Amz-Date` for now: `YYYYMMDDTHHMMSSZ` (UTC).
pub fn amz_date_now() -> String {
    let iso = iso8601(now());
    format!(
        "{}{}{}T{}{}{}Z",
        &iso[0..4],
        &iso[5..7],
        &iso[8..10],
        &iso[11..13],
        &iso[14..16],
        &iso[17..19]
    )
}

/// [`sign_cognito_request`] at a given `X-Amz-Date` with a given secret.
pub fn sign_cognito_request_at(
    url: &str,
    target: &str,
    body: &[u8],
    amz_date: &str,
    secret: &str,
) -> Vec<(String, String)> {
    let url = url::Url::parse(url).expect("an absolute URL");
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let mut headers = vec![
        (
            "content-type".to_string(),
            "application/x-amz-json-1.1".to_string(),
        ),
        ("host".to_string(), host),
        ("x-amz-date".to_string(), amz_date.to_string()),
        ("x-amz-target".to_string(), target.to_string()),
    ];
    let signed = ["content-type", "host", "x-amz-date", "x-amz-target"];
    let canonical = aws_canonical_request(
        "POST",
        url.path(),
        url.query().unwrap_or(""),
        &headers,
        &signed,
        body,
    );
    let signature = aws_sigv4_signature(
        secret,
        amz_date,
        COGNITO_REGION,
        COGNITO_SERVICE,
        &canonical,
    );
    headers.push((
        "authorization".to_string(),
        format!(
            "AWS4-HMAC-SHA256 Credential={AWS_ACCESS_KEY_ID}/{}/{COGNITO_REGION}/{COGNITO_SERVICE}/aws4_request, SignedHeaders={}, Signature={signature}",
            &amz_date[..8],
            signed.join(";")
        ),
    ));
    headers.retain(|(n, _)| n != "host");
    headers
}

/// `YYYYMMDDTHHMMSSZ` → epoch seconds.
fn parse_amz_date(d: &str) -> Option<i64> {
    if d.len() != 16 || !d.ends_with('Z') || d.as_bytes()[8] != b'T' {
        return None;
    }
    let iso = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &d[9..11],
        &d[11..13],
        &d[13..15]
    );
    parse_iso_ms(&iso).map(|ms| ms / 1000)
}

/// Checks a request's SigV4 `Authorization` as AWS does, with AWS's error
/// for each way it can be wrong (400 for these on its JSON APIs, 403 for a
/// missing one, as AWS's common errors list `MissingAuthenticationToken`).
fn verify_sigv4(
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Response> {
    let bad = |kind: &str, message: &str| aws_error(StatusCode::BAD_REQUEST, kind, message);
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(aws_error(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    let Some(rest) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return Err(bad(
            "IncompleteSignatureException",
            &format!(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization={auth}"
            ),
        ));
    };
    let mut parts: HashMap<&str, &str> = HashMap::new();
    for part in rest.split(',') {
        if let Some((k, v)) = part.trim().split_once('=') {
            parts.insert(k.trim(), v.trim());
        }
    }
    for required in ["Credential", "SignedHeaders", "Signature"] {
        if !parts.contains_key(required) {
            return Err(bad(
                "IncompleteSignatureException",
                &format!(
                    "Authorization header requires '{required}' parameter. Authorization={auth}"
                ),
            ));
        }
    }
    let Some(amz_date) = headers.get("x-amz-date").and_then(|v| v.to_str().ok()) else {
        return Err(bad(
            "IncompleteSignatureException",
            &format!(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization={auth}"
            ),
        ));
    };
    let credential: Vec<&str> = parts["Credential"].split('/').collect();
    if credential.len() != 5 {
        return Err(bad(
            "IncompleteSignatureException",
            &format!(
                "Credential should have at least 5 slash-separated parts: {}",
                parts["Credential"]
            ),
        ));
    }
    let (key_id, date, region, service, terminator) = (
        credential[0],
        credential[1],
        credential[2],
        credential[3],
        credential[4],
    );
    if key_id != AWS_ACCESS_KEY_ID {
        return Err(bad(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    if terminator != "aws4_request" {
        return Err(bad(
            "InvalidSignatureException",
            &format!(
                "Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'."
            ),
        ));
    }
    if region != COGNITO_REGION {
        return Err(bad(
            "InvalidSignatureException",
            &format!("Credential should be scoped to a valid region, not '{region}'. "),
        ));
    }
    if service != COGNITO_SERVICE {
        return Err(bad(
            "InvalidSignatureException",
            &format!("Credential should be scoped to correct service: '{COGNITO_SERVICE}'. "),
        ));
    }
    if !amz_date.starts_with(date) {
        return Err(bad(
            "InvalidSignatureException",
            &format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{date}' != '{}', from '{amz_date}'.",
                &amz_date[..8.min(amz_date.len())]
            ),
        ));
    }
    let Some(signed_at) = parse_amz_date(amz_date) else {
        return Err(bad(
            "IncompleteSignatureException",
            &format!("Date must be in ISO-8601 'basic format'. Got '{amz_date}'."),
        ));
    };
    // A signature is good for five minutes either side of the server's clock.
    if (now() - signed_at).abs() > 300 {
        return Err(bad(
            "InvalidSignatureException",
            &format!(
                "Signature expired: {amz_date} is now earlier or later than the server time by more than 5 min."
            ),
        ));
    }
    let signed: Vec<&str> = parts["SignedHeaders"].split(';').collect();
    if !signed.contains(&"host") {
        return Err(bad(
            "InvalidSignatureException",
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    let pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let canonical = aws_canonical_request(
        method.as_str(),
        uri.path(),
        uri.query().unwrap_or(""),
        &pairs,
        &signed,
        body,
    );
    let expected =
        aws_sigv4_signature(AWS_SECRET_ACCESS_KEY, amz_date, region, service, &canonical);
    let given = parts["Signature"];
    if !subtle_eq(expected.as_bytes(), given.as_bytes()) {
        return Err(bad(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        ));
    }
    Ok(())
}

/// A constant-time comparison, as a signature check should be.
fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `ListUsers`, after SigV4 and the gate.
pub(crate) fn list_users(
    s: &Shared,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let info = match gate(s, Api::ListUsers) {
        Ok(info) => info,
        Err(r) => return r,
    };
    if let Err(r) = verify_sigv4(&Method::POST, uri, headers, body) {
        return r;
    }
    with_rate_headers(s, list_users_page(s, headers, body), info)
}

/// The body of an admin operation on the pool, once the gate and SigV4
/// have passed: JSON naming this pool, or the vendor's error.
fn admin_request(
    s: &Shared,
    api: Api,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, Response> {
    gate(s, api)?;
    verify_sigv4(&Method::POST, uri, headers, body)?;
    let bad = |kind: &str, message: &str| aws_error(StatusCode::BAD_REQUEST, kind, message);
    let request =
        serde_json::from_slice::<Value>(body).map_err(|_| bad("SerializationException", ""))?;
    if request["UserPoolId"].as_str() != Some(COGNITO_POOL_ID) {
        return Err(bad(
            "ResourceNotFoundException",
            &format!("User pool {} does not exist.", request["UserPoolId"]),
        ));
    }
    Ok(request)
}

/// The user an admin operation's `Username` names: the user name or an
/// alias (the email, which is also the user name here, or the `sub`).
fn user_position(state: &UpstreamState, username: &str) -> Option<usize> {
    state
        .users
        .iter()
        .position(|u| u.user.sub == username || u.user.email.eq_ignore_ascii_case(username))
}

/// `AdminUpdateUserAttributes`, after the gate and SigV4: `Username` is the
/// user name or an alias (here the email, which is also the user name, or
/// the `sub`); every attribute must be in the pool's schema (standard, or
/// a declared `custom:` one). Answers `{}`.
pub(crate) fn admin_update_user_attributes(
    s: &Shared,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let request = match admin_request(s, Api::AdminUpdateUserAttributes, uri, headers, body) {
        Ok(request) => request,
        Err(r) => return r,
    };
    let bad = |kind: &str, message: &str| aws_error(StatusCode::BAD_REQUEST, kind, message);
    let (Some(username), Some(updates)) = (
        request["Username"].as_str(),
        request["UserAttributes"].as_array(),
    ) else {
        return bad(
            "InvalidParameterException",
            "1 validation error detected: Value null at 'userAttributes' failed to satisfy constraint: Member must not be null",
        );
    };
    let mut state = s.lock();
    let Some(pos) = user_position(&state, username) else {
        return bad("UserNotFoundException", "User does not exist.");
    };
    let mut rec = record(s, &state, &state.users[pos], true);
    let attrs = rec["Attributes"].as_array_mut().expect("attributes");
    for update in updates {
        let (Some(name), value) = (update["Name"].as_str(), update["Value"].as_str()) else {
            return bad("InvalidParameterException", "Attribute name is missing.");
        };
        let known = !name.starts_with("custom:")
            || COGNITO_CUSTOM_ATTRIBUTES.contains(&name)
            || attrs.iter().any(|a| a["Name"] == name);
        if !known || name == "sub" {
            return bad(
                "InvalidParameterException",
                "Attribute does not exist in the schema.\n",
            );
        }
        attrs.retain(|a| a["Name"] != name);
        // A blank value deletes the attribute.
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            attrs.push(json!({"Name": name, "Value": v}));
        }
    }
    let sub = state.users[pos].user.sub.clone();
    commit_record(s.flavor, &mut state, pos, rec);
    record_write(&mut state, Api::AdminUpdateUserAttributes, &sub, request);
    aws_json(StatusCode::OK, &json!({}))
}

/// An admin operation on one user (`AdminSetUserPassword`,
/// `AdminDisableUser`, `AdminEnableUser`), after the gate and SigV4: the
/// pool and `Username` (the user name or an alias) are checked, then
/// `apply` changes the user or answers the vendor's error. Answers `{}`.
pub(crate) fn admin_user_operation(
    s: &Shared,
    target: &str,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let api = match target {
        COGNITO_ADMIN_SET_USER_PASSWORD => Api::AdminSetUserPassword,
        COGNITO_ADMIN_DISABLE_USER => Api::AdminDisableUser,
        _ => Api::AdminEnableUser,
    };
    let request = match admin_request(s, api, uri, headers, body) {
        Ok(request) => request,
        Err(r) => return r,
    };
    let bad = |kind: &str, message: &str| aws_error(StatusCode::BAD_REQUEST, kind, message);
    let Some(username) = request["Username"].as_str() else {
        return bad(
            "InvalidParameterException",
            "1 validation error detected: Value null at 'username' failed to satisfy constraint: Member must not be null",
        );
    };
    let mut state = s.lock();
    let Some(pos) = user_position(&state, username) else {
        return bad("UserNotFoundException", "User does not exist.");
    };
    match api {
        Api::AdminSetUserPassword => {
            let Some(password) = request["Password"].as_str() else {
                return bad(
                    "InvalidParameterException",
                    "1 validation error detected: Value null at 'password' failed to satisfy constraint: Member must not be null",
                );
            };
            if request["Permanent"].as_bool() != Some(true) {
                // A temporary password would ask the user for a new one at
                // the next sign-in: not what a write-back means.
                return bad(
                    "InvalidParameterException",
                    "the fake takes permanent passwords only",
                );
            }
            if check_password_policy(&state, password).is_err() {
                return bad(
                    "InvalidPasswordException",
                    "Password did not conform with policy: Password not long enough",
                );
            }
            state.users[pos].user.password = password.to_string();
        }
        _ => {
            let blocked = api == Api::AdminDisableUser;
            let mut rec = record(s, &state, &state.users[pos], true);
            rec["Enabled"] = json!(!blocked);
            commit_record(s.flavor, &mut state, pos, rec);
            state.users[pos].user.blocked = blocked;
        }
    }
    let sub = state.users[pos].user.sub.clone();
    let mut shown = request;
    if let Some(p) = shown.get_mut("Password") {
        *p = json!("(redacted)");
    }
    record_write(&mut state, api, &sub, shown);
    aws_json(StatusCode::OK, &json!({}))
}

fn list_users_page(s: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    let bad = |kind: &str, message: &str| aws_error(StatusCode::BAD_REQUEST, kind, message);
    let invalid = |message: &str| bad("InvalidParameterException", message);
    let json_1_1 = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-amz-json-1.1"));
    let request = serde_json::from_slice::<Value>(body);
    let Some(request) = request.ok().filter(|_| json_1_1).filter(Value::is_object) else {
        return bad("SerializationException", "");
    };
    let Some(pool) = request.get("UserPoolId").and_then(Value::as_str) else {
        return invalid(
            "1 validation error detected: Value null at 'userPoolId' failed to satisfy constraint: Member must not be null",
        );
    };
    if pool != COGNITO_POOL_ID {
        return bad(
            "ResourceNotFoundException",
            &format!("User pool {pool} does not exist."),
        );
    }
    let limit = match request.get("Limit") {
        None | Some(Value::Null) => 60,
        Some(v) => match v.as_i64() {
            Some(n) if n > 60 => {
                return invalid(&format!(
                    "1 validation error detected: Value '{n}' at 'limit' failed to satisfy constraint: Member must have value less than or equal to 60"
                ));
            }
            Some(n) if n < 0 => {
                return invalid(&format!(
                    "1 validation error detected: Value '{n}' at 'limit' failed to satisfy constraint: Member must have value greater than or equal to 0"
                ));
            }
            Some(0) => 60,
            Some(n) => n as usize,
            None => return bad("SerializationException", ""),
        },
    };
    let filter = match request
        .get("Filter")
        .and_then(Value::as_str)
        .filter(|f| !f.trim().is_empty())
    {
        None => None,
        Some(f) => match parse_cognito_filter(f) {
            Some(parsed) => Some(parsed),
            None => return invalid("Invalid search filter."),
        },
    };
    let after = match request.get("PaginationToken").and_then(Value::as_str) {
        None => None,
        Some(token) => match URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| t.strip_prefix("v1:").map(String::from))
        {
            Some(sub) => Some(sub),
            None => return invalid("Invalid pagination token."),
        },
    };
    let wanted: Option<HashSet<String>> = request
        .get("AttributesToGet")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        });
    let mut state = s.lock();
    let idx = order(&mut state, Order::Id);
    let users = &state.users;
    let start = match &after {
        Some(sub) => idx.partition_point(|i| users[*i as usize].user.sub.as_str() <= sub.as_str()),
        None => 0,
    };
    let mut page: Vec<Value> = vec![];
    let mut last_sub = None;
    let mut more = false;
    for i in &idx[start..] {
        let u = &users[*i as usize];
        let rec = record(s, &state, u, true);
        if let Some(f) = &filter
            && !f.matches(&rec)
        {
            continue;
        }
        if page.len() == limit {
            more = true;
            break;
        }
        last_sub = Some(u.user.sub.clone());
        page.push(rec);
    }
    if let Some(wanted) = &wanted {
        for rec in &mut page {
            if let Some(attrs) = rec["Attributes"].as_array_mut() {
                attrs.retain(|a| a["Name"].as_str().is_some_and(|n| wanted.contains(n)));
            }
        }
    }
    let mut body = json!({"Users": page});
    if more && let Some(sub) = last_sub {
        body["PaginationToken"] = json!(URL_SAFE_NO_PAD.encode(format!("v1:{sub}")));
    }
    aws_json(StatusCode::OK, &body)
}

/// A `ListUsers` filter: `attribute = "value"` or `attribute ^= "prefix"`.
struct CognitoFilter {
    attribute: String,
    prefix: bool,
    value: String,
}

fn parse_cognito_filter(f: &str) -> Option<CognitoFilter> {
    let (attribute, prefix, value) = if let Some((a, v)) = f.split_once("^=") {
        (a, true, v)
    } else {
        let (a, v) = f.split_once('=')?;
        (a, false, v)
    };
    let attribute = attribute.trim().trim_matches('"').to_string();
    const SEARCHABLE: [&str; 10] = [
        "username",
        "email",
        "phone_number",
        "name",
        "given_name",
        "family_name",
        "preferred_username",
        "cognito:user_status",
        "status",
        "sub",
    ];
    if !SEARCHABLE.contains(&attribute.as_str()) {
        return None;
    }
    let value = value.trim();
    if value.len() < 2 || !value.starts_with('"') || !value.ends_with('"') {
        return None;
    }
    Some(CognitoFilter {
        attribute,
        prefix,
        value: value[1..value.len() - 1].to_string(),
    })
}

impl CognitoFilter {
    fn matches(&self, rec: &Value) -> bool {
        let actual = match self.attribute.as_str() {
            "username" => rec["Username"].as_str().map(String::from),
            "cognito:user_status" => rec["UserStatus"].as_str().map(String::from),
            "status" => Some(
                if rec["Enabled"] == json!(true) {
                    "Enabled"
                } else {
                    "Disabled"
                }
                .to_string(),
            ),
            name => rec["Attributes"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["Name"] == name))
                .and_then(|x| x["Value"].as_str())
                .map(String::from),
        };
        actual.is_some_and(|a| {
            if self.prefix {
                a.starts_with(&self.value)
            } else {
                a == self.value
            }
        })
    }
}
