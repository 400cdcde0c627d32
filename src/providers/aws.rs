//! AWS Bedrock with stored credentials: Torii signs the upstream request with SigV4 itself
//! (the `aws-sigv4` crate of the AWS SDK for Rust does the signing).

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use serde::Deserialize;

/// The signing name of every Bedrock endpoint (`bedrock-runtime`, `bedrock-mantle`).
pub const BEDROCK_SERVICE: &str = "bedrock";

/// A stored Bedrock credential: the JSON object the provider-key API takes as `secret`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AwsCredentials {
    access_key_id: String,
    secret_access_key: String,
    /// The region the key is meant for; the request URL's region is the one signed.
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    session_token: Option<String>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials").field("region", &self.region).finish_non_exhaustive()
    }
}

impl AwsCredentials {
    /// Parses and checks a stored secret; the error says what is wrong without echoing it.
    pub fn parse(secret: &str) -> Result<Self, String> {
        let creds: Self = serde_json::from_str(secret).map_err(|e| {
            let what = match e.classify() {
                serde_json::error::Category::Data => e.to_string().split(" at line").next().unwrap_or("").to_string(),
                _ => "is not a JSON object".to_string(),
            };
            format!(
                "for aws-bedrock, a JSON object {{\"accessKeyId\", \"secretAccessKey\", \"region\", optional \"sessionToken\"}}: {what}"
            )
        })?;
        if creds.access_key_id.is_empty() || creds.secret_access_key.is_empty() {
            return Err("accessKeyId and secretAccessKey must not be empty".into());
        }
        if let Some(r) = &creds.region
            && (r.is_empty() || !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            return Err("region must look like us-east-1".into());
        }
        Ok(creds)
    }

    /// The key id's start, for the masked preview.
    #[must_use]
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }
}

/// The headers that carry a SigV4 signature (a client's own signature is replaced).
pub const SIGNATURE_HEADERS: &[&str] =
    &["authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256", "x-amz-user-agent"];

/// Where a signature is valid: the AWS region and service name (`bedrock` for Bedrock).
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// e.g. `us-east-1`.
    pub region: &'a str,
    /// e.g. `bedrock`.
    pub service: &'a str,
}

/// Signs `method url` with `body` and the given `content_type` for `scope`; returns the headers
/// to add (`authorization`, `x-amz-date`, and `x-amz-security-token` for session credentials).
/// `url` must be absolute and already percent-encoded as it goes on the wire.
pub fn sign_request(
    creds: &AwsCredentials,
    scope: Scope<'_>,
    method: &str,
    url: &str,
    content_type: Option<&str>,
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    let uri: actix_web::http::Uri = url.parse().map_err(|_| "the upstream URL cannot be signed".to_string())?;
    if uri.host().is_none_or(str::is_empty) {
        return Err("the upstream URL has no host to sign".into());
    }
    let identity: Identity = Credentials::new(
        creds.access_key_id.clone(),
        creds.secret_access_key.clone(),
        creds.session_token.clone(),
        None,
        "torii-stored-key",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(scope.region)
        .name(scope.service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing parameters: {e}"))?
        .into();
    let headers = content_type.map(|v| ("content-type", v)).into_iter();
    let signable = SignableRequest::new(method, url, headers, SignableBody::Bytes(body))
        .map_err(|e| format!("the request cannot be signed: {e}"))?;
    let (instructions, _) = sign(signable, &params).map_err(|e| format!("signing failed: {e}"))?.into_parts();
    Ok(instructions.headers().map(|(n, v)| (n.to_ascii_lowercase(), v.to_string())).collect())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn example() -> AwsCredentials {
        AwsCredentials::parse(
            r#"{"accessKeyId":"AKIDEXAMPLE","secretAccessKey":"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY","region":"us-east-1"}"#,
        )
        .unwrap()
    }

    /// AWS's published SigV4 test suite, `get-vanilla` (2015-08-30T12:36:00Z, service `service`),
    /// through Torii's own signing function.
    #[test]
    fn matches_the_aws_get_vanilla_vector() {
        let time = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let scope = Scope { region: "us-east-1", service: "service" };
        let h = sign_request(&example(), scope, "GET", "https://example.amazonaws.com/", None, &[], time).unwrap();
        let get = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(
            get("authorization"),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=host;x-amz-date, \
                 Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            )
        );
        assert_eq!(get("x-amz-security-token"), None);
    }

    #[test]
    fn signs_bedrock_with_region_and_session_token() {
        let mut creds = example();
        creds.session_token = Some("SESSION".into());
        let time = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let url = "https://bedrock-runtime.eu-west-1.amazonaws.com/model/m%3A0/invoke";
        let scope = Scope { region: "eu-west-1", service: BEDROCK_SERVICE };
        let h = sign_request(&creds, scope, "POST", url, Some("application/json"), b"{}", time).unwrap();
        let get = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(get("x-amz-security-token"), Some("SESSION"));
        let auth = get("authorization").unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/bedrock/aws4_request"));
        assert!(auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"), "{auth}");
    }

    #[test]
    fn bad_secrets_are_refused_without_echoing_them() {
        for bad in [
            "sk-plain-key",
            "{}",
            r#"{"accessKeyId":"A","secretAccessKey":""}"#,
            r#"{"accessKeyId":"A","secretAccessKey":"S","x":1}"#,
        ] {
            let e = AwsCredentials::parse(bad).unwrap_err();
            assert!(!e.contains("sk-plain-key"), "{e}");
        }
        assert!(format!("{:?}", example()).contains("us-east-1"));
        assert!(!format!("{:?}", example()).contains("EXAMPLEKEY"));
    }
}
