//! Instance names: what a `--name` may be, and the names instances get without one.

use crate::error::{Error, Result};

/// Checks a `--name`: 1 to 64 letters, digits, `-` and `_`, starting with a letter or digit.
pub fn check_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "--name `{}` is not usable: use 1 to 64 letters, digits, `-` and `_`, starting with a letter or digit",
            name.escape_default()
        )))
    }
}

/// The names of `count` instances: `name` itself for one, `name-1` to `name-N` for more; without a
/// name, generated ones (`mv-` and six hex digits), all different and none that `taken` says is in
/// use.
pub fn instance_names(
    name: Option<&str>,
    count: usize,
    mut taken: impl FnMut(&str) -> Result<bool>,
) -> Result<Vec<String>> {
    match name {
        Some(name) => {
            check_name(name)?;
            Ok(if count == 1 {
                vec![name.to_string()]
            } else {
                (1..=count).map(|n| format!("{name}-{n}")).collect()
            })
        }
        None => {
            let mut names = Vec::with_capacity(count);
            while names.len() < count {
                let name = format!("mv-{:06x}", fastrand::u32(..0x100_0000));
                if !names.contains(&name) && !taken(&name)? {
                    names.push(name);
                }
            }
            Ok(names)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("worker_1-a").is_ok());
        for bad in [
            "",
            "-x",
            "a b",
            "a;b",
            "a:b",
            "a.b",
            "$(x)",
            &"x".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_name_numbers_many_and_generated_names_avoid_taken_ones() {
        assert_eq!(instance_names(Some("w"), 1, |_| Ok(false)).unwrap(), ["w"]);
        assert_eq!(
            instance_names(Some("w"), 3, |_| Ok(false)).unwrap(),
            ["w-1", "w-2", "w-3"]
        );
        assert!(instance_names(Some("a b"), 1, |_| Ok(false)).is_err());
        let mut offered = Vec::new();
        let names = instance_names(None, 5, |name| {
            offered.push(name.to_string());
            // Every other name offered is in use already.
            Ok(offered.len() % 2 == 1)
        })
        .unwrap();
        assert_eq!(names.len(), 5);
        for name in &names {
            assert!(
                name.len() == 9 && name.starts_with("mv-"),
                "{name} is mv- and six hex digits"
            );
            let at = offered.iter().position(|o| o == name).unwrap();
            assert_eq!(at % 2, 1, "{name} was not taken");
        }
    }
}
