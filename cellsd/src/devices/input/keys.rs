//! Key names (for `cellctl input key`) and text to key strokes (US layout).

/// Linux key codes by the names cellctl accepts (Android's names where they
/// differ: HOME, BACK, MENU, APP_SWITCH).
const NAMED: &[(&str, u16)] = &[
    ("HOME", 172),       // KEY_HOMEPAGE
    ("BACK", 158),       // KEY_BACK
    ("MENU", 139),       // KEY_MENU
    ("APP_SWITCH", 580), // KEY_APPSELECT
    ("POWER", 116),
    ("VOLUME_UP", 115),
    ("VOLUME_DOWN", 114),
    ("MUTE", 113),
    ("ENTER", 28),
    ("ESC", 1),
    ("BACKSPACE", 14),
    ("DEL", 14),
    ("TAB", 15),
    ("SPACE", 57),
    ("UP", 103),
    ("DOWN", 108),
    ("LEFT", 105),
    ("RIGHT", 106),
    ("SHIFT", 42),
    ("CTRL", 29),
    ("ALT", 56),
    ("SEARCH", 217),
    ("CAMERA", 212),
];

const LETTERS: &[u16] = &[
    30, 48, 46, 32, 18, 33, 34, 35, 23, 36, 37, 38, 50, 49, 24, 25, 16, 19, 31, 20, 22, 47, 17, 45,
    21, 44,
];
const DIGITS: &[u16] = &[11, 2, 3, 4, 5, 6, 7, 8, 9, 10];
pub const KEY_LEFTSHIFT: u16 = 42;

/// The code of a key name (case-insensitive; "KEY_" prefix optional;
/// single letters and digits too).
pub fn key_code(name: &str) -> Option<u16> {
    let up = name.trim().to_ascii_uppercase();
    let up = up.strip_prefix("KEY_").unwrap_or(&up);
    if let Some((_, c)) = NAMED.iter().find(|(n, _)| *n == up) {
        return Some(*c);
    }
    let mut chars = up.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_uppercase() => Some(LETTERS[(c as u8 - b'A') as usize]),
        (Some(c), None) if c.is_ascii_digit() => Some(DIGITS[(c as u8 - b'0') as usize]),
        _ => None,
    }
}

pub fn key_names() -> Vec<&'static str> {
    NAMED.iter().map(|(n, _)| *n).collect()
}

/// (code, shift) for one character of text on a US keyboard.
pub fn char_key(c: char) -> Option<(u16, bool)> {
    if c.is_ascii_lowercase() {
        return Some((LETTERS[(c as u8 - b'a') as usize], false));
    }
    if c.is_ascii_uppercase() {
        return Some((LETTERS[(c as u8 - b'A') as usize], true));
    }
    if c.is_ascii_digit() {
        return Some((DIGITS[(c as u8 - b'0') as usize], false));
    }
    let plain: &[(char, u16)] = &[
        (' ', 57),
        ('\n', 28),
        ('\t', 15),
        ('-', 12),
        ('=', 13),
        ('[', 26),
        (']', 27),
        (';', 39),
        ('\'', 40),
        ('`', 41),
        ('\\', 43),
        (',', 51),
        ('.', 52),
        ('/', 53),
    ];
    let shifted: &[(char, u16)] = &[
        ('!', 2),
        ('@', 3),
        ('#', 4),
        ('$', 5),
        ('%', 6),
        ('^', 7),
        ('&', 8),
        ('*', 9),
        ('(', 10),
        (')', 11),
        ('_', 12),
        ('+', 13),
        ('{', 26),
        ('}', 27),
        (':', 39),
        ('"', 40),
        ('~', 41),
        ('|', 43),
        ('<', 51),
        ('>', 52),
        ('?', 53),
    ];
    if let Some((_, k)) = plain.iter().find(|(ch, _)| *ch == c) {
        return Some((*k, false));
    }
    shifted
        .iter()
        .find(|(ch, _)| *ch == c)
        .map(|(_, k)| (*k, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_characters() {
        assert_eq!(key_code("HOME"), Some(172));
        assert_eq!(key_code("key_back"), Some(158));
        assert_eq!(key_code("a"), Some(30));
        assert_eq!(key_code("7"), Some(8));
        assert_eq!(key_code("NOPE"), None);
        assert_eq!(char_key('h'), Some((35, false)));
        assert_eq!(char_key('H'), Some((35, true)));
        assert_eq!(char_key('!'), Some((2, true)));
        assert_eq!(char_key(' '), Some((57, false)));
        assert_eq!(char_key('é'), None);
    }
}
