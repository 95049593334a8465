//! What a well-formed key looks like for each provider, and the masked form
//! shown back to its owner. A malformed key is refused before it is sealed,
//! so a typo is caught on save rather than on the first call.

use serde::Serialize;

use super::Provider;
use crate::http::error::FieldError;

/// Groq keys: `gsk_` then letters and digits.
const GROQ_PREFIX: &str = "gsk_";
const GROQ_LEN: std::ops::RangeInclusive<usize> = 20..=200;
const DEEPGRAM_LEN: usize = 40;
/// `AC` followed by 32 hexadecimal characters.
const TWILIO_SID_LEN: usize = 34;
const TWILIO_TOKEN_LEN: usize = 32;

/// One input field of a provider's key, for `GET /api/api-keys/providers`
/// and the UI's form.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldFormat {
    pub name: &'static str,
    pub required: bool,
    pub format: &'static str,
    pub example: &'static str,
}

pub fn fields_of(provider: Provider) -> Vec<FieldFormat> {
    match provider {
        Provider::Groq => vec![FieldFormat {
            name: "api_key",
            required: true,
            format: "starts with gsk_, then 16 to 196 letters and digits",
            example: "gsk_AbCdEf0123456789AbCdEf0123456789",
        }],
        Provider::Deepgram => vec![FieldFormat {
            name: "api_key",
            required: true,
            format: "40 hexadecimal characters",
            example: "0123456789abcdef0123456789abcdef01234567",
        }],
        Provider::Twilio => vec![
            FieldFormat {
                name: "account_sid",
                required: true,
                format: "AC followed by 32 hexadecimal characters (34 in all)",
                example: "AC0123456789abcdef0123456789abcdef",
            },
            FieldFormat {
                name: "auth_token",
                required: true,
                format: "32 letters and digits",
                example: "0123456789abcdef0123456789abcdef",
            },
            FieldFormat {
                name: "phone_number",
                required: false,
                format: "E.164: + then the country code and number, up to 15 digits",
                example: "+14155550123",
            },
        ],
    }
}

pub fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        message: message.into(),
    }
}

/// A required text field, trimmed of the whitespace a paste brings along.
pub fn required<'a>(field: &str, value: Option<&'a str>) -> Result<&'a str, FieldError> {
    match value.map(str::trim) {
        None | Some("") => Err(field_error(field, "is required")),
        Some(v) => Ok(v),
    }
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn check_groq_key(field: &str, key: &str) -> Result<(), FieldError> {
    let rest = key
        .strip_prefix(GROQ_PREFIX)
        .ok_or_else(|| field_error(field, "is not a Groq key: Groq keys start with gsk_"))?;
    if !GROQ_LEN.contains(&key.len()) || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(field_error(
            field,
            "is not a Groq key: gsk_ followed by 16 to 196 letters and digits",
        ));
    }
    Ok(())
}

pub fn check_deepgram_key(field: &str, key: &str) -> Result<(), FieldError> {
    if key.len() != DEEPGRAM_LEN || !is_hex(key) {
        return Err(field_error(
            field,
            "is not a Deepgram key: Deepgram keys are 40 hexadecimal characters",
        ));
    }
    Ok(())
}

pub fn check_twilio_sid(field: &str, sid: &str) -> Result<(), FieldError> {
    let ok = sid.len() == TWILIO_SID_LEN && sid.starts_with("AC") && is_hex(&sid[2..]);
    if !ok {
        return Err(field_error(
            field,
            "is not a Twilio account SID: AC followed by 32 hexadecimal characters",
        ));
    }
    Ok(())
}

pub fn check_twilio_token(field: &str, token: &str) -> Result<(), FieldError> {
    if token.len() != TWILIO_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(field_error(
            field,
            "is not a Twilio auth token: 32 letters and digits",
        ));
    }
    Ok(())
}

/// E.164: `+`, a country code not starting with 0, at most 15 digits in
/// all. Spaces, dashes and brackets are not accepted: the number is sent to
/// Twilio as stored.
pub fn check_e164(field: &str, number: &str) -> Result<(), FieldError> {
    let digits = number.strip_prefix('+').unwrap_or("");
    let ok = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if !ok {
        return Err(field_error(
            field,
            "must be an E.164 phone number: + then 8 to 15 digits, such as +14155550123",
        ));
    }
    Ok(())
}

/// A short prefix and the last four characters (`gsk_…9xQ2`): enough for
/// the owner to recognise which key is saved, far too little to use it.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 12 {
        // Too short to show any part without giving away most of it.
        return "…".to_string();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groq_keys_start_with_gsk() {
        assert!(check_groq_key("api_key", "gsk_AbCdEf0123456789AbCdEf0123456789").is_ok());
        let e = check_groq_key("api_key", "sk-AbCdEf0123456789AbCdEf0123456789").unwrap_err();
        assert_eq!(e.field, "api_key");
        assert!(e.message.contains("gsk_"));
        assert!(check_groq_key("api_key", "gsk_short").is_err());
        assert!(check_groq_key("api_key", "gsk_AbCdEf0123456789 AbCdEf01").is_err());
    }

    #[test]
    fn deepgram_keys_are_40_hex() {
        assert!(check_deepgram_key("api_key", &"a1".repeat(20)).is_ok());
        assert!(check_deepgram_key("api_key", &"a1".repeat(19)).is_err());
        assert!(check_deepgram_key("api_key", &"g1".repeat(20)).is_err());
    }

    #[test]
    fn twilio_sids_tokens_and_numbers() {
        assert!(check_twilio_sid("account_sid", "AC0123456789abcdef0123456789abcdef").is_ok());
        assert!(check_twilio_sid("account_sid", "AB0123456789abcdef0123456789abcdef").is_err());
        assert!(check_twilio_sid("account_sid", "AC0123456789abcdef0123456789abcde").is_err());
        assert!(check_twilio_sid("account_sid", "AC0123456789abcdef0123456789abcdeZ").is_err());
        assert!(check_twilio_sid("account_sid", "ACé123456789abcdef0123456789abcde").is_err());
        assert!(check_twilio_token("auth_token", &"f".repeat(32)).is_ok());
        assert!(check_twilio_token("auth_token", &"f".repeat(31)).is_err());
        assert!(check_e164("phone_number", "+14155550123").is_ok());
        assert!(check_e164("phone_number", "+441632960961").is_ok());
        for bad in [
            "14155550123",
            "+0155550123",
            "+1 415 555 0123",
            "+1234567",
            "+1234567890123456",
            "+",
        ] {
            assert!(check_e164("phone_number", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn masks_show_a_prefix_and_the_last_four() {
        assert_eq!(mask("gsk_AbCdEf0123456789xyz9xQ2"), "gsk_…9xQ2");
        assert_eq!(mask("short"), "…");
    }

    #[test]
    fn required_fields_are_trimmed() {
        assert_eq!(required("api_key", Some("  k \n")).unwrap(), "k");
        assert_eq!(
            required("api_key", Some("  ")).unwrap_err().field,
            "api_key"
        );
        assert_eq!(
            required("api_key", None).unwrap_err().message,
            "is required"
        );
    }
}
