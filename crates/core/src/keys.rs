//! Named keys (`Enter`, `C-c`, `Up`, `F5`, `M-x`) and their encodings, so that `terminal keys` means the
//! same on every target.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// One key press.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// A named key without modifiers.
    Named(NamedKey),
    /// Control plus a letter or one of `@[\]^_ ` (`C-c`).
    Ctrl(char),
    /// Alt (meta) plus a printable character (`M-x`).
    Alt(char),
    /// A function key, 1 to 12.
    F(u8),
}

/// Keys with a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamedKey {
    Enter,
    Tab,
    BackTab,
    Escape,
    Backspace,
    Space,
    Up,
    Down,
    Left,
    Right,
    Home,
    End,
    PageUp,
    PageDown,
    Insert,
    Delete,
}

const NAMES: &[(&str, NamedKey)] = &[
    ("Enter", NamedKey::Enter),
    ("Tab", NamedKey::Tab),
    ("BTab", NamedKey::BackTab),
    ("Escape", NamedKey::Escape),
    ("BSpace", NamedKey::Backspace),
    ("Space", NamedKey::Space),
    ("Up", NamedKey::Up),
    ("Down", NamedKey::Down),
    ("Left", NamedKey::Left),
    ("Right", NamedKey::Right),
    ("Home", NamedKey::Home),
    ("End", NamedKey::End),
    ("PPage", NamedKey::PageUp),
    ("NPage", NamedKey::PageDown),
    ("IC", NamedKey::Insert),
    ("DC", NamedKey::Delete),
];

const ALIASES: &[(&str, &str)] = &[
    ("Return", "Enter"),
    ("Esc", "Escape"),
    ("Backspace", "BSpace"),
    ("PageUp", "PPage"),
    ("PgUp", "PPage"),
    ("PageDown", "NPage"),
    ("PgDn", "NPage"),
    ("Insert", "IC"),
    ("Delete", "DC"),
    ("Del", "DC"),
    ("BackTab", "BTab"),
];

impl FromStr for Key {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let unknown = || {
            Error::Invalid(format!(
                "unknown key `{text}`; use names like Enter, Tab, BTab, Escape, BSpace, Space, Up, Down, Left, Right, \
                 Home, End, PPage, NPage, IC, DC, F1..F12, C-<letter> (C-c) or M-<char> (M-x); send text with `terminal send`"
            ))
        };
        let canonical = ALIASES
            .iter()
            .find(|(alias, _)| alias.eq_ignore_ascii_case(text))
            .map_or(text, |(_, name)| *name);
        if let Some((_, key)) = NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(canonical))
        {
            return Ok(Key::Named(*key));
        }
        if let Some(rest) = text.strip_prefix(['F', 'f'])
            && let Ok(n) = rest.parse::<u8>()
        {
            return if (1..=12).contains(&n) {
                Ok(Key::F(n))
            } else {
                Err(unknown())
            };
        }
        let single = |rest: &str| {
            let mut chars = rest.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Some(c),
                _ => None,
            }
        };
        if let Some(rest) = text.strip_prefix("C-").or_else(|| text.strip_prefix("^")) {
            let c = single(rest).ok_or_else(unknown)?;
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || matches!(c, '@' | '[' | '\\' | ']' | '^' | '_' | ' ') {
                return Ok(Key::Ctrl(c));
            }
            return Err(unknown());
        }
        if let Some(rest) = text.strip_prefix("M-") {
            let c = single(rest).ok_or_else(unknown)?;
            if !c.is_control() {
                return Ok(Key::Alt(c));
            }
        }
        Err(unknown())
    }
}

impl fmt::Display for Key {
    /// The tmux name of the key, which is also the canonical name Mahavishnu prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Named(named) => {
                let name = NAMES
                    .iter()
                    .find(|(_, key)| key == named)
                    .map_or("?", |(name, _)| *name);
                f.write_str(name)
            }
            Key::Ctrl(c) => write!(f, "C-{c}"),
            Key::Alt(c) => write!(f, "M-{c}"),
            Key::F(n) => write!(f, "F{n}"),
        }
    }
}

impl Key {
    /// The bytes an xterm-compatible terminal sends for this key (normal cursor mode).
    pub fn to_bytes(self) -> Vec<u8> {
        match self {
            Key::Named(named) => match named {
                NamedKey::Enter => b"\r".to_vec(),
                NamedKey::Tab => b"\t".to_vec(),
                NamedKey::BackTab => b"\x1b[Z".to_vec(),
                NamedKey::Escape => b"\x1b".to_vec(),
                NamedKey::Backspace => b"\x7f".to_vec(),
                NamedKey::Space => b" ".to_vec(),
                NamedKey::Up => b"\x1b[A".to_vec(),
                NamedKey::Down => b"\x1b[B".to_vec(),
                NamedKey::Right => b"\x1b[C".to_vec(),
                NamedKey::Left => b"\x1b[D".to_vec(),
                NamedKey::Home => b"\x1b[H".to_vec(),
                NamedKey::End => b"\x1b[F".to_vec(),
                NamedKey::PageUp => b"\x1b[5~".to_vec(),
                NamedKey::PageDown => b"\x1b[6~".to_vec(),
                NamedKey::Insert => b"\x1b[2~".to_vec(),
                NamedKey::Delete => b"\x1b[3~".to_vec(),
            },
            Key::Ctrl(c) => {
                let byte = match c {
                    ' ' | '@' => 0,
                    c => (c.to_ascii_uppercase() as u8) & 0x1f,
                };
                vec![byte]
            }
            Key::Alt(c) => {
                let mut bytes = vec![0x1b];
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                bytes
            }
            Key::F(n) => match n {
                1 => b"\x1bOP".to_vec(),
                2 => b"\x1bOQ".to_vec(),
                3 => b"\x1bOR".to_vec(),
                4 => b"\x1bOS".to_vec(),
                n => {
                    let code = [15, 17, 18, 19, 20, 21, 23, 24][usize::from(n) - 5];
                    format!("\x1b[{code}~").into_bytes()
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_aliases_and_modifiers() {
        assert_eq!("Enter".parse::<Key>().unwrap(), Key::Named(NamedKey::Enter));
        assert_eq!("esc".parse::<Key>().unwrap(), Key::Named(NamedKey::Escape));
        assert_eq!("C-c".parse::<Key>().unwrap(), Key::Ctrl('c'));
        assert_eq!("M-x".parse::<Key>().unwrap(), Key::Alt('x'));
        assert_eq!("F12".parse::<Key>().unwrap(), Key::F(12));
        assert_eq!(Key::Ctrl('c').to_bytes(), vec![3]);
        assert_eq!(Key::F(5).to_bytes(), b"\x1b[15~".to_vec());
        assert_eq!("PageUp".parse::<Key>().unwrap().to_string(), "PPage");
    }

    #[test]
    fn rejects_unknown_keys_with_the_list_of_names() {
        for bad in ["Entr", "F13", "C-", "C-ab", "", "M-"] {
            let error = bad.parse::<Key>().unwrap_err().to_string();
            assert!(error.contains("unknown key"), "{bad}: {error}");
        }
    }
}
