//! Key names (for `cellctl input key`), Android's key codes (for the VP's
//! `input keyevent`) and text to key strokes (US layout), all as Linux key
//! codes: what the VP's keys device (evdev) carries.

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

/// Android's `KEYCODE_*` (number, name without the prefix) and the Linux
/// key a phone's keyboard layout (Generic.kl) maps to it; 0: no Linux key
/// produces it.
pub const ANDROID: &[(u16, &str, u16)] = &[
    (0, "UNKNOWN", 0),
    (1, "SOFT_LEFT", 0),
    (2, "SOFT_RIGHT", 0),
    (3, "HOME", 172),
    (4, "BACK", 158),
    (5, "CALL", 231),
    (6, "ENDCALL", 0),
    (7, "0", 11),
    (8, "1", 2),
    (9, "2", 3),
    (10, "3", 4),
    (11, "4", 5),
    (12, "5", 6),
    (13, "6", 7),
    (14, "7", 8),
    (15, "8", 9),
    (16, "9", 10),
    (17, "STAR", 0x20a),
    (18, "POUND", 0x20b),
    (19, "DPAD_UP", 103),
    (20, "DPAD_DOWN", 108),
    (21, "DPAD_LEFT", 105),
    (22, "DPAD_RIGHT", 106),
    (23, "DPAD_CENTER", 353),
    (24, "VOLUME_UP", 115),
    (25, "VOLUME_DOWN", 114),
    (26, "POWER", 116),
    (27, "CAMERA", 212),
    (28, "CLEAR", 0),
    (29, "A", 30),
    (30, "B", 48),
    (31, "C", 46),
    (32, "D", 32),
    (33, "E", 18),
    (34, "F", 33),
    (35, "G", 34),
    (36, "H", 35),
    (37, "I", 23),
    (38, "J", 36),
    (39, "K", 37),
    (40, "L", 38),
    (41, "M", 50),
    (42, "N", 49),
    (43, "O", 24),
    (44, "P", 25),
    (45, "Q", 16),
    (46, "R", 19),
    (47, "S", 31),
    (48, "T", 20),
    (49, "U", 22),
    (50, "V", 47),
    (51, "W", 17),
    (52, "X", 45),
    (53, "Y", 21),
    (54, "Z", 44),
    (55, "COMMA", 51),
    (56, "PERIOD", 52),
    (57, "ALT_LEFT", 56),
    (58, "ALT_RIGHT", 100),
    (59, "SHIFT_LEFT", 42),
    (60, "SHIFT_RIGHT", 54),
    (61, "TAB", 15),
    (62, "SPACE", 57),
    (63, "SYM", 0),
    (64, "EXPLORER", 150),
    (65, "ENVELOPE", 155),
    (66, "ENTER", 28),
    (67, "DEL", 14),
    (68, "GRAVE", 41),
    (69, "MINUS", 12),
    (70, "EQUALS", 13),
    (71, "LEFT_BRACKET", 26),
    (72, "RIGHT_BRACKET", 27),
    (73, "BACKSLASH", 43),
    (74, "SEMICOLON", 39),
    (75, "APOSTROPHE", 40),
    (76, "SLASH", 53),
    (77, "AT", 0),
    (78, "NUM", 0),
    (79, "HEADSETHOOK", 226),
    (80, "FOCUS", 0x210),
    (81, "PLUS", 0),
    (82, "MENU", 139),
    (83, "NOTIFICATION", 0),
    (84, "SEARCH", 217),
    (85, "MEDIA_PLAY_PAUSE", 164),
    (86, "MEDIA_STOP", 166),
    (87, "MEDIA_NEXT", 163),
    (88, "MEDIA_PREVIOUS", 165),
    (89, "MEDIA_REWIND", 168),
    (90, "MEDIA_FAST_FORWARD", 208),
    (91, "MUTE", 248),
    (92, "PAGE_UP", 104),
    (93, "PAGE_DOWN", 109),
    (111, "ESCAPE", 1),
    (112, "FORWARD_DEL", 111),
    (113, "CTRL_LEFT", 29),
    (114, "CTRL_RIGHT", 97),
    (115, "CAPS_LOCK", 58),
    (116, "SCROLL_LOCK", 70),
    (117, "META_LEFT", 125),
    (118, "META_RIGHT", 126),
    (120, "SYSRQ", 99),
    (121, "BREAK", 119),
    (122, "MOVE_HOME", 102),
    (123, "MOVE_END", 107),
    (124, "INSERT", 110),
    (125, "FORWARD", 159),
    (126, "MEDIA_PLAY", 207),
    (127, "MEDIA_PAUSE", 201),
    (128, "MEDIA_CLOSE", 160),
    (129, "MEDIA_EJECT", 161),
    (130, "MEDIA_RECORD", 167),
    (131, "F1", 59),
    (132, "F2", 60),
    (133, "F3", 61),
    (134, "F4", 62),
    (135, "F5", 63),
    (136, "F6", 64),
    (137, "F7", 65),
    (138, "F8", 66),
    (139, "F9", 67),
    (140, "F10", 68),
    (141, "F11", 87),
    (142, "F12", 88),
    (143, "NUM_LOCK", 69),
    (144, "NUMPAD_0", 82),
    (145, "NUMPAD_1", 79),
    (146, "NUMPAD_2", 80),
    (147, "NUMPAD_3", 81),
    (148, "NUMPAD_4", 75),
    (149, "NUMPAD_5", 76),
    (150, "NUMPAD_6", 77),
    (151, "NUMPAD_7", 71),
    (152, "NUMPAD_8", 72),
    (153, "NUMPAD_9", 73),
    (154, "NUMPAD_DIVIDE", 98),
    (155, "NUMPAD_MULTIPLY", 55),
    (156, "NUMPAD_SUBTRACT", 74),
    (157, "NUMPAD_ADD", 78),
    (158, "NUMPAD_DOT", 83),
    (159, "NUMPAD_COMMA", 121),
    (160, "NUMPAD_ENTER", 96),
    (161, "NUMPAD_EQUALS", 117),
    (162, "NUMPAD_LEFT_PAREN", 179),
    (163, "NUMPAD_RIGHT_PAREN", 180),
    (164, "VOLUME_MUTE", 113),
    (168, "ZOOM_IN", 418),
    (169, "ZOOM_OUT", 419),
    (187, "APP_SWITCH", 580),
    (220, "BRIGHTNESS_DOWN", 224),
    (221, "BRIGHTNESS_UP", 225),
    (223, "SLEEP", 142),
    (224, "WAKEUP", 143),
    (231, "VOICE_ASSIST", 582),
    (277, "CUT", 137),
    (278, "COPY", 133),
    (279, "PASTE", 135),
];

/// An Android key code by number ("3") or name ("HOME", "KEYCODE_HOME"):
/// (Android code, its name, the Linux key; 0 when none produces it).
pub fn android_key(s: &str) -> Option<(u16, &'static str, u16)> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u16>() {
        return ANDROID.iter().find(|(c, _, _)| *c == n).copied();
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("KEYCODE_").unwrap_or(&up);
    ANDROID.iter().find(|(_, n, _)| *n == name).copied()
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
        assert_eq!(android_key("3"), Some((3, "HOME", 172)));
        assert_eq!(android_key("KEYCODE_BACK"), Some((4, "BACK", 158)));
        assert_eq!(android_key("app_switch").map(|k| k.2), Some(580));
        assert_eq!(android_key("224").map(|k| k.2), Some(143));
        assert_eq!(android_key("NOTIFICATION").map(|k| k.2), Some(0));
        assert_eq!(android_key("BOGUS"), None);
    }
}
