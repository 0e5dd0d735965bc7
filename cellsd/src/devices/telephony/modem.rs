//! A VP's virtual modem: the 3GPP TS 27.007 AT commands Android's reference
//! RIL and oFono drive, on a tty of the VP's own. Pure: bytes in, bytes out
//! and requests to the switchboard; events from the switchboard become
//! unsolicited result codes.

/// What the VP asked of the switchboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Dial(String),
    Answer,
    Hangup,
    Sms { to: String, text: String },
}

/// What the switchboard tells the VP's modem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An incoming call (repeated every few seconds while it rings).
    Ring {
        from: String,
    },
    /// The call ended (the other side hung up, or it failed).
    Ended {
        busy: bool,
    },
    Sms {
        from: String,
        text: String,
    },
}

/// A call as AT+CLCC lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallView {
    pub incoming: bool,
    /// 0 active, 2 dialing, 3 alerting, 4 incoming.
    pub state: u8,
    pub number: String,
}

/// The line as the modem reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Line {
    pub registered: bool,
    pub number: String,
    pub operator: String,
    /// 0..=31 (AT+CSQ's rssi), 99 unknown.
    pub signal: u8,
}

#[derive(Debug, Default)]
pub struct Modem {
    pub echo: bool,
    pub clip: bool,
    creg: u8,
    text_mode: bool,
    /// AT+CMGS="number" waiting for its text (ended by Ctrl-Z).
    sms_to: Option<String>,
    sms_text: Vec<u8>,
    line_buf: Vec<u8>,
    /// A line past [`MAX_LINE`]: dropped up to its end.
    overflow: bool,
    sms_ref: u16,
}

/// The longest command line kept (a longer one is answered ERROR).
const MAX_LINE: usize = 512;
const MAX_SMS: usize = 1024;

fn valid_number(n: &str) -> bool {
    let digits = n.strip_prefix('+').unwrap_or(n);
    !digits.is_empty()
        && digits.len() <= 20
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || c == '*' || c == '#')
}

fn toa(n: &str) -> u8 {
    if n.starts_with('+') {
        145
    } else {
        129
    }
}

impl Modem {
    pub fn new() -> Self {
        Modem {
            echo: true,
            ..Default::default()
        }
    }

    /// Bytes the VP wrote: what to write back and what to ask.
    pub fn input(
        &mut self,
        bytes: &[u8],
        line: &Line,
        calls: &[CallView],
    ) -> (Vec<u8>, Vec<Request>) {
        let (mut out, mut reqs) = (Vec::new(), Vec::new());
        for &b in bytes {
            if self.sms_to.is_some() {
                match b {
                    0x1a => {
                        let to = self.sms_to.take().unwrap_or_default();
                        let text = String::from_utf8_lossy(&self.sms_text).into_owned();
                        self.sms_text.clear();
                        if self.echo {
                            out.push(b);
                        }
                        if line.registered {
                            self.sms_ref = self.sms_ref.wrapping_add(1);
                            out.extend_from_slice(
                                format!("\r\n+CMGS: {}\r\n\r\nOK\r\n", self.sms_ref).as_bytes(),
                            );
                            reqs.push(Request::Sms { to, text });
                        } else {
                            out.extend_from_slice(b"\r\n+CMS ERROR: 331\r\n");
                        }
                    }
                    0x1b => {
                        self.sms_to = None;
                        self.sms_text.clear();
                        out.extend_from_slice(b"\r\nOK\r\n");
                    }
                    b'\r' => {
                        self.sms_text.push(b'\n');
                        if self.echo {
                            out.extend_from_slice(b"\r\n> ");
                        }
                    }
                    _ if self.sms_text.len() < MAX_SMS => {
                        self.sms_text.push(b);
                        if self.echo {
                            out.push(b);
                        }
                    }
                    _ => {}
                }
                continue;
            }
            match b {
                b'\r' if self.overflow => {
                    self.overflow = false;
                    self.line_buf.clear();
                }
                b'\r' => {
                    let l = std::mem::take(&mut self.line_buf);
                    if self.echo {
                        out.extend_from_slice(&l);
                        out.push(b'\r');
                    }
                    let text = String::from_utf8_lossy(&l).trim().to_string();
                    if text.is_empty() {
                        continue;
                    }
                    let (o, r) = self.command(&text, line, calls);
                    out.extend_from_slice(&o);
                    reqs.extend(r);
                }
                b'\n' => {}
                _ if self.overflow => {}
                _ if self.line_buf.len() < MAX_LINE => self.line_buf.push(b),
                _ => {
                    self.line_buf.clear();
                    self.overflow = true;
                    out.extend_from_slice(b"\r\nERROR\r\n");
                }
            }
        }
        (out, reqs)
    }

    /// One command line (`AT...`); several commands may be chained with `;`
    /// only for the basic ones Android sends (`ATE0Q0V1`).
    fn command(&mut self, text: &str, line: &Line, calls: &[CallView]) -> (Vec<u8>, Vec<Request>) {
        let ok = |body: &str| {
            if body.is_empty() {
                b"\r\nOK\r\n".to_vec()
            } else {
                format!("\r\n{body}\r\n\r\nOK\r\n").into_bytes()
            }
        };
        let err = b"\r\nERROR\r\n".to_vec();
        let cme = |n: u16| format!("\r\n+CME ERROR: {n}\r\n").into_bytes();
        let upper = text.to_ascii_uppercase();
        let Some(cmd) = upper.strip_prefix("AT") else {
            return (err, vec![]);
        };
        // Dial keeps its number's case and characters as given.
        if let Some(rest) = cmd.strip_prefix('D') {
            let number = rest.trim().trim_end_matches(';').trim().to_string();
            if !valid_number(&number) {
                return (cme(21), vec![]); // invalid index (bad number)
            }
            if !line.registered {
                return (b"\r\nNO CARRIER\r\n".to_vec(), vec![]);
            }
            if !calls.is_empty() {
                return (cme(3), vec![]); // operation not allowed
            }
            return (ok(""), vec![Request::Dial(number)]);
        }
        match cmd {
            "" => (ok(""), vec![]),
            "E0" | "E0Q0V1" | "E0V1" => {
                self.echo = false;
                (ok(""), vec![])
            }
            "E1" | "E1Q0V1" | "E1V1" => {
                self.echo = true;
                (ok(""), vec![])
            }
            "I" => (ok("cells virtual modem"), vec![]),
            "+CGMI" => (ok("cells"), vec![]),
            "+CGMM" => (ok("cells-vmodem"), vec![]),
            "+CGMR" => (ok(env!("CARGO_PKG_VERSION")), vec![]),
            "+CGSN" => (ok("358240051111110"), vec![]),
            "+CPIN?" => (ok("+CPIN: READY"), vec![]),
            "+CFUN?" => (ok("+CFUN: 1"), vec![]),
            "+CFUN=1" => (ok(""), vec![]),
            "+CREG?" => (
                ok(&format!(
                    "+CREG: {},{}",
                    self.creg,
                    if line.registered { 1 } else { 0 }
                )),
                vec![],
            ),
            "+CREG=0" | "+CREG=1" | "+CREG=2" => {
                self.creg = cmd.as_bytes()[6] - b'0';
                (ok(""), vec![])
            }
            "+CSQ" => (ok(&format!("+CSQ: {},99", line.signal)), vec![]),
            "+COPS?" => {
                if line.registered {
                    (ok(&format!("+COPS: 0,0,\"{}\"", line.operator)), vec![])
                } else {
                    (ok("+COPS: 0"), vec![])
                }
            }
            "+CNUM" => (
                if line.number.is_empty() {
                    ok("")
                } else {
                    ok(&format!(
                        "+CNUM: \"\",\"{}\",{}",
                        line.number,
                        toa(&line.number)
                    ))
                },
                vec![],
            ),
            "+CLIP=0" | "+CLIP=1" => {
                self.clip = cmd.ends_with('1');
                (ok(""), vec![])
            }
            "+CLIP?" => (ok(&format!("+CLIP: {},1", self.clip as u8)), vec![]),
            "A" => {
                if calls.iter().any(|c| c.incoming && c.state == 4) {
                    (ok(""), vec![Request::Answer])
                } else {
                    (b"\r\nNO CARRIER\r\n".to_vec(), vec![])
                }
            }
            "H" | "H0" | "+CHUP" => {
                let r = if calls.is_empty() {
                    vec![]
                } else {
                    vec![Request::Hangup]
                };
                (ok(""), r)
            }
            "+CLCC" => {
                let body: Vec<String> = calls
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        format!(
                            "+CLCC: {},{},{},0,0,\"{}\",{}",
                            i + 1,
                            c.incoming as u8,
                            c.state,
                            c.number,
                            toa(&c.number)
                        )
                    })
                    .collect();
                (ok(&body.join("\r\n")), vec![])
            }
            "+CMGF=1" => {
                self.text_mode = true;
                (ok(""), vec![])
            }
            "+CMGF=0" => (b"\r\n+CMS ERROR: 303\r\n".to_vec(), vec![]), // PDU mode: not supported
            "+CMGF?" => (ok(&format!("+CMGF: {}", self.text_mode as u8)), vec![]),
            c if c.starts_with("+CMGS=") => {
                if !self.text_mode {
                    return (b"\r\n+CMS ERROR: 302\r\n".to_vec(), vec![]);
                }
                // The number as the VP wrote it (case kept).
                let raw = &text[2 + "+CMGS=".len()..];
                let number = raw.trim().trim_matches('"').to_string();
                if !valid_number(&number) {
                    return (b"\r\n+CMS ERROR: 304\r\n".to_vec(), vec![]);
                }
                self.sms_to = Some(number);
                (b"\r\n> ".to_vec(), vec![])
            }
            "+CNMI=2,2,0,0,0" | "+CNMI=1,2,0,0,0" | "+CSMS=0" => (ok(""), vec![]),
            _ if cmd.starts_with('+') && (cmd.contains('=') || cmd.ends_with('?')) => {
                (cme(4), vec![]) // operation not supported
            }
            _ => (err, vec![]),
        }
    }

    /// An event from the switchboard, as the modem reports it.
    pub fn event(&mut self, e: &Event) -> Vec<u8> {
        match e {
            Event::Ring { from } => {
                let mut s = "\r\nRING\r\n".to_string();
                if self.clip {
                    s.push_str(&format!("\r\n+CLIP: \"{from}\",{}\r\n", toa(from)));
                }
                s.into_bytes()
            }
            Event::Ended { busy } => {
                if *busy {
                    b"\r\nBUSY\r\n".to_vec()
                } else {
                    b"\r\nNO CARRIER\r\n".to_vec()
                }
            }
            Event::Sms { from, text } => {
                format!("\r\n+CMT: \"{from}\",,\"\"\r\n{text}\r\n").into_bytes()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> Line {
        Line {
            registered: true,
            number: "+15550100".into(),
            operator: "cells".into(),
            signal: 20,
        }
    }

    fn run(m: &mut Modem, s: &str, calls: &[CallView]) -> (String, Vec<Request>) {
        let (o, r) = m.input(s.as_bytes(), &line(), calls);
        (String::from_utf8(o).unwrap(), r)
    }

    #[test]
    fn the_basic_commands_answer_as_a_modem() {
        let mut m = Modem::new();
        assert_eq!(run(&mut m, "ATE0\r", &[]).0, "ATE0\r\r\nOK\r\n");
        assert_eq!(run(&mut m, "AT\r", &[]).0, "\r\nOK\r\n");
        assert_eq!(
            run(&mut m, "AT+CPIN?\r", &[]).0,
            "\r\n+CPIN: READY\r\n\r\nOK\r\n"
        );
        assert_eq!(
            run(&mut m, "AT+CREG?\r", &[]).0,
            "\r\n+CREG: 0,1\r\n\r\nOK\r\n"
        );
        assert_eq!(
            run(&mut m, "AT+CNUM\r", &[]).0,
            "\r\n+CNUM: \"\",\"+15550100\",145\r\n\r\nOK\r\n"
        );
        assert_eq!(
            run(&mut m, "at+csq\r", &[]).0,
            "\r\n+CSQ: 20,99\r\n\r\nOK\r\n"
        );
        assert_eq!(
            run(&mut m, "AT+COPS?\r", &[]).0,
            "\r\n+COPS: 0,0,\"cells\"\r\n\r\nOK\r\n"
        );
    }

    #[test]
    fn bad_input_gets_an_error_and_changes_nothing() {
        let mut m = Modem::new();
        run(&mut m, "ATE0\r", &[]);
        assert_eq!(run(&mut m, "HELLO\r", &[]).0, "\r\nERROR\r\n");
        assert_eq!(run(&mut m, "ATXYZ\r", &[]).0, "\r\nERROR\r\n");
        assert_eq!(run(&mut m, "AT+FOO=1\r", &[]).0, "\r\n+CME ERROR: 4\r\n");
        let (o, r) = run(&mut m, "ATDabc;\r", &[]);
        assert_eq!(o, "\r\n+CME ERROR: 21\r\n");
        assert!(r.is_empty());
        // PDU mode is refused; AT+CMGS before text mode too.
        assert_eq!(
            run(&mut m, "AT+CMGS=\"123\"\r", &[]).0,
            "\r\n+CMS ERROR: 302\r\n"
        );
        assert_eq!(run(&mut m, "AT+CMGF=0\r", &[]).0, "\r\n+CMS ERROR: 303\r\n");
        // A line past the limit is dropped with ERROR.
        let long = "A".repeat(600);
        assert!(run(&mut m, &long, &[]).0.contains("ERROR"));
        assert_eq!(run(&mut m, "\rAT\r", &[]).0, "\r\nOK\r\n");
    }

    #[test]
    fn calls_and_messages() {
        let mut m = Modem::new();
        run(&mut m, "ATE0\r", &[]);
        let (o, r) = run(&mut m, "ATD+15550111;\r", &[]);
        assert_eq!(o, "\r\nOK\r\n");
        assert_eq!(r, vec![Request::Dial("+15550111".into())]);
        let busy = [CallView {
            incoming: false,
            state: 3,
            number: "+15550111".into(),
        }];
        assert_eq!(
            run(&mut m, "AT+CLCC\r", &busy).0,
            "\r\n+CLCC: 1,0,3,0,0,\"+15550111\",145\r\n\r\nOK\r\n"
        );
        assert_eq!(run(&mut m, "ATD123;\r", &busy).0, "\r\n+CME ERROR: 3\r\n");
        assert_eq!(run(&mut m, "AT+CHUP\r", &busy).1, vec![Request::Hangup]);
        // Incoming: RING with the caller with +CLIP on.
        run(&mut m, "AT+CLIP=1\r", &[]);
        assert_eq!(
            String::from_utf8(m.event(&Event::Ring {
                from: "5551234".into()
            }))
            .unwrap(),
            "\r\nRING\r\n\r\n+CLIP: \"5551234\",129\r\n"
        );
        let ringing = [CallView {
            incoming: true,
            state: 4,
            number: "5551234".into(),
        }];
        assert_eq!(run(&mut m, "ATA\r", &ringing).1, vec![Request::Answer]);
        assert_eq!(run(&mut m, "ATA\r", &[]).0, "\r\nNO CARRIER\r\n");
        // SMS in text mode.
        run(&mut m, "AT+CMGF=1\r", &[]);
        let (o, _) = run(&mut m, "AT+CMGS=\"+15550111\"\r", &[]);
        assert_eq!(o, "\r\n> ");
        let (o, r) = run(&mut m, "hello there\x1a", &[]);
        assert_eq!(o, "\r\n+CMGS: 1\r\n\r\nOK\r\n");
        assert_eq!(
            r,
            vec![Request::Sms {
                to: "+15550111".into(),
                text: "hello there".into()
            }]
        );
        assert_eq!(
            String::from_utf8(m.event(&Event::Sms {
                from: "+15550111".into(),
                text: "hi".into()
            }))
            .unwrap(),
            "\r\n+CMT: \"+15550111\",,\"\"\r\nhi\r\n"
        );
    }
}
