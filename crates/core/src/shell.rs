//! Quoting for POSIX shells, for the few places where a value must pass through `sh -c`.

/// Quotes `value` so that a POSIX shell reads it back as exactly one word, whatever it contains.
pub fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'_' | b'.' | b'/' | b',' | b':' | b'=' | b'+' | b'@'
                )
        });
    if plain {
        return value.to_string();
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

/// Quotes each word and joins them with spaces.
pub fn join(words: &[String]) -> String {
    words
        .iter()
        .map(|word| quote(word))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn the_shell_reads_back_exactly_what_was_quoted() {
        let nasty = [
            "",
            "plain",
            "a b",
            "it's",
            "$(touch pwned)",
            "`id`",
            "a\nb",
            "\"q\"",
            "; rm -rf x",
            "ünï",
            "\\",
            "*",
        ];
        for value in nasty {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(value)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), value);
        }
    }
}
