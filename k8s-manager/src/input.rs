//! JSON the manager reads but did not necessarily write (a bundle's
//! manifest, the saved settings and state, a client's request), described
//! in the user's terms when it is not what it should be. The files are read
//! bounded by [`crate::fsutil::read_bounded`].

/// What is wrong with a JSON document, without the parser's vocabulary:
/// where it stops being JSON, or which field has the wrong kind of value.
pub fn json_problem(err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let at = format!("line {}, column {}", err.line(), err.column());
    match err.classify() {
        Category::Io => "could not be read to the end".into(),
        Category::Eof => format!("is cut short (it ends at {at})"),
        Category::Syntax => format!("is not valid JSON (at {at})"),
        Category::Data => {
            // serde's message for a value of the wrong shape, with its own
            // location suffix dropped and Rust's type names said plainly.
            let message = err.to_string();
            let message = message
                .rsplit_once(" at line ")
                .map_or(message.as_str(), |(m, _)| m);
            format!("{} (at {at})", plain_types(&without_value(message)))
        }
    }
}

/// serde's message for a value of the wrong shape, without the value and
/// with Rust's type names said plainly.
pub fn value_problem(message: &str) -> String {
    plain_types(&without_value(message))
}

/// serde quotes the offending value (`invalid type: string "…"`,
/// `invalid value: integer `…``, `unknown variant `…``): a value sent or
/// saved may be a secret (a proxy URL with a password), so it is left out;
/// the location says where it is.
fn without_value(message: &str) -> String {
    let quotes_a_value = ["invalid type:", "invalid value:", "unknown variant"]
        .iter()
        .any(|p| message.starts_with(p));
    if !quotes_a_value {
        return message.to_string();
    }
    let Some(open) = message.find(['"', '`']) else {
        return message.to_string();
    };
    let close_char = message[open..].chars().next().expect("found above");
    // The value ends at its closing mark followed by ", expected".
    match message[open + 1..].find(&format!("{close_char}, expected")) {
        Some(len) => {
            let end = open + 1 + len + 1;
            format!("{}{}", message[..open].trim_end(), &message[end..])
        }
        None => message.to_string(),
    }
}

fn plain_types(message: &str) -> String {
    let mut out = message.to_string();
    for (rust, plain) in [
        ("u8", "a whole number from 0 to 255"),
        ("u16", "a whole number from 0 to 65535"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("u64", "a whole number"),
        ("usize", "a whole number"),
        ("i32", "a whole number"),
        ("i64", "a whole number"),
        ("a boolean", "true or false"),
        ("a sequence", "a list"),
        ("a map", "an object"),
    ] {
        out = out.replace(&format!("expected {rust}"), &format!("expected {plain}"));
    }
    for (rust, plain) in [
        ("invalid type: sequence", "invalid type: list"),
        ("invalid type: map", "invalid type: object"),
    ] {
        out = out.replace(rust, plain);
    }
    if let Some(pos) = out.find("expected struct ") {
        // A struct read from a list: serde counts its elements.
        if out.starts_with("invalid length") {
            return "invalid type: list, expected an object".into();
        }
        out.replace_range(pos.., "expected an object");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Settings {
        port: u16,
        names: Vec<String>,
    }

    #[test]
    fn a_value_sent_is_never_repeated() {
        let problem =
            |text: &str| json_problem(&serde_json::from_str::<Settings>(text).unwrap_err());
        for text in [
            r#"{"port": "http://user:s3cret@proxy", "names": []}"#,
            r#"{"port": "s3cret\", expected", "names": []}"#,
            r#"{"port": 1, "names": "s3cret"}"#,
            r#"{"port": 99999999, "names": []}"#,
        ] {
            let said = problem(text);
            assert!(
                !said.contains("s3cret") && !said.contains("99999999"),
                "{said}"
            );
            assert!(said.contains("expected"), "{said}");
        }
    }

    #[test]
    fn json_problems_are_said_plainly() {
        let problem =
            |text: &str| json_problem(&serde_json::from_str::<Settings>(text).unwrap_err());
        assert_eq!(
            problem("{\"port\": 1,"),
            "is cut short (it ends at line 1, column 11)"
        );
        assert_eq!(
            problem("port = 1"),
            "is not valid JSON (at line 1, column 1)"
        );
        assert_eq!(
            problem("{\"port\": \"x\", \"names\": []}"),
            "invalid type: string, expected a whole number from 0 to 65535 (at line 1, column 12)"
        );
        assert_eq!(
            problem("{\"port\": 1}"),
            "missing field `names` (at line 1, column 11)"
        );
        assert_eq!(
            problem("[1]"),
            "invalid type: list, expected an object (at line 1, column 3)"
        );
    }
}
