//! AWS Signature Version 4: what lets boto3, the AWS CLI and the AWS SDKs call Basalt with an
//! access key id and secret access key (`basalt keys create --aws`), and Basalt call Bedrock.
//! The server rebuilds the canonical request from what arrived, signs it with the key's secret
//! and compares in constant time; the secret never travels. A client signs with [`sign`].
//!
//! Only the `Authorization` header form is accepted (not presigned URLs), with
//! `AWS4-HMAC-SHA256`. The canonical URI is the request path encoded once more, as the SDKs do
//! for every service but S3.

/// The algorithm this module verifies.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Most seconds a request's `X-Amz-Date` may be from the server's clock (AWS's own limit).
pub const MAX_SKEW_SECONDS: i64 = 300;

/// The parts of an `Authorization: AWS4-HMAC-SHA256 …` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD` of the credential scope.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lower-case header names, in the order signed.
    pub signed_headers: Vec<String>,
    /// Lower-case hex.
    pub signature: String,
}

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The header or the date cannot be read; the message says what is wrong.
    Malformed(String),
    /// The request's date is more than [`MAX_SKEW_SECONDS`] from now.
    Expired { request: String },
    /// The signature does not match the one the secret gives.
    WrongSignature,
}

impl Authorization {
    /// Parses the header's value; `None` when it is not SigV4 at all.
    pub fn parse(value: &str) -> Option<Result<Authorization, Refusal>> {
        let rest = value.trim().strip_prefix(ALGORITHM)?;
        Some(Self::parse_fields(rest))
    }

    fn parse_fields(rest: &str) -> Result<Authorization, Refusal> {
        let malformed = |what: &str| Refusal::Malformed(format!("the Authorization header {what}"));
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for field in rest.split(',') {
            let Some((name, value)) = field.trim().split_once('=') else {
                continue;
            };
            match name.trim() {
                "Credential" => credential = Some(value.trim()),
                "SignedHeaders" => signed = Some(value.trim()),
                "Signature" => signature = Some(value.trim()),
                _ => {}
            }
        }
        let credential = credential.ok_or_else(|| malformed("has no Credential"))?;
        let parts: Vec<&str> = credential.split('/').collect();
        let [access_key_id, date, region, service, "aws4_request"] = parts.as_slice() else {
            return Err(malformed(
                "has a Credential that is not KEY/DATE/REGION/SERVICE/aws4_request",
            ));
        };
        let signed_headers: Vec<String> = signed
            .ok_or_else(|| malformed("has no SignedHeaders"))?
            .split(';')
            .map(str::to_ascii_lowercase)
            .collect();
        if !signed_headers.iter().any(|name| name == "host") {
            return Err(malformed("does not sign the host header"));
        }
        let signature = signature
            .ok_or_else(|| malformed("has no Signature"))?
            .to_ascii_lowercase();
        Ok(Authorization {
            access_key_id: (*access_key_id).to_owned(),
            date: (*date).to_owned(),
            region: (*region).to_owned(),
            service: (*service).to_owned(),
            signed_headers,
            signature,
        })
    }
}

/// What was received, as the signature covers it.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub method: &'a str,
    /// The path as sent (still percent-encoded).
    pub path: &'a str,
    /// The query as sent, without `?`.
    pub query: &'a str,
    /// Every header (name in any case, value), repeated names included.
    pub headers: &'a [(&'a str, &'a str)],
    /// Lower-case hex SHA-256 of the body.
    pub payload_sha256: &'a str,
}

impl Received<'_> {
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| *value)
            .collect()
    }

    /// The request's `X-Amz-Date` (`YYYYMMDDTHHMMSSZ`).
    pub fn amz_date(&self) -> Option<&str> {
        self.header_values("x-amz-date").first().copied()
    }
}

/// Checks `received` against `authorization` signed with `secret`, at `now_unix` seconds.
pub fn verify(
    authorization: &Authorization,
    received: &Received<'_>,
    secret: &str,
    now_unix: i64,
) -> Result<(), Refusal> {
    let amz_date = received.amz_date().ok_or_else(|| {
        Refusal::Malformed(
            "the request has no X-Amz-Date header to check the signature's date against".into(),
        )
    })?;
    let signed_at = unix_from_amz_date(amz_date).ok_or_else(|| {
        Refusal::Malformed(format!("X-Amz-Date {amz_date:?} is not YYYYMMDDTHHMMSSZ"))
    })?;
    if authorization.date.len() != 8 || !amz_date.starts_with(&authorization.date) {
        return Err(Refusal::Malformed(format!(
            "the credential's date {} is not the date of X-Amz-Date {amz_date}",
            authorization.date
        )));
    }
    // SDKs encode a space in a query as %20; a `+`, which servers read as a space, would let
    // two different queries carry one signature.
    if received.query.contains('+') {
        return Err(Refusal::Malformed(
            "a signed query must encode spaces as %20, not +".into(),
        ));
    }
    // A declared payload hash is what the signature covers: it must be the body's.
    if let Some(declared) = received.header_values("x-amz-content-sha256").first()
        && !declared.eq_ignore_ascii_case(received.payload_sha256)
    {
        return Err(Refusal::Malformed(format!(
            "x-amz-content-sha256 {declared:?} is not the SHA-256 of the body (unsigned \
             payloads are not accepted)"
        )));
    }
    if (now_unix - signed_at).abs() > MAX_SKEW_SECONDS {
        return Err(Refusal::Expired {
            request: amz_date.to_owned(),
        });
    }
    let expected = signature(authorization, received, amz_date, secret);
    if constant_time_eq(expected.as_bytes(), authorization.signature.as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::WrongSignature)
    }
}

/// Who signs a request, and for what.
#[derive(Clone, Copy)]
pub struct Signer<'a> {
    pub access_key_id: &'a str,
    pub secret: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

impl std::fmt::Debug for Signer<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Signer")
            .field("access_key_id", &self.access_key_id)
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Signer<'_> {
    /// The `Authorization` header for `request` at `amz_date` (`YYYYMMDDTHHMMSSZ`, also sent as
    /// `X-Amz-Date`). Every header of `request` is signed; it must hold `host` and
    /// `x-amz-date`.
    pub fn authorization(&self, request: &Received<'_>, amz_date: &str) -> String {
        let mut signed_headers: Vec<String> = request
            .headers
            .iter()
            .map(|(name, _)| name.to_ascii_lowercase())
            .collect();
        signed_headers.sort();
        signed_headers.dedup();
        let authorization = Authorization {
            access_key_id: self.access_key_id.to_owned(),
            date: amz_date.get(..8).unwrap_or_default().to_owned(),
            region: self.region.to_owned(),
            service: self.service.to_owned(),
            signature: String::new(),
            signed_headers,
        };
        let signature = signature(&authorization, request, amz_date, self.secret);
        format!(
            "{ALGORITHM} Credential={}/{}/{}/{}/aws4_request, SignedHeaders={}, Signature={signature}",
            authorization.access_key_id,
            authorization.date,
            authorization.region,
            authorization.service,
            authorization.signed_headers.join(";"),
        )
    }
}

/// Now as `X-Amz-Date` writes it: `20261207T084100Z`.
pub fn now_amz_date() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(time::macros::format_description!(
        "[year][month][day]T[hour][minute][second]Z"
    ))
    .unwrap_or_default()
}

/// The signature `secret` gives the request.
pub fn signature(
    authorization: &Authorization,
    received: &Received<'_>,
    amz_date: &str,
    secret: &str,
) -> String {
    let scope = format!(
        "{}/{}/{}/aws4_request",
        authorization.date, authorization.region, authorization.service
    );
    let canonical = canonical_request(authorization, received);
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        crate::hex::sha256(canonical.as_bytes())
    );
    let mut key = hmac(
        format!("AWS4{secret}").as_bytes(),
        authorization.date.as_bytes(),
    );
    for part in [
        authorization.region.as_str(),
        authorization.service.as_str(),
        "aws4_request",
    ] {
        key = hmac(&key, part.as_bytes());
    }
    crate::hex::encode(&hmac(&key, string_to_sign.as_bytes()))
}

fn canonical_request(authorization: &Authorization, received: &Received<'_>) -> String {
    let mut headers = String::new();
    for name in &authorization.signed_headers {
        let values: Vec<String> = received
            .header_values(name)
            .into_iter()
            .map(|value| value.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        headers.push_str(name);
        headers.push(':');
        headers.push_str(&values.join(","));
        headers.push('\n');
    }
    let payload = received
        .header_values("x-amz-content-sha256")
        .first()
        .copied()
        .unwrap_or(received.payload_sha256);
    let path = if received.path.is_empty() {
        "/"
    } else {
        received.path
    };
    format!(
        "{}\n{}\n{}\n{headers}\n{}\n{payload}",
        received.method,
        encode(path, true),
        canonical_query(received.query),
        authorization.signed_headers.join(";"),
    )
}

/// The query's parameters decoded, encoded the canonical way and sorted.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (encode(&decode(name), false), encode(&decode(value), false))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// RFC 3986 encoding, as SigV4 and the AWS SDKs write URIs: unreserved characters stay,
/// every other byte is `%XX` (upper case); `/` stays too in a path.
pub fn encode(text: &str, path: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_' | b'.' | b'~')
            || (path && byte == b'/')
        {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Percent-decoding (`+` stays itself, as in a path); invalid escapes are kept as they are.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && let Some(value) = text
                .get(index + 1..index + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(value);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    crate::hex::hmac_sha256(key, data).to_vec()
}

/// Equal-length comparison whose time does not depend on where the bytes differ.
pub fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    let difference = left
        .iter()
        .zip(right)
        .fold(0_u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
}

/// Seconds since 1970 of `YYYYMMDDTHHMMSSZ`.
pub fn unix_from_amz_date(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 16
        || bytes[8] != b'T'
        || bytes[15] != b'Z'
        || !text[..8]
            .bytes()
            .chain(text[9..15].bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text[range].parse::<u16>().ok();
    let month = time::Month::try_from(u8::try_from(number(4..6)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(i32::from(number(0..4)?), month, number(6..8)? as u8)
        .ok()?;
    let at = date
        .with_hms(
            number(9..11)? as u8,
            number(11..13)? as u8,
            number(13..15)? as u8,
        )
        .ok()?;
    Some(at.assume_utc().unix_timestamp())
}

/// Seconds since 1970 now.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    /// AWS's published SigV4 test suite, case `get-vanilla`.
    #[test]
    fn the_aws_test_suite_vanilla_request_verifies() {
        let header = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
        let authorization = Authorization::parse(header)
            .expect("SigV4")
            .expect("parses");
        assert_eq!(authorization.access_key_id, "AKIDEXAMPLE");
        let headers = [
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ];
        let received = Received {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
            payload_sha256: &crate::hex::sha256(b""),
        };
        let now = unix_from_amz_date("20150830T123600Z").expect("a date");
        assert_eq!(verify(&authorization, &received, SECRET, now), Ok(()));
        assert_eq!(
            verify(&authorization, &received, "another secret", now),
            Err(Refusal::WrongSignature)
        );
        assert!(matches!(
            verify(
                &authorization,
                &received,
                SECRET,
                now + MAX_SKEW_SECONDS + 1
            ),
            Err(Refusal::Expired { .. })
        ));
        let changed = Received {
            method: "POST",
            ..received
        };
        assert_eq!(
            verify(&authorization, &changed, SECRET, now),
            Err(Refusal::WrongSignature)
        );
        // A declared body hash that is not the body's is refused, even when signed.
        let declared = [
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
            ("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD"),
        ];
        let unsigned = Received {
            headers: &declared,
            ..received
        };
        assert!(matches!(
            verify(&authorization, &unsigned, SECRET, now),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn a_signed_request_verifies_and_a_changed_one_does_not() {
        let amz_date = now_amz_date();
        let payload = crate::hex::sha256(b"{}");
        let headers = [
            ("host", "127.0.0.1:8080"),
            ("x-amz-date", amz_date.as_str()),
            ("content-type", "application/json"),
        ];
        let request = Received {
            method: "POST",
            path: "/model/kb%3Ahandbook/converse-stream",
            query: "",
            headers: &headers,
            payload_sha256: &payload,
        };
        let signer = Signer {
            access_key_id: "BSKA0000000000000001",
            secret: SECRET,
            region: "eu-central-1",
            service: "bedrock",
        };
        let header = signer.authorization(&request, &amz_date);
        let parsed = Authorization::parse(&header)
            .expect("SigV4")
            .expect("parses");
        assert_eq!(
            parsed.signed_headers,
            ["content-type", "host", "x-amz-date"]
        );
        assert_eq!(verify(&parsed, &request, SECRET, now_unix()), Ok(()));
        let other = crate::hex::sha256(b"{\"x\": 1}");
        let changed = Received {
            payload_sha256: &other,
            ..request
        };
        assert_eq!(
            verify(&parsed, &changed, SECRET, now_unix()),
            Err(Refusal::WrongSignature)
        );
    }

    #[test]
    fn canonical_parts_follow_the_specification() {
        assert_eq!(
            encode("/model/kb%3Ahandbook/converse", true),
            "/model/kb%253Ahandbook/converse"
        );
        assert_eq!(canonical_query("b=2&a=x%20y&c"), "a=x%20y&b=2&c=");
        assert_eq!(unix_from_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(unix_from_amz_date("20000301T000001Z"), Some(951_868_801));
        assert_eq!(unix_from_amz_date("2000-03-01"), None);
        assert!(Authorization::parse("Bearer x").is_none());
        assert!(matches!(
            Authorization::parse(
                "AWS4-HMAC-SHA256 Credential=A/B, SignedHeaders=host, Signature=00"
            ),
            Some(Err(Refusal::Malformed(_)))
        ));
    }
}
