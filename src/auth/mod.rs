//! Accounts, passwords, sessions and roles.

pub mod extract;
pub mod rate_limit;
pub mod routes;
pub mod store;
pub mod throttle;

/// Trims and lower-cases an address (dots are kept: they matter to most
/// mail servers), and checks its shape.
pub fn normalize_email(raw: &str) -> Result<String, &'static str> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Err("is required");
    }
    if email.len() > 255 {
        return Err("must be at most 255 characters");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err("must be a valid email address");
    };
    let valid = !local.is_empty()
        && local.len() <= 64
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !domain.contains('@')
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\\\"".contains(c));
    if valid {
        Ok(email)
    } else {
        Err("must be a valid email address")
    }
}

/// An organization name as given: trimmed, empty meaning none, at most 255
/// characters and no control characters.
pub fn check_organization(raw: Option<&str>) -> Result<Option<String>, &'static str> {
    let Some(org) = raw.map(str::trim).filter(|o| !o.is_empty()) else {
        return Ok(None);
    };
    if org.chars().count() > 255 {
        return Err("must be at most 255 characters");
    }
    if org.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(Some(org.to_string()))
}

/// The password policy of `api.md`: 8–128 characters with a lowercase letter,
/// an uppercase letter and a digit. The message names the rule broken.
pub fn check_password_policy(p: &str) -> Result<(), &'static str> {
    let n = p.chars().count();
    if n < 8 {
        return Err("must be at least 8 characters");
    }
    if n > 128 {
        return Err("must be at most 128 characters");
    }
    if !p.chars().any(|c| c.is_lowercase()) {
        return Err("must contain a lowercase letter");
    }
    if !p.chars().any(|c| c.is_uppercase()) {
        return Err("must contain an uppercase letter");
    }
    if !p.chars().any(|c| c.is_ascii_digit()) {
        return Err("must contain a digit");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lowercased_keeping_dots() {
        assert_eq!(
            normalize_email("  First.Last@Example.COM ").as_deref(),
            Ok("first.last@example.com")
        );
        assert!(normalize_email("no-at-sign").is_err());
        assert!(normalize_email("a@b").is_err());
        assert!(normalize_email("a b@c.de").is_err());
    }

    #[test]
    fn policy_names_the_rule() {
        assert_eq!(
            check_password_policy("Ab1"),
            Err("must be at least 8 characters")
        );
        assert_eq!(
            check_password_policy("abcdefg1"),
            Err("must contain an uppercase letter")
        );
        assert_eq!(
            check_password_policy("ABCDEFG1"),
            Err("must contain a lowercase letter")
        );
        assert_eq!(
            check_password_policy("Abcdefgh"),
            Err("must contain a digit")
        );
        assert!(check_password_policy("Abcdefg1").is_ok());
    }
}
