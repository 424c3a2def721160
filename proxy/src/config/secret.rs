//! Secrets kept out of logs, `/status` and error messages (DESIGN.md §8): URLs with their
//! passwords replaced, for `Debug` and `Display` of everything that holds one.

/// `url` with the password of each `user:password@` part replaced by `***` (a Sentinel URL
/// may list several hosts; only the userinfo before `@` is secret).
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let (scheme, rest) = url.split_at(scheme_end);
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, hosts) = authority.split_at(at);
    let user = userinfo.split(':').next().unwrap_or_default();
    let redacted = if userinfo.contains(':') {
        format!("{user}:***")
    } else {
        // `redis://password@host` is a password without a user.
        "***".to_owned()
    };
    format!("{scheme}{redacted}{hosts}{path}")
}

/// A password as `Debug` shows it.
pub fn redact(password: &Option<String>) -> Option<&'static str> {
    password.as_ref().map(|_| "***")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_hidden() {
        assert_eq!(
            redact_url("redis://app:s3cret@10.0.0.1:6379/2"),
            "redis://app:***@10.0.0.1:6379/2"
        );
        assert_eq!(
            redact_url("redis://s3cret@host:6379"),
            "redis://***@host:6379"
        );
        assert_eq!(
            redact_url("redis+sentinel://u:p@s1:26379,s2:26379/mymaster"),
            "redis+sentinel://u:***@s1:26379,s2:26379/mymaster"
        );
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        assert_eq!(redact_url("not a url"), "not a url");
        assert!(!redact_url("redis://:p%40ss@h/0").contains("p%40ss"));
    }
}
